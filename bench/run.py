"""`make bench`: the plain script, the pipeline and its peers, interleaved, whole process each.

python -m bench.run [--rows 5000000] [--runs 3] [--compiled] [--peers auto|off]

Every figure is taken from outside the measured process: wall time from its launch to its exit
(interpreter start, imports and the definitions load included, as a user's run pays them), CPU
seconds of the whole process tree, and peak memory sampled every 200 ms.
"""

import argparse
import contextlib
import importlib.util
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psutil

from bench import data

RESULTS = Path(__file__).parent / "results"
PLAIN = "plain script (LightGBM, 2 threads)"
STOCK = "pipeline (LightGBM)"
COMPILED = "pipeline (compiled)"
RAY = "Ray Data (2 actors)"
SPARK = "Spark local[2] mapInPandas"
SKIPPED = 3  # a peer's exit code when its engine is not installed


@dataclass(frozen=True)
class Variant:
    name: str
    cmd: list[str]
    env: dict[str, str]
    engine: str | None = None  # the module a peer needs


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def measured(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `cmd` to its exit, sampling its process tree every 200 ms: wall clock from launch,
    CPU seconds (the sum of each process's own user and system time at its last sample), peak
    PSS of the tree and peak RSS of its largest process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"tree": 0, "largest": 0}
    cpu: dict[tuple[int, float], float] = {}
    stop = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            pss, rss = 0, 0
            for p in _tree(root):
                with contextlib.suppress(psutil.Error):
                    info = p.memory_full_info()
                    times = p.cpu_times()
                    pss += info.pss
                    rss = max(rss, info.rss)
                    cpu[(p.pid, p.create_time())] = times.user + times.system
            peak["tree"] = max(peak["tree"], pss)
            peak["largest"] = max(peak["largest"], rss)
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    if proc.returncode == SKIPPED:
        return {"skipped": err.strip().splitlines()[-1] if err.strip() else "not installed"}
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out[-3000:]}\n{err[-5000:]}")
    report = json.loads(out.strip().splitlines()[-1])
    return {
        **report,
        "process_wall": wall,
        "cpu_seconds": sum(cpu.values()),
        "peak_tree_mb": peak["tree"] / 2**20,
        "peak_largest_mb": peak["largest"] / 2**20,
    }


def export_for_baseline(root: Path) -> Path:
    """The partition as Parquet files, once and untimed: the plain script's and peers' input."""
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


def variants(root: Path, env: dict[str, str], compiled: bool, peers: bool) -> list[Variant]:
    model = next((root / "models" / "bench" / "versions").iterdir()) / "model.txt"
    inputs = ["--input", str(export_for_baseline(root)), "--model", str(model)]
    out = root / "outputs"
    found = [
        Variant(
            PLAIN,
            [
                sys.executable,
                "-m",
                "bench.baseline",
                *inputs,
                "--output",
                str(out / "plain.parquet"),
            ],
            env,
        ),
        Variant(STOCK, [sys.executable, "-m", "bench.pipeline_run"], env),
    ]
    if compiled:
        compiled_env = {**env, "BENCH_COMPILED": "1"}
        found.append(Variant(COMPILED, [sys.executable, "-m", "bench.pipeline_run"], compiled_env))
    if peers:
        for name, module, engine in [
            (RAY, "bench.peers.ray_data", "ray"),
            (SPARK, "bench.peers.spark_local", "pyspark"),
        ]:
            cmd = [sys.executable, "-m", module, *inputs, "--output", str(out / module)]
            found.append(Variant(name, cmd, env, engine))
    out.mkdir(parents=True, exist_ok=True)
    return found


def installed(v: Variant) -> bool:
    if v.engine is None or importlib.util.find_spec(v.engine) is not None:
        return True
    print(f"{v.name}: skipped, {v.engine} is not installed (`make bench-peers` installs it)")
    return False


def median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def targets(rows: int, med: dict[str, dict[str, float]]) -> list[tuple[str, str, bool]]:
    """The performance targets, each as (target, measured, met)."""
    found = []
    plain = med[PLAIN]["process_wall"]
    if STOCK in med:
        limit = 1.05 if rows >= 20_000_000 else 1.10
        ratio = med[STOCK]["process_wall"] / plain
        found.append(
            (
                f"pipeline (LightGBM) within {limit:.2f}x the plain script",
                f"{ratio:.2f}x",
                ratio <= limit,
            )
        )
        startup = med[STOCK]["startup_median"]
        found.append(("median step start-up at most 0.30 s", f"{startup:.2f} s", startup <= 0.3))
    if COMPILED in med:
        speedup = plain / med[COMPILED]["process_wall"]
        found.append(
            (
                "pipeline (compiled) 2.5x faster than the plain script",
                f"{speedup:.2f}x",
                speedup >= 2.5,
            )
        )
    for name in (STOCK, COMPILED):
        if name in med:
            largest, tree = med[name]["peak_largest_mb"], med[name]["peak_tree_mb"]
            found.append(
                (f"{name}: largest process at most 1 GB", f"{largest:,.0f} MB", largest <= 1024)
            )
            found.append((f"{name}: process tree at most 2.5 GB", f"{tree:,.0f} MB", tree <= 2560))
    for peer in (RAY, SPARK):
        if peer in med and STOCK in med:
            mine, theirs = med[STOCK]["process_wall"], med[peer]["process_wall"]
            found.append(
                (
                    f"pipeline (LightGBM) faster than {peer}",
                    f"{mine:.1f} s vs {theirs:.1f} s",
                    mine < theirs,
                )
            )
    return found


def timeline(run: dict[str, Any]) -> list[str]:
    """One pipeline run's steps: when each was launched, started and ended, from process start."""
    lines = [
        "| step | launched s | started s | ended s | start-up s | work s |",
        "|---|---|---|---|---|---|",
    ]
    lines.append(f"| (process start to run start) | 0.0 | | {run['run_started']:.1f} | | |")
    for s in run["timeline"]:
        lines.append(
            f"| {s['step']} | {s['launched']:.1f} | {s['started']:.1f} | {s['ended']:.1f} | "
            f"{s['started'] - s['launched']:.2f} | {s['ended'] - s['started']:.2f} |"
        )
    # The process's start is known to 10 ms, its launch is timed from outside: keep the order.
    exited = max(run["process_wall"], run["run_ended"])
    lines.append(f"| (run end to process exit) | {run['run_ended']:.1f} | | {exited:.1f} | | |")
    return lines


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", type=Path, default=Path(".bench"))
    p.add_argument("--results", type=Path, default=RESULTS, help="where the table is recorded")
    p.add_argument("--rows", type=int, default=5_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--compiled", action="store_true", help="also run with the compiled predictor")
    p.add_argument(
        "--peers",
        choices=["auto", "off"],
        default="auto",
        help="auto: also Ray Data and Spark where installed",
    )
    a = p.parse_args()
    root = a.root.resolve() / f"rows-{a.rows}"
    data.ensure(root, a.rows)
    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    shutil.copy(Path(__file__).parents[1] / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "BENCH_ROOT": str(root),
        "DAGSTER_HOME": str(home),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    runs = [v for v in variants(root, env, a.compiled, a.peers == "auto") if installed(v)]
    if a.compiled:  # untimed warm-up: lleaves compiles once per model version
        subprocess.run(
            [sys.executable, "-m", "bench.pipeline_run"],
            env={**env, "BENCH_COMPILED": "1"},
            check=True,
            capture_output=True,
        )
    results: dict[str, list[dict[str, Any]]] = {}
    for i in range(a.runs):
        for v in runs:
            r = measured(v.cmd, v.env)
            if "skipped" in r:
                print(f"{v.name}: skipped, {r['skipped']}")
                runs = [w for w in runs if w is not v]
                continue
            results.setdefault(v.name, []).append(r)
            print(
                f"run {i + 1}/{a.runs} {v.name}: {r['process_wall']:.1f} s, "
                f"tree {r['peak_tree_mb']:,.0f} MB",
                flush=True,
            )
    keys = ["process_wall", "cpu_seconds", "peak_tree_mb", "peak_largest_mb"]
    med: dict[str, dict[str, float]] = {}
    for name, rs in results.items():
        med[name] = {k: median(rs, k) for k in keys}
        med[name]["best"] = min(r["process_wall"] for r in rs)
        med[name]["peak_tree_mb"] = max(r["peak_tree_mb"] for r in rs)
        med[name]["peak_largest_mb"] = max(r["peak_largest_mb"] for r in rs)
        if name in (STOCK, COMPILED):
            med[name]["startup_median"] = median(rs, "startup_median")
    plain = med[PLAIN]["process_wall"]
    lines = [
        f"rows: {a.rows:,}; runs: {a.runs} interleaved (median); machine: {machine()}",
        "",
        "| variant (whole process) | median wall s | best s | vs plain | rows/s | tree CPU s "
        "| peak tree PSS MB | largest process RSS MB | step start-up median s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in med.items():
        startup = f"{m['startup_median']:.2f}" if "startup_median" in m else "-"
        lines.append(
            f"| {name} | {m['process_wall']:.1f} | {m['best']:.1f} | "
            f"{m['process_wall'] / plain:.2f} | {a.rows / m['process_wall']:,.0f} | "
            f"{m['cpu_seconds']:.0f} | {m['peak_tree_mb']:,.0f} | {m['peak_largest_mb']:,.0f} | "
            f"{startup} |"
        )
    lines += ["", "| target | measured | |", "|---|---|---|"]
    lines += [
        f"| {t} | {value} | {'met' if ok else 'NOT MET'} |" for t, value, ok in targets(a.rows, med)
    ]
    if STOCK in results:
        lines += ["", f"Timeline of the last {STOCK} run:", "", *timeline(results[STOCK][-1])]
    table = "\n".join(lines)
    print("\n" + table)
    a.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%M%S")
    (a.results / f"{stamp}-rows{a.rows}.md").write_text(table + "\n")
    (a.results / f"{stamp}-rows{a.rows}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
