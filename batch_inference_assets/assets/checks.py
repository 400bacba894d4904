"""The asset checks: one registry of names (the passing state), blocking flags and the
descriptions the UI shows; their specs per asset, and their evaluation into results."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa

from batch_inference_assets.records import FeatureExport, ModelHandle, ScoredShards
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import publish, stats
from batch_inference_assets.stages.features import FeatureProfile
from batch_inference_assets.stages.publish import GateResult

# source_features
PARTITION_IS_NOT_EMPTY = "partition_is_not_empty"
IDS_ARE_UNIQUE = publish.IDS_ARE_UNIQUE
FEATURES_MATCH_MODEL = "features_match_model_contract"
NULL_RATES_BELOW_THRESHOLD = "null_rates_below_threshold"
ROW_COUNT_WITHIN_LIMIT = "row_count_within_limit"
# predictions: the blocking gates of the transaction (stages/publish.py), then warn-only bounds
POSITIVE_RATE_WITHIN_BOUNDS = "positive_rate_within_bounds"
MEAN_CONFIDENCE_WITHIN_BOUNDS = "mean_confidence_within_bounds"
MEAN_SCORE_WITHIN_BOUNDS = "mean_score_within_bounds"
# drift_stats
SCORE_DRIFT_BELOW_THRESHOLD = "score_drift_below_threshold"
FEATURE_DRIFT_BELOW_THRESHOLD = "feature_drift_below_threshold"
# training
PROMOTION_GATE = "promotion_gate"


@dataclass(frozen=True)
class Check:
    """One asset check: its name says the passing state; a blocking one stops what follows."""

    name: str
    blocking: bool
    description: str


REGISTRY: dict[str, Check] = {
    c.name: c
    for c in (
        Check(PARTITION_IS_NOT_EMPTY, True, "The partition has source rows; an empty day "
              "usually means late upstream data, so it fails rather than publish nothing."),
        Check(FEATURES_MATCH_MODEL, True, "The exported columns and types are the model's "
              "features (and the id columns), as the model's metadata declares them."),
        Check(IDS_ARE_UNIQUE, True, "No id occurs twice in the partition."),
        Check(ROW_COUNT_WITHIN_LIMIT, True, "The partition has at most limits.max_rows rows."),
        Check(NULL_RATES_BELOW_THRESHOLD, False, "Each feature's null rate is under "
              "checks.max_null_rate (or its override)."),
        Check(publish.ROW_COUNT_MATCHES_SOURCE, True, "The staged rows are exactly the source "
              "rows of this partition; gates the publishing transaction."),
        Check(publish.SCORES_ARE_NOT_NULL, True, "No staged score is null; gates the "
              "publishing transaction."),
        Check(publish.SCORES_IN_UNIT_INTERVAL, True, "Every staged score of a classifier lies "
              "in [0, 1]; gates the publishing transaction."),
        Check(POSITIVE_RATE_WITHIN_BOUNDS, False, "The share of label 1 is within "
              "checks.positive_rate."),
        Check(MEAN_CONFIDENCE_WITHIN_BOUNDS, False, "The mean probability of the predicted "
              "class is within checks.mean_confidence."),
        Check(MEAN_SCORE_WITHIN_BOUNDS, False, "The partition's mean score is within "
              "checks.mean_score."),
        Check(SCORE_DRIFT_BELOW_THRESHOLD, False, "PSI of the score vs the training "
              "distribution is under checks.psi_warn (ERROR severity from psi_error)."),
        Check(FEATURE_DRIFT_BELOW_THRESHOLD, False, "The largest feature PSI vs training is "
              "under checks.psi_warn (ERROR severity from psi_error)."),
        Check(PROMOTION_GATE, True, "The candidate's holdout metric clears the threshold and is "
              "not worse than the champion's on the same holdout by more than the tolerance."),
    )
}  # fmt: skip

SOURCE_CHECKS = (
    PARTITION_IS_NOT_EMPTY,
    FEATURES_MATCH_MODEL,
    IDS_ARE_UNIQUE,
    ROW_COUNT_WITHIN_LIMIT,
    NULL_RATES_BELOW_THRESHOLD,
)
DRIFT_CHECKS = (SCORE_DRIFT_BELOW_THRESHOLD, FEATURE_DRIFT_BELOW_THRESHOLD)


def specs(
    key: dg.AssetKey, names: Sequence[str], partitions_def: dg.PartitionsDefinition | None = None
) -> list[dg.AssetCheckSpec]:
    """The registry's checks as specs on one asset: the UI shows each description. With the
    asset's partitions, each result is recorded for its day: a failed check's page and its
    history say which day failed."""
    return [
        dg.AssetCheckSpec(
            n,
            asset=key,
            blocking=REGISTRY[n].blocking,
            description=REGISTRY[n].description,
            partitions_def=partitions_def,
        )
        for n in names
    ]


def blocking_failures(results: list[dg.AssetCheckResult]) -> list[str]:
    """The failed blocking checks among `results`, each with its description."""
    return [
        f"{r.check_name} failed ({r.description})"
        for r in results
        if r.check_name and REGISTRY[r.check_name].blocking and not r.passed
    ]


def prediction_bound_checks(spec: PipelineSpec) -> list[str]:
    """The warn-only checks on a partition's predictions that fit the model kind."""
    names = []
    if spec.model.kind == "lightgbm_binary":
        names.append(POSITIVE_RATE_WITHIN_BOUNDS)
    if spec.model.is_classifier:
        names.append(MEAN_CONFIDENCE_WITHIN_BOUNDS)
    if spec.checks.mean_score is not None:
        names.append(MEAN_SCORE_WITHIN_BOUNDS)
    return names


def prediction_checks(spec: PipelineSpec) -> list[str]:
    return [*publish.blocking_checks(spec.model.is_classifier), *prediction_bound_checks(spec)]


def contract_problems(spec: PipelineSpec, model: ModelHandle, schema: pa.Schema) -> list[str]:
    problems = [
        f"missing id column {c!r}" for c in spec.features.id_columns if c not in schema.names
    ]
    return problems + model.feature_contract().violations(schema)


def evaluate_source_features(
    spec: PipelineSpec,
    export: FeatureExport,
    model: ModelHandle,
    schema: pa.Schema | None,
    problems: list[str],
    profile: FeatureProfile | None,
) -> list[dg.AssetCheckResult]:
    """`problems` are `contract_problems` of `schema` (empty when there is no schema)."""
    results = [
        dg.AssetCheckResult(
            check_name=PARTITION_IS_NOT_EMPTY,
            passed=export.rows > 0,
            description=f"{export.rows} rows",
            metadata={"rows": export.rows},
        ),
        dg.AssetCheckResult(
            check_name=FEATURES_MATCH_MODEL,
            passed=schema is not None and not problems,
            description="; ".join(problems)
            or (
                "no rows to compare" if schema is None else f"model {model.version} inputs present"
            ),
            metadata={"model_version": model.version},
        ),
    ]
    if profile is None:
        results.append(
            dg.AssetCheckResult(
                check_name=IDS_ARE_UNIQUE, passed=False, description="not evaluated: no usable rows"
            )
        )
        results.append(
            dg.AssetCheckResult(
                check_name=NULL_RATES_BELOW_THRESHOLD,
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description="not evaluated: no usable rows",
            )
        )
        return results
    results.append(
        dg.AssetCheckResult(
            check_name=IDS_ARE_UNIQUE,
            passed=profile.duplicate_ids == 0,
            description=f"{profile.duplicate_ids} ids occur more than once",
            metadata={"duplicate_ids": profile.duplicate_ids},
        )
    )
    rates = {c: n / profile.rows for c, n in profile.null_counts.items()} if profile.rows else {}
    limit = spec.checks.null_rate_overrides
    over = {c: r for c, r in rates.items() if r > limit.get(c, spec.checks.max_null_rate)}
    results.append(
        dg.AssetCheckResult(
            check_name=NULL_RATES_BELOW_THRESHOLD,
            passed=not over,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                "null rate over threshold: "
                + ", ".join(f"{c}={r:.1%}" for c, r in sorted(over.items()))
                if over
                else f"max null rate {max(rates.values(), default=0.0):.1%}"
            ),
            metadata={"max_null_rate": max(rates.values(), default=0.0)},
        )
    )
    return results


def nothing_new(export: FeatureExport, published: int) -> list[dg.AssetCheckResult]:
    """Incremental mode, every id of the partition already published: an idempotent no-op."""
    note = f"nothing new to score: {published} rows already published for the partition"
    return [
        dg.AssetCheckResult(check_name=name, passed=True, description=note)
        for name in (PARTITION_IS_NOT_EMPTY, FEATURES_MATCH_MODEL, IDS_ARE_UNIQUE)
    ] + [
        dg.AssetCheckResult(
            check_name=NULL_RATES_BELOW_THRESHOLD,
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=note,
        )
    ]


def evaluate_row_limit(spec: PipelineSpec, export: FeatureExport) -> dg.AssetCheckResult:
    limit = spec.limits.max_rows
    return dg.AssetCheckResult(
        check_name=ROW_COUNT_WITHIN_LIMIT,
        passed=limit is None or export.rows <= limit,
        description=f"{export.rows:,} rows, limit {limit:,}" if limit else "no limit set",
        metadata={"rows": export.rows, "max_rows": limit or 0},
    )


def gate_results(gates: list[GateResult]) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(check_name=g.check_name, passed=g.passed, description=g.description)
        for g in gates
    ]


def evaluate_prediction_bounds(
    spec: PipelineSpec, scored: ScoredShards
) -> list[dg.AssetCheckResult]:
    rows = scored.rows or 1
    values = {
        POSITIVE_RATE_WITHIN_BOUNDS: (
            "positive rate", sum(s.positives for s in scored.shards) / rows,
            spec.checks.positive_rate,
        ),
        MEAN_CONFIDENCE_WITHIN_BOUNDS: (
            "mean confidence", sum(s.confidence_sum for s in scored.shards) / rows,
            spec.checks.mean_confidence,
        ),
        MEAN_SCORE_WITHIN_BOUNDS: (
            "mean score", sum(s.score_sum for s in scored.shards) / rows, spec.checks.mean_score,
        ),
    }  # fmt: skip
    results = []
    for name in prediction_bound_checks(spec):
        what, value, bounds = values[name]
        assert bounds is not None  # prediction_bound_checks only lists configured bounds
        results.append(
            dg.AssetCheckResult(
                check_name=name,
                passed=bounds.min <= value <= bounds.max,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{what} {value:.4f}, bounds [{bounds.min}, {bounds.max}]",
                metadata={what.replace(" ", "_"): value},
            )
        )
    return results


def _psi_result(name: str, value: float, what: str, spec: PipelineSpec) -> dg.AssetCheckResult:
    warn, error = spec.checks.psi_warn, spec.checks.psi_error
    if math.isnan(value):
        passed, severity = False, dg.AssetCheckSeverity.WARN
    else:
        passed = value < warn
        severity = dg.AssetCheckSeverity.ERROR if value >= error else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        check_name=name,
        passed=passed,
        severity=severity,
        description=f"{what} PSI {value:.4f} (warn at {warn}, error at {error})",
        metadata={"psi": value},
    )


def drift_not_evaluated(reason: str) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(check_name=name, passed=True, description=reason)
        for name in (SCORE_DRIFT_BELOW_THRESHOLD, FEATURE_DRIFT_BELOW_THRESHOLD)
    ]


def evaluate_drift(
    spec: PipelineSpec, psi_reference: dict[str, float]
) -> list[dg.AssetCheckResult]:
    features = {k: v for k, v in psi_reference.items() if k != stats.SCORE_KEY}
    # A NaN PSI (nothing to compare) must surface, not hide behind a healthy feature.
    worst = max(
        features,
        key=lambda k: math.inf if math.isnan(features[k]) else features[k],
        default=None,
    )
    return [
        _psi_result(SCORE_DRIFT_BELOW_THRESHOLD, psi_reference[stats.SCORE_KEY], "score", spec),
        _psi_result(
            FEATURE_DRIFT_BELOW_THRESHOLD,
            features[worst] if worst else 0.0,
            f"largest feature ({worst})",
            spec,
        ),
    ]
