"""Published predictions: stage the scored shards in the warehouse, gate them, then commit."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.warehouse import PublishRequest, QueryTag, StagedStats, Warehouse
from batch_inference_assets.records import ScoredShards
from batch_inference_assets.spec import PARTITION_COLUMN, SCORE_COLUMN, PipelineSpec


@dataclass(frozen=True)
class GateResult:
    """One blocking condition on the staged rows, named like the asset check it reports as."""

    check_name: str
    passed: bool
    description: str


class PublicationRejected(Exception):
    def __init__(self, gates: list[GateResult]) -> None:
        self.gates = gates
        super().__init__("; ".join(g.description for g in gates if not g.passed))


ROW_COUNT_MATCHES_SOURCE = "row_count_matches_source"
SCORES_ARE_NOT_NULL = "scores_are_not_null"
SCORES_IN_UNIT_INTERVAL = "scores_in_unit_interval"
IDS_ARE_UNIQUE = "ids_are_unique"
SCORES_ARE_FROM_THIS_RUN = "scores_are_from_this_run"
BLOCKING_CHECKS = (
    ROW_COUNT_MATCHES_SOURCE,
    SCORES_ARE_FROM_THIS_RUN,
    SCORES_ARE_NOT_NULL,
    SCORES_IN_UNIT_INTERVAL,
    IDS_ARE_UNIQUE,
)


def blocking_checks(classifier: bool) -> tuple[str, ...]:
    """Scores of a regression (or a python model) need not lie in [0, 1]."""
    return (
        BLOCKING_CHECKS
        if classifier
        else tuple(c for c in BLOCKING_CHECKS if c != SCORES_IN_UNIT_INTERVAL)
    )


def evaluate_gates(staged: StagedStats, source_rows: int, classifier: bool) -> list[GateResult]:
    in_range = staged.rows == 0 or (
        staged.min_score is not None
        and staged.max_score is not None
        and staged.min_score >= 0.0
        and staged.max_score <= 1.0
    )
    gates = [
        GateResult(
            ROW_COUNT_MATCHES_SOURCE,
            staged.rows == source_rows and staged.other_partitions == 0,
            f"{staged.rows} rows staged for {source_rows} source rows"
            + (
                f", {staged.other_partitions} of another partition"
                if staged.other_partitions
                else ""
            ),
        ),
        GateResult(
            SCORES_ARE_FROM_THIS_RUN,
            staged.foreign_runs == 0 and staged.other_versions == 0,
            f"{staged.foreign_runs} rows scored by another run, {staged.other_versions} rows "
            "by another model version",
        ),
        GateResult(
            SCORES_ARE_NOT_NULL, staged.null_scores == 0, f"{staged.null_scores} null scores"
        ),
        GateResult(
            SCORES_IN_UNIT_INTERVAL,
            in_range,
            f"scores span [{staged.min_score}, {staged.max_score}]",
        ),
        GateResult(
            IDS_ARE_UNIQUE, staged.duplicate_ids == 0, f"{staged.duplicate_ids} duplicated ids"
        ),
    ]
    return [g for g in gates if g.check_name in blocking_checks(classifier)]


def publish_partition(
    spec: PipelineSpec,
    warehouse: Warehouse,
    object_store: ObjectStore,
    scored: ScoredShards,
    day: date,
    run_id: str,
) -> tuple[StagedStats, list[GateResult]]:
    """Stage the scored files, gate the staged rows, then commit them as the partition (replace
    or append, one transaction) or roll back and raise PublicationRejected.

    Every staged row must carry the run id that the manifest records for its shard (this run's,
    the re-executed run's for reused shards, or the scoring run's when only `predictions` runs)
    and the manifest's model version: files changed or written by another run are refused."""
    classifier = spec.model.is_classifier
    if not scored.paths:  # incremental mode with nothing new: the table stays as it is
        nothing = StagedStats(0, 0, None, None, 0, 0)
        gates = evaluate_gates(nothing, scored.source_rows, classifier)
        if not all(g.passed for g in gates):
            raise PublicationRejected(gates)
        return nothing, gates

    request = PublishRequest(
        table=spec.output.table,
        contract=spec.output_contract,
        partition_column=PARTITION_COLUMN,
        partition_value=day,
        files=scored.paths,
        mode=spec.output.mode,
        id_columns=spec.features.id_columns,
        score_column=SCORE_COLUMN,
        tag=QueryTag(spec.name, day.isoformat(), run_id, "predictions"),
        run_ids=scored.run_ids or (run_id,),
        model_version=scored.model_version,
    )
    return _gate_and_commit(warehouse, object_store, request, scored.source_rows, classifier)


def _gate_and_commit(
    warehouse: Warehouse,
    object_store: ObjectStore,
    request: PublishRequest,
    expected_rows: int,
    classifier: bool,
) -> tuple[StagedStats, list[GateResult]]:
    with warehouse.stage_publication(request, object_store) as staged:
        gates = evaluate_gates(staged.stats, expected_rows, classifier)
        if not all(g.passed for g in gates):
            staged.rollback()
            raise PublicationRejected(gates)
        staged.commit()
    return staged.stats, gates


def shadow_table(spec: PipelineSpec) -> str:
    return f"{spec.output.table}_shadow"


def publish_shadow(
    spec: PipelineSpec,
    warehouse: Warehouse,
    object_store: ObjectStore,
    scored: ScoredShards,
    day: date,
    run_id: str,
) -> tuple[StagedStats, list[GateResult]]:
    """The challengers' scores of the partition into `<table>_shadow`, replaced atomically
    behind the same gates as the champion's: one row per id and challenger version, every id
    the champion scored, from this run's files and the versions the run resolved."""
    versions = tuple(scored.challenger_versions)
    request = PublishRequest(
        table=shadow_table(spec),
        contract=spec.output_contract,
        partition_column=PARTITION_COLUMN,
        partition_value=day,
        files=scored.challenger_paths(),
        mode="replace_partition",
        id_columns=[*spec.features.id_columns, "model_version"],
        score_column=SCORE_COLUMN,
        tag=QueryTag(spec.name, day.isoformat(), run_id, "shadow_predictions"),
        run_ids=scored.run_ids or (run_id,),
        model_versions=versions,
    )
    expected = scored.source_rows * len(versions)
    return _gate_and_commit(warehouse, object_store, request, expected, spec.model.is_classifier)


def score_metadata(scored: ScoredShards, kind: str) -> dict[str, float]:
    """What the day's scores look like: the UI plots these over partitions, and the success
    summary quotes them. The positive rate is the binary models' class balance."""
    rows = scored.rows or 1
    found = {
        "mean_score": round(sum(s.score_sum for s in scored.shards) / rows, 6),
        "mean_confidence": round(sum(s.confidence_sum for s in scored.shards) / rows, 6),
    }
    if kind == "lightgbm_binary":
        found["positive_rate"] = round(sum(s.positives for s in scored.shards) / rows, 6)
    return found


def cost_metadata(
    scored: ScoredShards,
    publish_seconds: float,
    estimate: Callable[[float, float], float],
    currency: str,
) -> dict[str, float]:
    """Warehouse seconds (export + publish), compute seconds (the shards' sum) and their price."""
    warehouse_seconds = scored.export_seconds + publish_seconds
    compute_seconds = sum(s.seconds for s in scored.shards)
    return {
        "cost/warehouse_seconds": round(warehouse_seconds, 3),
        "cost/compute_seconds": round(compute_seconds, 3),
        f"cost/estimated_{currency.lower()}": round(
            estimate(warehouse_seconds, compute_seconds), 6
        ),
    }
