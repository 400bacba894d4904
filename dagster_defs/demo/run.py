"""`make demo`: seed the embedded warehouse, then run both demo pipelines with `dg launch`.

  churn   (binary)      its champion comes from the seed; one partition is scored
  demand  (regression)  its model is trained by its own training job first, then scored

python -m dagster_defs.demo.run [--partition 2026-10-15]
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg

from batch_inference_assets.assets.training import training_run_config
from dagster_defs.demo.seed import OUTCOMES_UNTIL, record_seeded_champion, seed
from dagster_defs.deployments import DEMO_OUTPUT_SCHEMA, local_resources

DEMO_PARTITION = "2026-10-15"
PROJECT = Path(__file__).parents[2]  # where pyproject.toml's [tool.dg] makes `dg` work


def materialize(
    root: Path, select: str, partition: str | None = None, config: dict | None = None
) -> float:
    """`dg launch` as a user would type it in the project; exits with its log on failure."""
    cmd = [str(Path(sys.executable).parent / "dg"), "launch", "--assets", select]
    if partition:
        cmd += ["--partition", partition]
    if config:
        cmd += ["--config-json", json.dumps(config)]
    print("$ " + shlex.join(["dg", *cmd[1:]]))  # pasteable as printed
    log = root / f"demo-{select.replace(':', '-').replace('/', '-')}.log"
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(
            cmd, env={**os.environ, "BATCH_INFERENCE_ROOT": str(root)}, cwd=PROJECT,
            stdout=out, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        print(log.read_text()[-4000:])
        sys.exit(f"demo run failed (exit {done.returncode}); full log: {log}")
    return time.perf_counter() - started


def beyond_scoring(root: Path, day: str) -> str:
    """Where the demo's challenger, reason codes, segment drift and realized performance are."""
    warehouse = local_resources(root)["warehouse"]
    shadow, flips, version = (
        warehouse.query(
            "SELECT COUNT(*), AVG(CASE WHEN s.label <> c.label THEN 1.0 ELSE 0.0 END), "
            f"ANY_VALUE(s.model_version) FROM {DEMO_OUTPUT_SCHEMA}.churn_predictions_shadow s "
            f"JOIN {DEMO_OUTPUT_SCHEMA}.churn_predictions c USING (customer_id, partition_date) "
            "WHERE partition_date = ?",
            [day],
        )
        .to_pylist()[0]
        .values()
    )
    explained = (
        warehouse.query(
            f"SELECT COUNT(reason_1) AS n FROM {DEMO_OUTPUT_SCHEMA}.churn_predictions "
            "WHERE partition_date = ?",
            [day],
        )
        .column("n")[0]
        .as_py()
    )
    auc = "see its metadata"
    with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME, as make demo sets it
        found = instance.fetch_materializations(
            dg.AssetKey(["churn", "realized_performance"]), limit=1
        ).records
        measured = found[0].asset_materialization if found else None
        if measured is not None and "auc" in measured.metadata:
            auc = f"AUC {measured.metadata['auc'].value:.3f}"
    churn = root / "object_store" / "churn"
    return (
        f"  churn, beyond scoring ({day}):\n"
        f"    challenger  churn@challenger={version} scored the same {shadow:,} rows: "
        f"{DEMO_OUTPUT_SCHEMA}.churn_predictions_shadow, {flips:.1%} of labels flip; "
        "churn/challenger_comparison\n"
        f"    reasons     reason_1..3 on {explained:,} rows (each shard's 100 highest scores)\n"
        f"    segments    drift per region, report {churn / 'drift' / day / 'report.html'}\n"
        f"    labels      churn/realized_performance: {auc} (outcomes land until {OUTCOMES_UNTIL}; "
        "churn_labels_sensor requests later days once theirs do)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(".data"))
    parser.add_argument("--partition", default=DEMO_PARTITION)
    args = parser.parse_args()
    root, day = args.root.resolve(), args.partition
    seeded = seed(root)
    record_seeded_champion(seeded.model_version)
    print(
        f"seeded {seeded.rows:,} demo rows and model churn@{seeded.model_version} "
        f"in {seeded.seconds:.1f}s"
    )
    warehouse = local_resources(root)["warehouse"]

    churn_wall = materialize(root, "group:churn", day)
    rows, positives, version = (
        warehouse.query(
            "SELECT COUNT(*), SUM(label), ANY_VALUE(model_version) "
            f"FROM {DEMO_OUTPUT_SCHEMA}.churn_predictions WHERE partition_date = ?",
            [day],
        )
        .to_pylist()[0]
        .values()
    )
    churn = root / "object_store" / "churn"
    shards = len(list((churn / "scored" / day).glob("*/shard_*.parquet")))  # <run_id>/
    print(
        f"  churn: scored {rows:,} rows of {day} in {shards} shards with churn@{version} "
        f"in {churn_wall:.1f}s ({positives:,} predicted churners)\n"
        f"    table  {warehouse.database} -> {DEMO_OUTPUT_SCHEMA}.churn_predictions\n"
        f"    top K  {churn / 'top_k' / day}\n"
        f"    drift  {churn / 'drift' / (day + '.json')}"
    )
    materialize(root, "key:churn/realized_performance", day)  # the day's outcomes have landed
    print(beyond_scoring(root, day))

    train_wall = materialize(
        root, "group:demand_training",
        config=training_run_config("demand", date.fromisoformat(day)),
    )  # fmt: skip
    demand_wall = materialize(root, "group:demand", day)
    rows, mean_units, version = (
        warehouse.query(
            "SELECT COUNT(*), AVG(score), ANY_VALUE(model_version) "
            f"FROM {DEMO_OUTPUT_SCHEMA}.demand_predictions WHERE partition_date = ?",
            [day],
        )
        .to_pylist()[0]
        .values()
    )
    print(
        f"  demand: trained and promoted demand@{version} in {train_wall:.1f}s, then scored "
        f"{rows:,} store-items of {day} in {demand_wall:.1f}s (mean {mean_units:.1f} units)\n"
        f"    table  {warehouse.database} -> {DEMO_OUTPUT_SCHEMA}.demand_predictions\n"
        f"    files  {root / 'object_store' / 'demand' / 'exports' / day}\n"
        "  look: make ui, then open http://127.0.0.1:3000 (asset groups churn, demand)"
    )


if __name__ == "__main__":
    main()
