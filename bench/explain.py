"""Scoring rows/s with and without reason codes (`explain:`), on the same bench data.

python -m bench.explain [--rows 200000] [--top-k 3] [--variants off all top_k sample]

Each variant streams the same Parquet export of the bench partition through
`stages.scoring.score_shard` as one shard, with LightGBM on one thread as each shard step runs
it: the figures are the scoring phase alone (no export, no publish, no step start-up).
"""

import argparse
import os
import platform
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_inference_assets import load_spec
from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.models import kinds
from batch_inference_assets.models.store import ModelStore
from batch_inference_assets.records import Shard, ShardPart
from batch_inference_assets.spec import ExplainSpec
from batch_inference_assets.stages import scoring
from bench import data
from bench.run import RESULTS, export_for_baseline

SPEC = Path(__file__).parent / "pipelines" / "bench" / "defs.yaml"


def one_shard(folder: Path) -> Shard:
    """Every row group of the export as one shard."""
    parts, rows, size = [], 0, 0
    for path in sorted(folder.glob("*.parquet")):
        meta = pq.read_metadata(path)
        parts.append(ShardPart(path=str(path), row_groups=list(range(meta.num_row_groups))))
        rows += meta.num_rows
        size += path.stat().st_size
    return Shard(index=0, parts=parts, rows=rows, bytes=size)


def variants(top_k: int) -> dict[str, ExplainSpec | None]:
    return {
        "off": None,
        "all": ExplainSpec(top_k=top_k, rows="all"),
        "top_k": ExplainSpec(top_k=top_k, rows="top_k", row_count=1_000),
        "sample": ExplainSpec(top_k=top_k, rows="sample", sample_rate=0.01),
    }


def measure(root: Path, shard: Shard, name: str, explain: ExplainSpec | None) -> dict[str, Any]:
    spec = load_spec(SPEC)
    spec = spec.model_copy(update={"explain": explain})
    store = ModelStore(store=LocalObjectStore(root=str(root / "models")))
    model = store.load(spec.model.name, spec.model.ref)
    predictor = kinds.load_predictor(model.kind, store.read_model_text(model), threads=1)
    scorer = kinds.Scorer(model, predictor, spec.output_contract, spec.model_output_columns)
    run = scoring.ScoringRun(
        pipeline=spec.name,
        partition=date.fromisoformat(data.DAY),
        run_id=f"explain-{name}",
        scored_at=datetime.now(UTC),
        id_columns=spec.features.id_columns,
        output=spec.output_contract,
        batch_rows=spec.sharding.batch_rows,
        batch_bytes=spec.sharding.batch_bytes,
        explain=explain,
    )
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as out:
        started = time.perf_counter()
        result = scoring.score_shard(shard, model, scorer, run, LocalObjectStore(root=out))
        seconds = time.perf_counter() - started
        scored = pq.read_table(result.path)
    explained = (
        int(pc.sum(pc.is_valid(scored.column("reason_rest_contribution"))).as_py())
        if explain
        else 0
    )
    return {"variant": name, "rows": result.rows, "seconds": seconds, "explained": explained}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", type=Path, default=Path(".bench"))
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=["off", "all", "top_k", "sample"])
    a = p.parse_args()
    root = a.root.resolve() / f"rows-{a.rows}"
    data.ensure(root, a.rows)
    shard = one_shard(export_for_baseline(root))
    chosen = variants(a.top_k)
    results = []
    for name in a.variants:
        results.append(measure(root, shard, name, chosen[name]))
        r = results[-1]
        print(f"{name}: {r['seconds']:.1f}s, {r['explained']:,} rows explained", flush=True)
    off = next((r["seconds"] for r in results if r["variant"] == "off"), float("nan"))
    lines = [
        f"rows: {a.rows:,}; one shard, LightGBM 1 thread, 200 trees x 63 leaves, 30 features, "
        f"top_k {a.top_k}; machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
        "",
        "| explain | rows explained | scoring s | rows/s | vs off |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        label = "off" if r["variant"] == "off" else f"rows: {r['variant']}"
        lines.append(
            f"| {label} | {r['explained']:,} | {r['seconds']:.1f} | "
            f"{r['rows'] / r['seconds']:,.0f} | {r['seconds'] / off:.1f}x |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%M%S")
    (RESULTS / f"{stamp}-explain-rows{a.rows}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
