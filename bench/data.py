"""Benchmark data: N rows of 30 numeric features for one day, and a 200-tree/63-leaf model.

Deterministic: the same N gives the same rows and the same model version.
"""

import argparse
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa

from batch_inference_assets.io.duckdb_warehouse import DuckDBWarehouse
from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.models.lightgbm_model import TrainedModel
from batch_inference_assets.models.matrix import feature_matrix
from batch_inference_assets.models.store import ModelStore
from batch_inference_assets.records import FeatureInfo
from batch_inference_assets.stages import stats

DAY = "2026-10-15"
N_FEATURES = 30
FEATURES = [f"f{i:02d}" for i in range(N_FEATURES)]
CHUNK = 1_000_000


def _chunk(start: int, n: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    x[rng.random((n, N_FEATURES)) < 0.03] = np.nan
    signal = (
        np.nan_to_num(x[:, 0])
        + np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2])
        - 0.5 * np.abs(np.nan_to_num(x[:, 3]))
    )
    y = (signal + rng.normal(size=n) > 0).astype(np.int64)
    cols = {"id": pa.array(np.arange(start, start + n, dtype=np.int64))}
    for j, name in enumerate(FEATURES):
        cols[name] = pa.array(x[:, j], mask=np.isnan(x[:, j]))
    return pa.table(cols), y


def train(root: Path) -> str:
    """A LightGBM binary model like the issue's reference: 200 trees, 63 leaves."""
    table, y = _chunk(0, 200_000, seed=1)
    features = [FeatureInfo(name=f, type="float64") for f in FEATURES]
    x = feature_matrix(table, features)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 63, "verbose": -1, "num_threads": 2,
         "deterministic": True, "force_row_wise": True, "seed": 7},
        lgb.Dataset(x, y, feature_name=FEATURES), num_boost_round=200,
    )  # fmt: skip
    scores = np.asarray(booster.predict(x), dtype=np.float64)
    reference = {
        f.name: stats.histogram(x[:, j], stats.edges_for(f, x[:, j]))
        for j, f in enumerate(features)
    }
    reference[stats.SCORE_KEY] = stats.histogram(scores, stats.quantile_edges(scores))
    trained = TrainedModel(booster.model_to_string(), features, reference, {})
    return ModelStore(store=LocalObjectStore(root=str(root / "models"))).save("bench", trained)


def generate(root: Path, rows: int, days: int = 1) -> dict[str, float]:
    """`rows` rows for DAY, or for each of `days` days ending on DAY."""
    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    warehouse = DuckDBWarehouse(database=str(root / "warehouse.duckdb"))
    with warehouse.connect() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS bench")
        con.execute("DROP TABLE IF EXISTS bench.features")
        cols = ", ".join(f"{f} DOUBLE" for f in FEATURES)
        con.execute(f"CREATE TABLE bench.features (snapshot_date DATE, id BIGINT, {cols})")
        for back in range(days):
            for start in range(0, rows, CHUNK):
                n = min(CHUNK, rows - start)
                table, _ = _chunk(start, n, seed=100 + back * 1000 + start // CHUNK)
                con.register("chunk", table)
                day = f"DATE '{DAY}' - INTERVAL {back} DAY"
                con.execute(f"INSERT INTO bench.features SELECT {day}, * FROM chunk")
                con.unregister("chunk")
    version = train(root)
    (root / "rows").write_text(f"{rows}x{days}")
    return {"rows": rows * days, "seconds": time.perf_counter() - started, "model": version}  # type: ignore[dict-item]


def ensure(root: Path, rows: int, days: int = 1) -> None:
    marker = root / "rows"
    if not (marker.exists() and marker.read_text() == f"{rows}x{days}"):
        print(f"generating {days} day(s) x {rows:,} rows in {root} ...", flush=True)
        print(generate(root, rows, days), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--root", type=Path, default=Path(".bench"))
    p.add_argument("--rows", type=int, default=5_000_000)
    a = p.parse_args()
    ensure(a.root.resolve(), a.rows)
