"""Progress and cost of a running partition: shards and rows done, ETA, estimated spend."""

from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from batch_inference_assets.records import Shard


@dataclass(frozen=True)
class Progress:
    shards_done: int
    shards_total: int
    rows_done: int
    rows_total: int
    eta_seconds: float | None

    def line(self) -> str:
        eta = "unknown" if self.eta_seconds is None else f"{self.eta_seconds:.0f}s"
        return (
            f"{self.shards_done}/{self.shards_total} shards, "
            f"{self.rows_done:,}/{self.rows_total:,} rows scored, ETA {eta}"
        )

    def metadata(self) -> dict[str, float | int]:
        md: dict[str, float | int] = {
            "progress/shards_done": self.shards_done,
            "progress/shards_total": self.shards_total,
            "progress/rows_done": self.rows_done,
            "progress/rows_total": self.rows_total,
        }
        if self.eta_seconds is not None:
            md["progress/eta_seconds"] = round(self.eta_seconds, 1)
        return md


def estimate(shard: Shard, done_indices: set[int], elapsed_seconds: float) -> Progress:
    """Rows done come from the shards finished so far; the ETA extrapolates their rate."""
    rows = shard.rows_by_shard or [shard.rows]
    done = done_indices | {shard.index}
    rows_done = sum(rows[i] for i in done if i < len(rows))
    total = shard.partition_rows or sum(rows)
    remaining = max(total - rows_done, 0)
    eta = elapsed_seconds * remaining / rows_done if rows_done and elapsed_seconds > 0 else None
    return Progress(len(done), len(rows), rows_done, total, eta)


HISTORY_RUNS = 5  # recent published runs the estimate learns from


@dataclass(frozen=True)
class RunEstimate:
    """What a run expects before it scores: its rows and, from recent runs' pace, its duration.

    `rows_per_second` is the median over recent runs of published rows per second of the whole
    run (start to publication), so it carries the export, the step start-ups and the publish,
    not only the scoring; None when no run has published yet."""

    rows: int
    shards: int
    rows_per_second: float | None
    runs: int

    @property
    def seconds(self) -> float | None:
        return self.rows / self.rows_per_second if self.rows_per_second else None

    def line(self) -> str:
        what = f"{self.rows:,} rows in {self.shards} shards"
        if self.seconds is None:
            return f"{what}; estimated duration: no history yet"
        return (
            f"{what}; estimated {self.seconds:.0f}s for the run, at {self.rows_per_second:,.0f} "
            f"rows/s (median of the last {self.runs} published runs)"
        )

    def tags(self) -> dict[str, str]:
        """Shown on the run's page and filterable in the runs list."""
        seconds = "no history yet" if self.seconds is None else f"{self.seconds:.0f}"
        return {
            "batch_inference/rows": str(self.rows),
            "batch_inference/estimated_seconds": seconds,
        }

    def metadata(self) -> dict[str, float | int | str]:
        md: dict[str, float | int | str] = {"estimate/rows": self.rows}
        if self.seconds is None:
            md["estimate/basis"] = "no history yet"
        else:
            md["estimate/seconds"] = round(self.seconds, 1)
            md["estimate/rows_per_second"] = round(self.rows_per_second or 0.0, 1)
            md["estimate/basis"] = f"median of the last {self.runs} published runs"
        return md


def run_estimate(rows: int, shards: int, history: list[tuple[int, float]]) -> RunEstimate:
    """`history`: (rows, seconds) of recent runs, newest first; runs of 0 rows or no time say
    nothing about pace and are left out."""
    rates = sorted(r / s for r, s in history[:HISTORY_RUNS] if r > 0 and s > 0)
    if not rates:
        return RunEstimate(rows, shards, None, 0)
    mid = len(rates) // 2
    median = rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2
    return RunEstimate(rows, shards, median, len(rates))


def recent_pace(
    instance: dg.DagsterInstance, published: dg.AssetKey, this_run: str
) -> list[tuple[int, float]]:
    """(rows, seconds from run start to publication) of the runs that last published
    `published`, newest first, this run left out."""
    out: list[tuple[int, float]] = []
    records = instance.fetch_materializations(published, limit=HISTORY_RUNS * 3).records
    for record in records:
        if record.run_id == this_run or len(out) == HISTORY_RUNS:
            continue
        materialization = record.asset_materialization
        rows = materialization.metadata.get("dagster/row_count") if materialization else None
        run = instance.get_run_record_by_id(record.run_id)
        if rows is None or run is None or run.start_time is None:
            continue
        out.append((int(rows.value), record.timestamp - run.start_time))  # type: ignore[arg-type]
    return out


def finished_shards(context: dg.OpExecutionContext, op_name: str) -> set[int]:
    """Indices of this run's shard steps that already succeeded (from Dagster's run stats)."""
    marker = f"{op_name}[shard_"
    done = set()
    for stat in context.instance.get_run_step_stats(context.run_id):
        key = stat.step_key
        if marker in key and stat.status is not None and stat.status.value == "SUCCESS":
            done.add(int(key.split(marker, 1)[1].rstrip("]")))
    return done


class CostModel(dg.ConfigurableResource):
    """Prices to turn measured seconds into an estimate (defaults: Snowflake XS, cloud CPU)."""

    warehouse_credits_per_hour: float = Field(default=1.0, ge=0, description="XS=1, S=2, M=4")
    price_per_credit: float = Field(default=3.0, ge=0)
    price_per_cpu_hour: float = Field(default=0.05, ge=0)
    currency: str = "USD"

    def estimate(self, warehouse_seconds: float, compute_seconds: float) -> float:
        return (
            warehouse_seconds / 3600 * self.warehouse_credits_per_hour * self.price_per_credit
            + compute_seconds / 3600 * self.price_per_cpu_hour
        )
