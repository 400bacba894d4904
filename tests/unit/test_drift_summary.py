import math

from batch_inference_assets.stages import drift, stats
from batch_inference_assets.stages.drift import (
    Distances,
    DriftReport,
    PopulationDrift,
    summary_markdown,
)
from batch_inference_assets.stages.drift_profile import Population, Profile


def _drift(
    psi: dict[str, float], previous: dict[str, float] | None = None, rows: int = 1_000
) -> PopulationDrift:
    return PopulationDrift(
        rows=rows,
        reference=Distances(psi, {k: v / 2 for k, v in psi.items()}, {stats.SCORE_KEY: 0.03}),
        previous=Distances(previous, {}, {}) if previous is not None else None,
        null_rate={k: 0.1 for k in psi if k != stats.SCORE_KEY},
        unseen={"region": 0.02},
    )


def _report(
    previous: dict[str, float] | None, segments: dict[str, PopulationDrift] | None = None
) -> DriftReport:
    psi = {stats.SCORE_KEY: 0.05, "tenure": 0.01, "region": 0.31, "age": 0.12, "nps": math.nan}
    profile = Profile("v1", Population(100, {}, {}, {}), {})
    references = {k: 0.05 for k in psi if k != stats.SCORE_KEY}
    return DriftReport("v1", profile, _drift(psi, previous), segments or {}, references)


def test_the_summary_leads_with_the_score_then_the_features_that_moved_most() -> None:
    text = summary_markdown(_report({stats.SCORE_KEY: 0.02, "region": 0.2}), 0.1, 0.25, worst=3)
    rows = [line for line in text.splitlines() if line.startswith("| **")]
    assert rows == [
        "| **score** | 0.0500 | ok | 0.0250 | 0.0300 | - | - | 0.0200 |",
        "| **region** | 0.3100 | ERROR | 0.1550 | - | 10.0% (5.0%) | 2.0% | 0.2000 |",
        "| **age** | 0.1200 | warn | 0.0600 | - | 10.0% (5.0%) | - | - |",
        "| **tenure** | 0.0100 | ok | 0.0050 | - | 10.0% (5.0%) | - | - |",
    ]
    assert "1 more features" in text  # nps, which had nothing to compare, is not hidden above
    assert "segment" not in text.lower()  # none without drift.segment_by


def test_a_first_day_has_no_previous_column_values() -> None:
    text = summary_markdown(_report(None), 0.1, 0.25, worst=10)
    assert "| **nps** | - | n/a | - | - | 10.0% (5.0%) | - | - |" in text
    assert "more features" not in text


def test_the_worst_segment_is_named_leaving_out_its_own_column() -> None:
    # In region=north the region feature moved by construction: it does not make it the worst.
    north = _drift({stats.SCORE_KEY: 0.02, "region": 5.0, "age": 0.05})
    south = _drift({stats.SCORE_KEY: 0.08, "region": 4.0, "age": 0.3}, {stats.SCORE_KEY: 0.01})
    other = _drift({stats.SCORE_KEY: math.nan, "region": math.nan, "age": math.nan})
    segments = {"region=north": north, "region=south": south, "region=(other)": other}
    report = _report(None, segments)
    text = summary_markdown(report, 0.1, 0.25, worst_segments=2)
    assert (
        "**Worst segment: region=south** (1,000 rows): score PSI 0.0800, largest feature "
        "PSI 0.3000 (age)." in text
    )
    assert len(text) <= drift.SUMMARY_CHARS  # on the page: the UI hides longer Markdown
    table = drift.segments_markdown(report, worst=2) or ""
    rows = [line for line in table.splitlines() if line.startswith("| region=")]
    assert rows == [
        "| region=south | 1,000 | 0.0800 | 0.0400 | 0.0300 | age | 0.3000 | 0.0100 |",
        "| region=north | 1,000 | 0.0200 | 0.0100 | 0.0300 | age | 0.0500 | - |",
    ]
    assert "1 more segments" in table


def test_a_small_segment_is_listed_but_not_named_the_worst() -> None:
    # 80 rows: a PSI of 0.12 is about what sampling alone gives (~10/80).
    small = _drift({stats.SCORE_KEY: 0.9, "age": 0.1}, rows=80)
    large = _drift({stats.SCORE_KEY: 0.15, "age": 0.02}, rows=drift.MIN_RANKED_ROWS)
    segments = {"plan=a|b": small, "plan=c": large}
    report = _report(None, segments)
    assert drift.segments_by_drift(report) == ["plan=c", "plan=a|b"]
    text = summary_markdown(report, 0.1, 0.25)
    assert "**Worst segment: plan=c**" in text
    table = drift.segments_markdown(report) or ""
    assert "| plan=a\\|b | 80 | 0.9000 |" in table  # the value's own | does not split the cell
