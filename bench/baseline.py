"""The plain script users write by hand: Parquet batches -> LightGBM predict -> ParquetWriter.

Reads the partition's rows from a Parquet export, scores them with 2 threads, writes (id, score).
"""

import argparse
import json
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    started = time.perf_counter()
    booster = lgb.Booster(model_file=str(a.model))
    names = booster.feature_name()
    rows = 0
    schema = pa.schema([("id", pa.int64()), ("score", pa.float64())])
    with pq.ParquetWriter(a.output, schema) as writer:
        for path in sorted(a.input.glob("*.parquet")):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
                x = np.column_stack(
                    [
                        batch.column(n).to_numpy(zero_copy_only=False).astype(np.float64)
                        for n in names
                    ]
                )
                scores = booster.predict(x, num_threads=a.threads)
                writer.write_batch(
                    pa.record_batch([batch.column("id"), pa.array(scores)], schema=schema)
                )
                rows += batch.num_rows
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
