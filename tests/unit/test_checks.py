import dagster as dg
import pytest

from batch_inference_assets import load_spec
from batch_inference_assets.assets import checks
from dagster_defs.definitions import PIPELINES_DIR


@pytest.mark.parametrize(
    ("psi", "passed", "severity"),
    [
        (0.05, True, dg.AssetCheckSeverity.WARN),
        (0.15, False, dg.AssetCheckSeverity.WARN),
        (0.30, False, dg.AssetCheckSeverity.ERROR),
        (float("nan"), False, dg.AssetCheckSeverity.WARN),
    ],
)
def test_drift_severity_follows_thresholds(
    psi: float, passed: bool, severity: dg.AssetCheckSeverity
) -> None:
    spec = load_spec(PIPELINES_DIR / "churn" / "defs.yaml")  # warn at 0.1, error at 0.25
    score, feature = checks.evaluate_drift(spec, {"__score__": psi, "a": 0.01, "b": psi / 2})
    assert score.passed is passed
    if not passed:
        assert score.severity == severity
    assert feature.description.startswith("largest feature (b)")
