"""Spark as a peer of bench/baseline.py: local[2], read.parquet -> mapInPandas -> write.parquet.

Two task slots, each scoring Arrow batches of 65,536 rows with its own LightGBM booster (loaded
once per partition) and one predict thread. `seconds` runs from the session's start (the JVM's
launch included) to its stop.
"""

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator

try:
    from pyspark.sql import SparkSession
except ImportError:
    print("pyspark is not installed: make bench-peers installs it", file=sys.stderr)
    sys.exit(3)

import pandas as pd
import pyarrow.parquet as pq

from bench.peers import arguments, feature_names

BATCH_ROWS = 65_536
SLOTS = 2


def scorer(model: str) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The mapInPandas function: one booster per partition's iterator, one thread."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import lightgbm as lgb  # in the Python worker

        booster = lgb.Booster(model_file=model)
        names = booster.feature_name()
        for pdf in batches:
            x = pdf[names].to_numpy(dtype="float64")
            scores = booster.predict(x, num_threads=1)
            yield pd.DataFrame({"id": pdf["id"], "score": scores})

    return score


def main() -> None:
    a = arguments()
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        print("java is not installed: Spark needs a Java 17+ runtime", file=sys.stderr)
        sys.exit(3)
    files = sorted(str(f.resolve()) for f in a.input.glob("*.parquet"))
    if not files:
        sys.exit(f"no *.parquet in {a.input}")
    shutil.rmtree(a.output, ignore_errors=True)
    # The Python workers run this interpreter (the venv's), not whatever `python3` is on PATH.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    started = time.perf_counter()
    spark = (
        SparkSession.builder.master(f"local[{SLOTS}]")
        .appName("bench-peer")
        .config("spark.driver.memory", "2g")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH_ROWS))
        .getOrCreate()
    )
    try:
        spark.sparkContext.setLogLevel("ERROR")
        (
            spark.read.parquet(*files)
            .select("id", *feature_names(a.model))
            .mapInPandas(scorer(str(a.model.resolve())), schema="id long, score double")
            .write.mode("overwrite")
            .parquet(str(a.output.resolve()))
        )
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in a.output.glob("*.parquet"))
    finally:
        spark.stop()
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
