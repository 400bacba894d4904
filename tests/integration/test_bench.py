"""`make bench`'s command on a small partition: every variant runs as its own process and the
table, the targets and one run's timeline are printed and recorded (no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import duckdb

from bench.data import DAY

REPO = Path(__file__).parents[2]


def test_bench_runs_the_plain_script_and_the_pipeline_and_marks_the_targets(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--rows", "20000", "--runs", "1",
         "--root", str(tmp_path / "bench"), "--results", str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for variant in ("plain script (LightGBM, 2 threads)", "pipeline (LightGBM)"):
        assert f"| {variant} |" in out
    assert "within 1.10x the plain script" in out
    assert "median step start-up at most 0.30 s" in out
    for line in out.splitlines():
        if line.startswith("| pipeline (LightGBM) within"):
            assert line.rstrip().endswith(("| met |", "| NOT MET |"))
    # The peers are in the table only where `make bench-peers` installed them.
    for engine, peer in (("ray", "Ray Data"), ("pyspark", "Spark")):
        installed = subprocess.run([sys.executable, "-c", f"import {engine}"]).returncode == 0
        assert (f"| {peer}" in out) == installed
        if not installed:
            assert f"{engine} is not installed (`make bench-peers` installs it)" in out
    # The timeline covers the run's steps, from the model to the published table.
    timeline = out[out.index("Timeline of the last pipeline (LightGBM) run") :]
    for step in ("model", "source_features", "shard_manifest", "score_shard", "predictions"):
        assert f"| {step}" in timeline
    recorded = sorted(results.glob("*-rows20000.*"))
    assert [p.suffix for p in recorded] == [".json", ".md"]
    runs = json.loads(recorded[0].read_text())
    assert runs["plain script (LightGBM, 2 threads)"][0]["rows"] == 20_000
    assert runs["pipeline (LightGBM)"][0]["steps"] == 7  # one shard at 20k rows
    # The pipeline's run published the whole partition.
    con = duckdb.connect(
        str(tmp_path / "bench" / "rows-20000" / "warehouse.duckdb"), read_only=True
    )
    try:
        published = con.execute(
            "SELECT COUNT(*) FROM bench.bench_predictions WHERE partition_date = ?", [DAY]
        ).fetchone()
    finally:
        con.close()
    assert published == (20_000,)
    assert recorded[1].read_text().strip() in out
