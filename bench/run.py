"""`make bench`: baseline script vs the pipeline, interleaved, with wall time and memory.

python -m bench.run [--rows 5000000] [--runs 3] [--compiled]
"""

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import psutil

from bench import data

RESULTS = Path(__file__).parent / "results"


def measured(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `cmd`; sample RSS of its whole process tree every 50 ms."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"tree": 0, "largest": 0}
    stop = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = []
                for p in procs:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        rss.append(p.memory_info().rss)
                peak["tree"] = max(peak["tree"], sum(rss))
                peak["largest"] = max(peak["largest"], max(rss, default=0))
            except psutil.NoSuchProcess:
                return
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out[-3000:]}\n{err[-5000:]}")
    report = json.loads(out.strip().splitlines()[-1])
    return {**report, "process_wall": wall, "peak_tree_mb": peak["tree"] / 2**20,
            "peak_largest_mb": peak["largest"] / 2**20}  # fmt: skip


def export_for_baseline(root: Path) -> Path:
    target = root / "baseline_input"
    if not target.exists():
        con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
        cols = ", ".join(["id", *data.FEATURES])
        con.execute(
            f"COPY (SELECT {cols} FROM bench.features WHERE snapshot_date = DATE '{data.DAY}') "
            f"TO '{target}' (FORMAT parquet, PER_THREAD_OUTPUT)"
        )
        con.close()
    return target


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", type=Path, default=Path(".bench"))
    p.add_argument("--rows", type=int, default=5_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--compiled", action="store_true", help="also run with the compiled predictor")
    p.add_argument("--no-baseline", action="store_true")
    a = p.parse_args()
    root = a.root.resolve() / f"rows-{a.rows}"
    data.ensure(root, a.rows)
    model_dir = next((root / "models" / "bench" / "versions").iterdir())
    baseline_input = export_for_baseline(root)
    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    shutil.copy(Path(__file__).parents[1] / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "BENCH_ROOT": str(root), "DAGSTER_HOME": str(home)}
    variants: dict[str, list[dict[str, Any]]] = {}
    runs = []
    if not a.no_baseline:
        runs.append(("baseline script (LightGBM)", [sys.executable, "-m", "bench.baseline",
                     "--input", str(baseline_input), "--model", str(model_dir / "model.txt"),
                     "--output", str(root / "baseline_scores.parquet")], env))  # fmt: skip
    runs.append(("pipeline (LightGBM)", [sys.executable, "-m", "bench.pipeline_run"], env))
    if a.compiled:
        compiled_env = {**env, "BENCH_COMPILED": "1"}
        runs.append(
            ("pipeline (compiled)", [sys.executable, "-m", "bench.pipeline_run"], compiled_env)
        )
        subprocess.run([sys.executable, "-m", "bench.pipeline_run"], env=compiled_env, check=True,
                       capture_output=True)  # fmt: skip  # warm-up: compiles once per model version
    for i in range(a.runs):
        for name, cmd, e in runs:
            result = measured(cmd, e)
            variants.setdefault(name, []).append(result)
            print(f"run {i + 1}/{a.runs} {name}: {result['seconds']:.1f}s, "
                  f"tree {result['peak_tree_mb']:.0f} MB", flush=True)  # fmt: skip
    baseline = variants.get("baseline script (LightGBM)")
    base = statistics.median(r["seconds"] for r in baseline) if baseline else float("nan")
    lines = [
        f"rows: {a.rows:,}; runs: {a.runs} (median); machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}",
        "",
        "| variant | median wall s | rows/s | vs baseline | peak RSS largest process MB "
        "| peak RSS tree MB | step start-up median s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, results in variants.items():
        wall = statistics.median(r["seconds"] for r in results)
        startups = [r["startup_median"] for r in results if r.get("startup_median") is not None]
        startup = f"{statistics.median(startups):.2f}" if startups else "-"
        largest = max(r["peak_largest_mb"] for r in results)
        tree = max(r["peak_tree_mb"] for r in results)
        lines.append(
            f"| {name} | {wall:.1f} | {a.rows / wall:,.0f} | {wall / base:.2f} | "
            f"{largest:.0f} | {tree:.0f} | {startup} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%M%S")
    (RESULTS / f"{stamp}-rows{a.rows}.md").write_text(table + "\n")
    (RESULTS / f"{stamp}-rows{a.rows}.json").write_text(json.dumps(variants, indent=1))


if __name__ == "__main__":
    main()
