"""One measured pipeline run (model .. predictions) through the Python API, as a user runs it.

Prints JSON: the run's wall seconds, its id, each step's start-up, and the timeline of the steps
(launched, started, ended) in seconds from this process's start.
"""

import json
import statistics
import sys
import time
from typing import Any

import dagster as dg
import psutil

from bench.data import DAY
from bench.defs import bench_job

STAGES = ["model", "source_features", "shard_manifest", "scored_shards", "predictions"]


def steps(instance: dg.DagsterInstance, run_id: str, origin: float) -> list[dict[str, Any]]:
    """Per step: launched (STEP_WORKER_STARTING), started (STEP_START), ended (STEP_SUCCESS),
    in seconds from `origin`."""
    marks = {"STEP_WORKER_STARTING": "launched", "STEP_START": "started", "STEP_SUCCESS": "ended"}
    found: dict[str, dict[str, float]] = {}
    for record in instance.get_records_for_run(run_id, limit=100_000).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or entry.step_key is None or event.event_type_value not in marks:
            continue
        found.setdefault(entry.step_key, {})[marks[event.event_type_value]] = (
            entry.timestamp - origin
        )
    done: list[dict[str, Any]] = [
        {"step": k.split(".")[-1].removeprefix("bench__"), **v}
        for k, v in found.items()
        if len(v) == len(marks)
    ]
    return sorted(done, key=lambda s: s["launched"])


def main() -> None:
    if __name__ != "__main__":
        return
    origin = psutil.Process().create_time()
    with dg.DagsterInstance.get() as instance:
        selection = [dg.AssetKey(["bench", s]) for s in STAGES]
        run_started = time.time() - origin
        started = time.perf_counter()
        result = dg.execute_job(
            dg.reconstructable(bench_job), instance,
            tags={"dagster/partition": DAY}, asset_selection=selection,
        )  # fmt: skip
        wall = time.perf_counter() - started
        run_ended = time.time() - origin
        if not result.success:
            sys.exit("pipeline run failed")
        timeline = steps(instance, result.run_id, origin)
        startups = [s["started"] - s["launched"] for s in timeline]
        print(
            json.dumps(
                {
                    "seconds": wall,
                    "run_id": result.run_id,
                    "run_started": run_started,
                    "run_ended": run_ended,
                    "steps": len(timeline),
                    "startup_median": statistics.median(startups) if startups else None,
                    "startup_max": max(startups) if startups else None,
                    "timeline": timeline,
                }
            )
        )


main()
