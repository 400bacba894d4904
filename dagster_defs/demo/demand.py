"""Demo data of the second pipeline, `demand`: daily units sold per store and item (regression).

Its own synthetic tables, deterministic: `raw.store_item_features` (every store x item, every
day) and `raw.store_item_units` (the units actually sold: the label, known for past days only).
No model is made here: the pipeline's training section trains it (README, "Adding a pipeline").
"""

from datetime import date, timedelta

import duckdb
import numpy as np
import pyarrow as pa

STORES = 60
ITEMS = 50
CATEGORIES = ["bakery", "dairy", "drinks", "household", "produce"]
REGIONS = ["north", "south", "east", "west"]


def _catalogue() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261002)
    store = np.repeat(np.arange(1, STORES + 1, dtype=np.int64), ITEMS)
    item = np.tile(np.arange(1, ITEMS + 1, dtype=np.int64), STORES)
    return {
        "store_id": store,
        "item_id": item,
        "store_size": rng.uniform(0.5, 3.0, STORES)[store - 1].round(2),
        "region": rng.integers(0, len(REGIONS), STORES)[store - 1],
        "category": rng.integers(0, len(CATEGORIES), ITEMS)[item - 1],
        "base_price": rng.uniform(0.8, 12.0, ITEMS)[item - 1].round(2),
        "popularity": rng.gamma(2.0, 4.0, ITEMS)[item - 1],
    }


def demand_day(day: date, first_day: date, cat: dict[str, np.ndarray]) -> tuple[pa.Table, pa.Table]:
    """(features, units) of one day for every store x item."""
    offset = (day - first_day).days
    rng = np.random.default_rng(5_000 + offset)
    n = len(cat["store_id"])
    promo = (rng.random(n) < 0.12).astype(np.int64)
    price = (cat["base_price"] * np.where(promo == 1, 0.8, 1.0) * rng.uniform(0.97, 1.03, n)).round(
        2
    )
    weekday = day.weekday()
    temperature = np.round(12 + 8 * np.sin(offset / 5) + rng.normal(0, 2, n), 1)
    expected = (
        cat["popularity"] * cat["store_size"]
        * (1.0 + 0.6 * promo) * (1.25 if weekday >= 5 else 1.0)
        * (1.0 + 0.02 * (temperature - 12) * (cat["category"] == 2))
        * (cat["base_price"] / price) ** 1.5
    )  # fmt: skip
    units = rng.poisson(expected).astype(np.float64)
    last_7d = np.round(expected * 7 * rng.uniform(0.85, 1.15, n), 1)
    last_28d = np.round(expected * 28 * rng.uniform(0.9, 1.1, n), 1)
    days = pa.array([day] * n, pa.date32())
    features = pa.table(
        {
            "snapshot_date": days,
            "store_id": pa.array(cat["store_id"]),
            "item_id": pa.array(cat["item_id"]),
            "price": pa.array(price),
            "promo": pa.array(promo),
            "day_of_week": pa.array(np.full(n, weekday, dtype=np.int64)),
            "temperature": pa.array(temperature),
            "store_size": pa.array(cat["store_size"]),
            "region": pa.array(np.asarray(REGIONS, dtype=object)[cat["region"]], pa.string()),
            "category": pa.array(
                np.asarray(CATEGORIES, dtype=object)[cat["category"]], pa.string()
            ),
            "units_last_7d": pa.array(last_7d),
            "units_last_28d": pa.array(last_28d),
        }
    )
    labels = pa.table(
        {
            "snapshot_date": days,
            "store_id": pa.array(cat["store_id"]),
            "item_id": pa.array(cat["item_id"]),
            "units": pa.array(units),
        }
    )
    return features, labels


def seed_demand(
    con: duckdb.DuckDBPyConnection, schema: str, first_day: date, days: int, labelled_days: int
) -> int:
    """Write the demand tables into `schema`; labels for the first `labelled_days` days only."""
    cat = _catalogue()
    for table in ("store_item_features", "store_item_units"):
        con.execute(f"DROP TABLE IF EXISTS {schema}.{table}")
    for offset in range(days):
        features, labels = demand_day(first_day + timedelta(days=offset), first_day, cat)
        con.register("features_day", features)
        con.register("labels_day", labels)
        if offset == 0:
            con.execute(f"CREATE TABLE {schema}.store_item_features AS SELECT * FROM features_day")
            con.execute(f"CREATE TABLE {schema}.store_item_units AS SELECT * FROM labels_day")
        else:
            con.execute(f"INSERT INTO {schema}.store_item_features SELECT * FROM features_day")
            if offset < labelled_days:
                con.execute(f"INSERT INTO {schema}.store_item_units SELECT * FROM labels_day")
        con.unregister("features_day")
        con.unregister("labels_day")
    return STORES * ITEMS * days
