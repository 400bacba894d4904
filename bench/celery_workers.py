"""Scale-out benchmark: one partition's shard steps on 1..N warm Celery workers.

    python -m bench.celery_workers --rows 4000000 --shard-rows 250000 --workers 1 2

Each worker is `python -m dagster_defs.celery_worker --concurrency 1` (one process, one
LightGBM thread), on a `filesystem://` broker on this machine. From the run's event log it
reports the rows/s of one worker while it scores (the figure to size a fleet with), the scoring
phase's aggregate rows/s, and the run's wall time.
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg

from bench import data
from bench.run import RESULTS


def shard_steps(home: Path, run_id: str) -> list[tuple[float, float, int]]:
    """(start, end, rows) of every successful shard step of the run."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_records_for_run(run_id, limit=100_000).records
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    rows: dict[str, int] = {}
    for r in records:
        entry, event = r.event_log_entry, r.event_log_entry.dagster_event
        key = entry.step_key or ""
        if event is None or "score_shard[" not in key:
            continue
        if event.event_type_value == "STEP_START":
            start[key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS":
            end[key] = entry.timestamp
        elif event.event_type_value == "STEP_OUTPUT":
            meta = event.step_output_data.metadata
            if "rows" in meta:
                rows[key] = int(meta["rows"].value)  # type: ignore[arg-type]
    return [(start[k], end[k], rows[k]) for k in end if k in start and k in rows]


def start_workers(n: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        log = (logs / f"worker{i}.log").open("w")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "dagster_defs.celery_worker", "--concurrency", "1",
                 "--name", f"bench{i}@%h", "--loglevel", "WARNING"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        )  # fmt: skip
    time.sleep(5)  # a worker is ready in ~2 s; an unclaimed task would just wait for it
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait(timeout=60)


def one_run(root: Path, workers: int, shard_rows: int) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    home = scratch / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ, "BENCH_ROOT": str(root), "DAGSTER_HOME": str(home),
        "BATCH_INFERENCE_EXECUTOR": "celery", "BATCH_INFERENCE_CELERY_DIR": str(scratch / "broker"),
        "BENCH_SHARD_ROWS": str(shard_rows),
    }  # fmt: skip
    procs = start_workers(workers, env, scratch)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.pipeline_run"], env=env, capture_output=True, text=True
        )
    finally:
        stop(procs)
    if done.returncode != 0:
        sys.exit(f"run with {workers} worker(s) failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    steps = shard_steps(home, result["run_id"])
    rows = sum(r for _, _, r in steps)
    busy = sum(e - s for s, e, _ in steps)
    phase = max(e for _, e, _ in steps) - min(s for s, _, _ in steps)
    return {
        "workers": workers, "shards": len(steps), "rows": rows, "wall_s": result["seconds"],
        "rows_per_s_per_worker": rows / busy, "scoring_phase_s": phase,
        "scoring_rows_per_s": rows / phase,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", type=Path, default=Path(".bench"))
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--shard-rows", type=int, default=250_000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    a = p.parse_args()
    root = a.root.resolve() / f"rows-{a.rows}"
    data.ensure(root, a.rows)
    results = []
    for n in a.workers:
        results.append(one_run(root, n, a.shard_rows))
        print(json.dumps(results[-1]), flush=True)
    lines = [
        f"rows: {a.rows:,}; shards of {a.shard_rows:,} rows; Celery workers of one process "
        f"each on one machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "",
        "| workers | shards | run wall s | scoring phase s | scoring rows/s (all workers) "
        "| rows/s per worker while scoring |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['workers']} | {r['shards']} | {r['wall_s']:.1f} | {r['scoring_phase_s']:.1f} "
            f"| {r['scoring_rows_per_s']:,.0f} | {r['rows_per_s_per_worker']:,.0f} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%M%S")
    (RESULTS / f"{stamp}-celery-rows{a.rows}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
