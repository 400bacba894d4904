import math

from batch_inference_assets.stages import stats
from batch_inference_assets.stages.drift import DriftReport, summary_markdown


def _report(previous: dict[str, float] | None) -> DriftReport:
    psi = {stats.SCORE_KEY: 0.05, "tenure": 0.01, "region": 0.31, "age": 0.12, "nps": math.nan}
    return DriftReport("v1", {}, psi, previous)


def test_the_summary_leads_with_the_score_then_the_features_that_moved_most() -> None:
    text = summary_markdown(_report({stats.SCORE_KEY: 0.02, "region": 0.2}), 0.1, 0.25, worst=3)
    rows = [line for line in text.splitlines() if line.startswith("| **")]
    assert rows == [
        "| **score** | 0.0500 | ok | 0.0200 |",
        "| **region** | 0.3100 | ERROR | 0.2000 |",
        "| **age** | 0.1200 | warn | - |",
        "| **tenure** | 0.0100 | ok | - |",
    ]
    assert "1 more features" in text  # nps, which had nothing to compare, is not hidden above


def test_a_first_day_has_no_previous_column_values() -> None:
    text = summary_markdown(_report(None), 0.1, 0.25, worst=10)
    assert "| **nps** | - | n/a | - |" in text
    assert "more features" not in text
