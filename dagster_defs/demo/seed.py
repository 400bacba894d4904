"""Demo seed: deterministic synthetic tables in DuckDB, and a LightGBM churn model.

churn: customer features and churn labels, plus its champion model (trained here); the
outcomes of the scoring days (`churn_outcomes`, until OUTCOMES_UNTIL) for realized performance.
demand: store x item features and units sold (dagster_defs/demo/demand.py); its model is
trained by the pipeline's own training job.

python -m dagster_defs.demo.seed --root .data
"""

import argparse
import os
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa

from batch_inference_assets.io.duckdb_warehouse import DuckDBWarehouse
from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.models.lightgbm_model import train_lightgbm
from batch_inference_assets.models.store import ModelStore
from dagster_defs.demo.demand import seed_demand
from dagster_defs.deployments import DEMO_OUTPUT_SCHEMA

FIRST_DAY = date(2026, 10, 1)
DAYS = 31
CUSTOMERS = 20_000
TRAIN_DAYS = 10  # labelled history: the first days train, the next ones are the holdout
HOLDOUT_DAYS = 4
SCHEMA = "raw"
# churn_outcomes (the late labels of realized performance) end here: the last week has not landed.
OUTCOMES_UNTIL = date(2026, 10, 24)
CHALLENGER_ALIAS = "challenger"

CATEGORIES = {
    "contract": ["month_to_month", "one_year", "two_year"],
    "payment_method": ["bank_transfer", "credit_card", "electronic_check", "mailed_check"],
    "internet_service": ["dsl", "fiber", "none"],
    "region": ["central", "east", "north", "south", "west", "islands"],
    "device_type": ["android", "ios", "web"],
}
FEATURES = [
    "tenure", "monthly_charges", "total_charges", "contract", "payment_method",
    "internet_service", "region", "device_type", "senior_citizen", "partner", "dependents",
    "paperless_billing", "streaming_tv", "streaming_movies", "num_products",
    "num_support_tickets", "late_payments_12m", "days_since_last_login", "app_sessions_30d",
    "email_opens_30d", "avg_call_minutes", "data_usage_gb", "avg_download_speed",
    "outage_minutes_30d", "discount_pct", "price_increase_pct", "nps_score", "referrals", "age",
    "household_size",
]  # fmt: skip


def _customers(n: int) -> dict[str, np.ndarray]:
    """Traits fixed per customer (same seed every time)."""
    rng = np.random.default_rng(20261001)
    out: dict[str, np.ndarray] = {
        "customer_id": np.arange(100_001, 100_001 + n, dtype=np.int64),
        "start_tenure": rng.integers(0, 72, n),
        "base_charges": rng.uniform(18, 120, n).round(2),
        "age": rng.integers(18, 90, n),
        "household_size": rng.integers(1, 7, n),
    }
    for col, cats in CATEGORIES.items():
        out[col] = rng.integers(0, len(cats), n)
    for col in ("senior_citizen", "partner", "dependents", "paperless_billing"):
        out[col] = rng.integers(0, 2, n)
    out["senior_citizen"] = (out["age"] >= 65).astype(np.int64)
    out["risk"] = rng.normal(0, 1, n)
    return out


def day_frame(day: date, people: dict[str, np.ndarray]) -> tuple[pa.Table, np.ndarray]:
    """One day's snapshot of every customer, and whether each churns (the label)."""
    offset = (day - FIRST_DAY).days
    rng = np.random.default_rng(1_000 + offset)
    n = len(people["customer_id"])
    tenure = people["start_tenure"] + offset // 30
    monthly = (people["base_charges"] * rng.uniform(0.97, 1.03, n)).round(2)
    total = (tenure * monthly + rng.normal(0, 20, n)).round(2)
    total_valid = rng.random(n) > 0.02
    tickets = rng.poisson(0.6 + 0.4 * (people["risk"] > 1), n)
    late = rng.poisson(0.3 + 0.5 * (people["contract"] == 0), n)
    login = rng.exponential(6 + 10 * (people["risk"] > 0.5), n).round(1)
    nps = np.clip(rng.normal(7 - people["risk"], 2, n).round(), 0, 10)
    nps_valid = rng.random(n) > 0.08
    cols: dict[str, pa.Array] = {
        "snapshot_date": pa.array([day] * n, pa.date32()),
        "customer_id": pa.array(people["customer_id"]),
        "tenure": pa.array(tenure.astype(np.int64)),
        "monthly_charges": pa.array(monthly),
        "total_charges": pa.array(total, mask=~total_valid),
    }
    for col, cats in CATEGORIES.items():
        cols[col] = pa.array(np.asarray(cats, dtype=object)[people[col]], pa.string())
    for col in ("senior_citizen", "partner", "dependents", "paperless_billing"):
        cols[col] = pa.array(people[col].astype(np.int64))
    cols["streaming_tv"] = pa.array(rng.integers(0, 2, n))
    cols["streaming_movies"] = pa.array(rng.integers(0, 2, n))
    cols["num_products"] = pa.array(rng.integers(1, 6, n))
    cols["num_support_tickets"] = pa.array(tickets.astype(np.int64))
    cols["late_payments_12m"] = pa.array(late.astype(np.int64))
    cols["days_since_last_login"] = pa.array(login)
    cols["app_sessions_30d"] = pa.array(rng.poisson(12, n).astype(np.int64))
    cols["email_opens_30d"] = pa.array(rng.poisson(4, n).astype(np.int64))
    cols["avg_call_minutes"] = pa.array(rng.gamma(2, 3, n).round(2))
    cols["data_usage_gb"] = pa.array(rng.gamma(3, 10, n).round(2))
    cols["avg_download_speed"] = pa.array(rng.normal(120, 40, n).clip(1).round(1))
    cols["outage_minutes_30d"] = pa.array(rng.exponential(15, n).round(1))
    cols["discount_pct"] = pa.array(rng.choice([0.0, 5.0, 10.0, 15.0], n))
    cols["price_increase_pct"] = pa.array(rng.choice([0.0, 0.0, 3.0, 7.0], n))
    cols["nps_score"] = pa.array(nps, mask=~nps_valid)
    cols["referrals"] = pa.array(rng.poisson(0.5, n).astype(np.int64))
    cols["age"] = pa.array(people["age"].astype(np.int64))
    cols["household_size"] = pa.array(people["household_size"].astype(np.int64))

    logit = (
        -2.6
        + 1.2 * (people["contract"] == 0)
        - 0.03 * tenure
        + 0.012 * (monthly - 60)
        + 0.35 * tickets
        + 0.3 * late
        + 0.04 * login
        - 0.15 * (nps - 7)
        + 0.6 * (people["internet_service"] == 1)
        + 0.5 * people["risk"]
    )
    churn = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pa.table(cols), churn


def _outcomes(frame: pa.Table, churn: np.ndarray) -> pa.Table:
    """Whether each customer of the day's snapshot churned, as it becomes known later."""
    return pa.table(
        {
            "customer_id": frame.column("customer_id"),
            "churned": pa.array(churn),
            "snapshot_date": frame.column("snapshot_date"),
        }
    )


@dataclass(frozen=True)
class SeedResult:
    rows: int
    days: int
    model_version: str
    holdout_auc: float
    seconds: float


def seed(
    root: Path,
    customers: int = CUSTOMERS,
    days: int = DAYS,
    train_days: int = TRAIN_DAYS,
    holdout_days: int = HOLDOUT_DAYS,
) -> SeedResult:
    """(Re)build the demo warehouse and train the champion model, deterministically."""
    if days < train_days + holdout_days:
        raise ValueError(f"need at least {train_days + holdout_days} days for training and holdout")
    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    warehouse = DuckDBWarehouse(database=str(root / "warehouse.duckdb"))
    people = _customers(customers)
    train_parts: list[pa.Table] = []
    holdout_parts: list[pa.Table] = []
    with warehouse.connect() as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        # New source data: what was published from the old is gone too (and a release that
        # adds columns to the demo's tables finds none of the old shape).
        con.execute(f"DROP SCHEMA IF EXISTS {DEMO_OUTPUT_SCHEMA} CASCADE")
        con.execute(f"DROP TABLE IF EXISTS {SCHEMA}.customer_features")
        con.execute(f"DROP TABLE IF EXISTS {SCHEMA}.churn_labels")
        outcomes: list[pa.Table] = []
        for offset in range(days):
            day = FIRST_DAY + timedelta(days=offset)
            frame, churn = day_frame(day, people)
            con.register("day_frame", frame)
            if offset == 0:
                con.execute(f"CREATE TABLE {SCHEMA}.customer_features AS SELECT * FROM day_frame")
            else:
                con.execute(f"INSERT INTO {SCHEMA}.customer_features SELECT * FROM day_frame")
            con.unregister("day_frame")
            if day <= OUTCOMES_UNTIL:  # the same draws as the training labels
                outcomes.append(_outcomes(frame, churn))
            if offset < train_days + holdout_days:
                labelled = frame.append_column("churned", pa.array(churn))
                (train_parts if offset < train_days else holdout_parts).append(labelled)
        labels = pa.concat_tables(train_parts + holdout_parts).select(
            ["snapshot_date", "customer_id", "churned"]
        )
        con.register("labels", labels)
        con.execute(f"CREATE TABLE {SCHEMA}.churn_labels AS SELECT * FROM labels")
        con.register("outcomes", pa.concat_tables(outcomes))
        con.execute(f"CREATE OR REPLACE TABLE {SCHEMA}.churn_outcomes AS SELECT * FROM outcomes")
        demand_rows = seed_demand(con, SCHEMA, FIRST_DAY, days, train_days + holdout_days)
    trained = train_lightgbm(
        "lightgbm_binary",
        pa.concat_tables(train_parts),
        pa.concat_tables(holdout_parts),
        FEATURES,
        label="churned",
        num_boost_round=120,
    )
    store = ModelStore(store=LocalObjectStore(root=str(root / "models")))
    window = {  # the same shape as a candidate's (training.py): end exclusive
        "training_window": {
            "start": FIRST_DAY.isoformat(),
            "holdout_start": (FIRST_DAY + timedelta(days=train_days)).isoformat(),
            "end": (FIRST_DAY + timedelta(days=train_days + holdout_days)).isoformat(),
        }
    }
    version = store.save("churn", trained, extra=window)
    # The challenger the demo scores in the champion's shadow: smaller trees, same data.
    challenger = train_lightgbm(
        "lightgbm_binary",
        pa.concat_tables(train_parts),
        pa.concat_tables(holdout_parts),
        FEATURES,
        label="churned",
        num_boost_round=60,
        params={"num_leaves": 15},
    )
    store.save("churn", challenger, aliases=(CHALLENGER_ALIAS,), extra=window)
    return SeedResult(
        rows=customers * days + demand_rows,
        days=days,
        model_version=version,
        holdout_auc=trained.metrics["holdout_auc"],
        seconds=time.perf_counter() - started,
    )


def record_seeded_champion(version: str) -> bool:
    """Record in the Dagster instance (when DAGSTER_HOME names one) that the seed made churn's
    champion: `churn_training/champion_model` is then materialized in the UI, and "Materialize
    all" on the churn group does not warn that its upstream model was never built."""
    if not os.environ.get("DAGSTER_HOME"):
        return False
    with dg.DagsterInstance.get() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=dg.AssetKey(["churn_training", "champion_model"]),
                description="The demo's champion, trained by the seed (make demo / make seed).",
                metadata={"model": f"churn@{version}", "alias": "champion", "source": "seed"},
            )
        )
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(".data"))
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--days", type=int, default=DAYS)
    args = parser.parse_args()
    result = seed(args.root.resolve(), args.customers, args.days)
    record_seeded_champion(result.model_version)
    last = FIRST_DAY + timedelta(days=result.days - 1)
    print(
        f"seeded {result.rows:,} rows ({result.days} days, {FIRST_DAY} .. {last}) into "
        f"{args.root / 'warehouse.duckdb'}:{SCHEMA}.customer_features; "
        f"champion model churn@{result.model_version} (holdout AUC {result.holdout_auc:.3f}) "
        f"in {result.seconds:.1f}s"
    )


if __name__ == "__main__":
    main()
