"""Backfill benchmark: N daily partitions of M rows, launched as users do.

`dagster job backfill` queues one run per day; `dagster-daemon run` executes them under the
run-queue limits of .dagster_home/dagster.yaml. Wall time: from the CLI call to the last run done.

    python -m bench.backfill [--days 30] [--rows 100000]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from bench import data

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", type=Path, default=Path(".bench"))
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--rows", type=int, default=100_000)
    a = p.parse_args()
    root = a.root.resolve() / f"backfill-{a.days}x{a.rows}"
    data.ensure(root, a.rows, a.days)
    last = date.fromisoformat(data.DAY)
    first = last - timedelta(days=a.days - 1)
    home = Path(tempfile.mkdtemp(prefix="bench-backfill-home-"))
    shutil.copy(REPO / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "BENCH_ROOT": str(root), "DAGSTER_HOME": str(home)}
    daemon_log = (home / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-m", "bench.defs"],
        env=env, cwd=REPO, stdout=daemon_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        time.sleep(5)  # let the daemon come up before the clock starts
        started = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, "-m", "dagster", "job", "backfill", "-m", "bench.defs",
             "-j", "bench_daily", "--from", first.isoformat(), "--to", last.isoformat(),
             "--noprompt"],
            env=env, cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        backfill = cli.stdout.split("Launched backfill job `")[1].split("`")[0]
        os.environ["DAGSTER_HOME"] = str(home)
        with dg.DagsterInstance.get() as instance:
            while True:
                if daemon.poll() is not None:
                    sys.exit(f"dagster-daemon exited: {(home / 'daemon.log').read_text()[-3000:]}")
                runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill}))
                done = [r for r in runs if r.is_finished]
                if len(runs) == a.days and len(done) == a.days:
                    break
                time.sleep(1)
            wall = time.perf_counter() - started
            failed = [r.tags.get("dagster/partition") for r in runs if not r.is_success]
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        daemon_log.close()
    rows = a.days * a.rows
    print(
        f"backfill of {a.days} partitions x {a.rows:,} rows: {wall:.0f}s wall "
        f"({rows / wall:,.0f} rows/s, {wall / a.days:.1f}s per partition), "
        f"failed: {failed or 'none'}"
    )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
