"""One measured pipeline run (source_features .. predictions) through the Python API.

Prints JSON: wall seconds, rows, run id, and per-step start-up overhead from the event log.
"""

import json
import statistics
import sys
import time

import dagster as dg

from bench.data import DAY
from bench.defs import bench_job

STAGES = ["model", "source_features", "shard_manifest", "scored_shards", "predictions"]


def step_overheads(instance: dg.DagsterInstance, run_id: str) -> list[float]:
    """Seconds from 'launching the step's process' to 'the step started', per step."""
    launched: dict[str, float] = {}
    started: dict[str, float] = {}
    for record in instance.get_records_for_run(run_id, limit=100_000).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type_value == "STEP_WORKER_STARTING":
            launched[entry.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_START":
            started[entry.step_key] = entry.timestamp
    return [started[k] - launched[k] for k in launched if k in started]


def main() -> None:
    if __name__ != "__main__":
        return
    with dg.DagsterInstance.get() as instance:
        selection = [dg.AssetKey(["bench", s]) for s in STAGES]
        started = time.perf_counter()
        result = dg.execute_job(
            dg.reconstructable(bench_job), instance,
            tags={"dagster/partition": DAY}, asset_selection=selection,
        )  # fmt: skip
        wall = time.perf_counter() - started
        if not result.success:
            sys.exit("pipeline run failed")
        overheads = step_overheads(instance, result.run_id)
        print(
            json.dumps(
                {
                    "seconds": wall,
                    "run_id": result.run_id,
                    "steps": len(overheads),
                    "startup_median": statistics.median(overheads) if overheads else None,
                    "startup_max": max(overheads) if overheads else None,
                }
            )
        )


main()
