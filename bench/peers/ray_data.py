"""Ray Data as a peer of bench/baseline.py: read_parquet -> map_batches (2 actors) -> write_parquet.

Each actor loads the LightGBM booster once and predicts with one thread, so the two actors use
the machine's two cores as the plain script's two predict threads do. `seconds` runs from
`ray.init` to `ray.shutdown` (the output's footers are read for `rows` before the shutdown).

The two actors hold both of `ray.init(num_cpus=2)`'s CPUs for the whole run, so the read tasks
ask for no CPU: with Ray's default of one CPU a task they are never scheduled and the dataset
hangs with no error. The write tasks ask for none either, so they run beside the actors. For the
same reason the read uses Ray Data's V1 Parquet datasource: the default V2 one (Ray 2.60) plans a
ListFiles task that asks for one CPU, which `read_parquet` can't lower, and hangs the same way.
"""

import json
import logging
import os
import shutil
import sys
import time

# Before ray is imported: no usage-stats report (there is no network to send it over).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

try:
    import ray
    import ray.data
except ImportError:
    print("ray is not installed: make bench-peers installs it", file=sys.stderr)
    sys.exit(3)

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.peers import arguments, feature_names

BATCH_ROWS = 65_536
ACTORS = 2
# The object store only holds the blocks in flight (the executor streams); Ray's default is 30%
# of the machine's memory.
OBJECT_STORE_BYTES = 2 * 2**30


class Scorer:
    """One per actor: the booster is loaded once, then each Arrow batch becomes (id, score)."""

    def __init__(self, model: str) -> None:
        self.booster = lgb.Booster(model_file=model)
        self.names = self.booster.feature_name()

    def __call__(self, batch: pa.Table) -> pa.Table:
        x = np.column_stack(
            [batch.column(n).to_numpy().astype(np.float64, copy=False) for n in self.names]
        )
        scores = self.booster.predict(x, num_threads=1)
        return pa.table({"id": batch.column("id"), "score": pa.array(scores, pa.float64())})


def main() -> None:
    a = arguments()
    # Absolute paths: the read and write tasks run in Ray's worker processes.
    files = sorted(str(f.resolve()) for f in a.input.glob("*.parquet"))
    if not files:
        sys.exit(f"no *.parquet in {a.input}")
    shutil.rmtree(a.output, ignore_errors=True)
    started = time.perf_counter()
    ray.init(
        num_cpus=ACTORS,
        object_store_memory=OBJECT_STORE_BYTES,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.use_datasource_v2 = False  # see the module's docstring
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # It warns that the progress bars are off, which is what was asked for.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        (
            ray.data.read_parquet(files, columns=["id", *feature_names(a.model)], num_cpus=0)
            .map_batches(
                Scorer,
                fn_constructor_kwargs={"model": str(a.model.resolve())},
                compute=ray.data.ActorPoolStrategy(size=ACTORS),
                num_cpus=1,
                batch_size=BATCH_ROWS,
                batch_format="pyarrow",
            )
            .write_parquet(str(a.output.resolve()), ray_remote_args={"num_cpus": 0})
        )
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in a.output.glob("*.parquet"))
    finally:
        ray.shutdown()
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
