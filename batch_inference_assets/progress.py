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
