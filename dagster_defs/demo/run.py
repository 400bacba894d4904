"""`make demo`: seed the embedded warehouse, materialize one partition with the Dagster CLI, report.

python -m dagster_defs.demo.run [--partition 2026-10-15]
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from dagster_defs.demo.seed import seed
from dagster_defs.deployments import DEMO_OUTPUT_SCHEMA, local_resources

DEMO_PARTITION = "2026-10-15"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(".data"))
    parser.add_argument("--partition", default=DEMO_PARTITION)
    args = parser.parse_args()
    root = args.root.resolve()
    seeded = seed(root)
    print(
        f"seeded {seeded.rows:,} demo rows and model churn@{seeded.model_version} "
        f"in {seeded.seconds:.1f}s"
    )

    env = {**os.environ, "BATCH_INFERENCE_ROOT": str(root)}
    cmd = [
        sys.executable, "-m", "dagster", "asset", "materialize",
        "-m", "dagster_defs.definitions",
        "--select", "key:churn/*",
        "--partition", args.partition,
    ]  # fmt: skip
    print("$ " + " ".join(cmd[2:]).replace(sys.executable, "python"))
    log = root / "demo-run.log"
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(log.read_text()[-4000:])
        sys.exit(f"demo run failed (exit {done.returncode}); full log: {log}")

    warehouse = local_resources(root)["warehouse"]
    table = f"{DEMO_OUTPUT_SCHEMA}.churn_predictions"
    rows, positives, version, run_id = (
        warehouse.query(
            "SELECT COUNT(*), SUM(label), ANY_VALUE(model_version), ANY_VALUE(run_id) "
            f"FROM {table} WHERE partition_date = ?",
            [args.partition],
        )
        .to_pylist()[0]
        .values()
    )
    shards = len(
        list((root / "object_store" / "churn" / "scored" / args.partition).glob("*.parquet"))
    )
    print(
        f"\nscored {rows:,} rows of partition {args.partition} in {shards} shards "
        f"with churn@{version} in {wall:.1f}s wall (dagster asset materialize, multiprocess)\n"
        f"  table      {warehouse.database} -> {table} ({positives:,} predicted churners)\n"
        f"  run        {run_id}  (log: {log})\n"
        f"  shards     {root / 'object_store' / 'churn' / 'scored' / args.partition}\n"
        f"  drift      {root / 'object_store' / 'churn' / 'drift' / (args.partition + '.json')}\n"
        "  look       make ui, then open http://127.0.0.1:3000 (asset group 'churn')"
    )


if __name__ == "__main__":
    main()
