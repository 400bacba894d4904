"""The asset checks: one registry of names (the passing state), blocking flags and the
descriptions the UI shows; their specs per asset, and their evaluation into results."""

import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dagster as dg
import pyarrow as pa

from batch_inference_assets.assets.common import fail
from batch_inference_assets.contracts import Contract
from batch_inference_assets.io.warehouse import WarehouseError
from batch_inference_assets.records import FeatureExport, ModelHandle, ScoredShards
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import publish, stats
from batch_inference_assets.stages.features import FeatureProfile
from batch_inference_assets.stages.publish import GateResult

Published = TypeVar("Published")

# source_features
PARTITION_IS_NOT_EMPTY = "partition_is_not_empty"
IDS_ARE_UNIQUE = publish.IDS_ARE_UNIQUE
FEATURES_MATCH_MODEL = "features_match_model_contract"
NULL_RATES_BELOW_THRESHOLD = "null_rates_below_threshold"
IDS_ARE_NOT_NULL = "ids_are_not_null"
FEATURES_ARE_POPULATED = "features_are_populated"
FEATURE_VALUES_ARE_FINITE = "feature_values_are_finite"
CATEGORIES_ARE_KNOWN = "categories_are_known"
ROW_COUNT_WITHIN_LIMIT = "row_count_within_limit"
# predictions: the blocking gates of the transaction (stages/publish.py), then warn-only bounds
POSITIVE_RATE_WITHIN_BOUNDS = "positive_rate_within_bounds"
MEAN_CONFIDENCE_WITHIN_BOUNDS = "mean_confidence_within_bounds"
MEAN_SCORE_WITHIN_BOUNDS = "mean_score_within_bounds"
# drift_stats
SCORE_DRIFT_BELOW_THRESHOLD = "score_drift_below_threshold"
FEATURE_DRIFT_BELOW_THRESHOLD = "feature_drift_below_threshold"
# challenger_comparison
CHALLENGER_SCORED_THE_SAME_ROWS = "challenger_scored_the_same_rows"
# realized_performance
REALIZED_PERFORMANCE_WITHIN_THRESHOLDS = "realized_performance_within_thresholds"
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
        Check(NULL_RATES_BELOW_THRESHOLD, False, "Each feature's missing rate (null or NaN) "
              "is under checks.max_null_rate (or its override)."),
        Check(IDS_ARE_NOT_NULL, True, "Every row has all its id columns."),
        Check(FEATURES_ARE_POPULATED, True, "No feature is missing (null or NaN) in "
              "checks.blocking_null_rate of the rows or more (default 1.0: missing from every "
              "row), per feature overridable."),
        Check(FEATURE_VALUES_ARE_FINITE, True, "No numeric feature value is +inf or -inf "
              "(NaN counts as missing)."),
        Check(CATEGORIES_ARE_KNOWN, False, "Every categorical value is one the model was "
              "trained on; unseen values are scored as missing."),
        Check(publish.ROW_COUNT_MATCHES_SOURCE, True, "The staged rows are exactly the source "
              "rows of this partition; gates the publishing transaction."),
        Check(publish.SCORES_ARE_FROM_THIS_RUN, True, "Every staged row was scored by this "
              "run (or the run it re-executes from failure) with the partition's model "
              "version; gates the publishing transaction."),
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
        Check(CHALLENGER_SCORED_THE_SAME_ROWS, False, "Each challenger has exactly one "
              "published shadow score for every id the champion published for the day, and "
              "none for any other id."),
        Check(REALIZED_PERFORMANCE_WITHIN_THRESHOLDS, False, "Once the day's labels have "
              "landed, the realized metrics are within the thresholds set in `labels` (min_auc, "
              "max_log_loss, max_calibration_error, min_accuracy, max_rmse, max_mae); passes "
              "when none is set. The result says which were compared."),
        Check(PROMOTION_GATE, True, "The candidate's holdout metric clears the threshold and is "
              "not worse than the champion's on the same holdout by more than the tolerance."),
    )
}  # fmt: skip

SOURCE_CHECKS = (
    PARTITION_IS_NOT_EMPTY,
    FEATURES_MATCH_MODEL,
    IDS_ARE_NOT_NULL,
    IDS_ARE_UNIQUE,
    ROW_COUNT_WITHIN_LIMIT,
    NULL_RATES_BELOW_THRESHOLD,
    FEATURES_ARE_POPULATED,
    FEATURE_VALUES_ARE_FINITE,
    CATEGORIES_ARE_KNOWN,
)
# The checks on the rows' values: not evaluated when there are no usable rows.
PROFILE_CHECKS = (
    IDS_ARE_NOT_NULL,
    IDS_ARE_UNIQUE,
    NULL_RATES_BELOW_THRESHOLD,
    FEATURES_ARE_POPULATED,
    FEATURE_VALUES_ARE_FINITE,
    CATEGORIES_ARE_KNOWN,
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
    passthrough = Contract.of(spec.output_contract[c] for c in spec.output.passthrough)
    return (
        problems
        + model.feature_contract().violations(schema)
        + [f"passthrough {p}" for p in passthrough.violations(schema)]
    )


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
        return results + [
            _result(name, False, "not evaluated: no usable rows") for name in PROFILE_CHECKS
        ]
    return results + evaluate_profile(spec, profile)


def _result(
    name: str, passed: bool, description: str, metadata: dict[str, Any] | None = None
) -> dg.AssetCheckResult:
    """A result with the registry's severity: ERROR for blocking checks, else WARN."""
    return dg.AssetCheckResult(
        check_name=name,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR
        if REGISTRY[name].blocking
        else dg.AssetCheckSeverity.WARN,
        description=description,
        metadata=metadata or {},
    )


def _listed(counts: Mapping[str, float], rows: int) -> str:
    return ", ".join(f"{c}={n / rows:.1%}" for c, n in sorted(counts.items()))


def evaluate_profile(spec: PipelineSpec, profile: FeatureProfile) -> list[dg.AssetCheckResult]:
    """The checks on the exported values (FeatureProfile: one scan, NaN counted as missing)."""
    rows = profile.rows or 1
    t = spec.checks
    rates = {c: n / rows for c, n in profile.missing.items()}
    warn = {c: r for c, r in rates.items() if r > t.null_rate_overrides.get(c, t.max_null_rate)}
    block = {
        c: profile.missing[c]
        for c, r in rates.items()
        if profile.rows and r >= t.blocking_null_rate_overrides.get(c, t.blocking_null_rate)
    }
    infinite = {c: n for c, n in profile.infinite.items() if n}
    unseen = {c: n for c, n in profile.unseen.items() if n}
    max_rate = max(rates.values(), default=0.0)
    return [
        _result(IDS_ARE_NOT_NULL, profile.null_ids == 0,
                f"{profile.null_ids} rows without an id", {"null_ids": profile.null_ids}),
        _result(IDS_ARE_UNIQUE, profile.duplicate_ids == 0,
                f"{profile.duplicate_ids} ids occur more than once",
                {"duplicate_ids": profile.duplicate_ids}),
        _result(NULL_RATES_BELOW_THRESHOLD, not warn,
                "missing rate over threshold: "
                + ", ".join(f"{c}={r:.1%}" for c, r in sorted(warn.items()))
                if warn else f"max missing rate {max_rate:.1%}",
                {"max_null_rate": max_rate}),
        _result(FEATURES_ARE_POPULATED, not block,
                f"missing (null or NaN) in too many rows: {_listed(block, rows)}"
                if block else "every feature is populated", {"blocked_features": len(block)}),
        _result(FEATURE_VALUES_ARE_FINITE, not infinite,
                f"infinite values: {', '.join(f'{c}={n}' for c, n in sorted(infinite.items()))}"
                if infinite else "no infinite values",
                {"infinite_values": sum(infinite.values())}),
        _result(CATEGORIES_ARE_KNOWN, not unseen,
                f"categories the model has not seen: {_listed(unseen, rows)}"
                if unseen else "every category is known",
                {"unseen_values": sum(unseen.values())}),
    ]  # fmt: skip


def nothing_new(export: FeatureExport, published: int) -> list[dg.AssetCheckResult]:
    """Incremental mode, every id of the partition already published: an idempotent no-op."""
    note = f"nothing new to score: {published} rows already published for the partition"
    return [_result(name, True, note) for name in SOURCE_CHECKS if name != ROW_COUNT_WITHIN_LIMIT]


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


def gated(
    spec: PipelineSpec, context: Any, stage: str, publication: Callable[[], Published]
) -> Generator[dg.AssetCheckResult, None, Published]:
    """Run a gated publication: its result, or (when a gate or the warehouse refuses it) the
    failed gates as check results and a failure saying that nothing was published.
    `staged, gates = yield from checks.gated(...)`."""
    try:
        return publication()
    except publish.PublicationRejected as rejected:
        yield from gate_results(rejected.gates)
        raise fail(spec, context, stage, f"nothing published: {rejected}") from rejected
    except WarehouseError as err:
        raise fail(spec, context, stage, f"nothing published: {err}") from err


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
