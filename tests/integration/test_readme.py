"""README blocks that users copy: run as written."""

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DAY, SEED_CUSTOMERS, read_table

REPO = Path(__file__).parents[2]


def readme_block(after: str, language: str = "python") -> str:
    """The first fenced block of `language` after the text `after` in the README."""
    text = (REPO / "README.md").read_text()
    start = text.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match, f"no {language} block after {after!r}"
    return match.group(1)


def test_the_notebook_snippet_runs_as_written(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The repository root after `make demo`: the code and the demo's `.data`.
    (tmp_path / ".data").symlink_to(root)
    (tmp_path / "dagster_defs").symlink_to(REPO / "dagster_defs")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(readme_block("**From a notebook**"), scope)  # the README's own code

    assert DAY == "2026-10-15"  # the day the snippet names
    scores, result = scope["scores"], scope["result"]
    assert len(scores) == SEED_CUSTOMERS and scores["score"].between(0, 1).all()
    assert (tmp_path / "scores.parquet").exists()
    assert result.success
    assert (
        read_table(scope["resources"], "WHERE partition_date = ?", (DAY,)).num_rows
        == SEED_CUSTOMERS
    )
