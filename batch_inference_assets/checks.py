"""The asset checks, by stage: their names (the passing state), specs and evaluation."""

import math
from collections.abc import Sequence

import dagster as dg
import pyarrow as pa

from batch_inference_assets.records import FeatureExport, ModelHandle, ScoredShards
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import stats
from batch_inference_assets.stages.features import FeatureProfile
from batch_inference_assets.stages.publish import GateResult, blocking_checks

# source_features
PARTITION_IS_NOT_EMPTY = "partition_is_not_empty"
IDS_ARE_UNIQUE = "ids_are_unique"
FEATURES_MATCH_MODEL = "features_match_model_contract"
NULL_RATES_BELOW_THRESHOLD = "null_rates_below_threshold"
ROW_COUNT_WITHIN_LIMIT = "row_count_within_limit"
SOURCE_BLOCKING_CHECKS = (
    PARTITION_IS_NOT_EMPTY,
    FEATURES_MATCH_MODEL,
    IDS_ARE_UNIQUE,
    ROW_COUNT_WITHIN_LIMIT,
)

# predictions (the blocking ones gate the transaction, see publish.py)
POSITIVE_RATE_WITHIN_BOUNDS = "positive_rate_within_bounds"
MEAN_CONFIDENCE_WITHIN_BOUNDS = "mean_confidence_within_bounds"
MEAN_SCORE_WITHIN_BOUNDS = "mean_score_within_bounds"

# drift_stats
SCORE_DRIFT_BELOW_THRESHOLD = "score_drift_below_threshold"
FEATURE_DRIFT_BELOW_THRESHOLD = "feature_drift_below_threshold"


def _specs(
    key: dg.AssetKey, blocking: Sequence[str], other: Sequence[str]
) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(n, asset=key, blocking=True) for n in blocking] + [
        dg.AssetCheckSpec(n, asset=key) for n in other
    ]


def source_feature_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return _specs(key, SOURCE_BLOCKING_CHECKS, [NULL_RATES_BELOW_THRESHOLD])


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


def prediction_specs(key: dg.AssetKey, spec: PipelineSpec) -> list[dg.AssetCheckSpec]:
    return _specs(key, blocking_checks(spec.model.is_classifier), prediction_bound_checks(spec))


def drift_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return _specs(key, [], [SCORE_DRIFT_BELOW_THRESHOLD, FEATURE_DRIFT_BELOW_THRESHOLD])


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
