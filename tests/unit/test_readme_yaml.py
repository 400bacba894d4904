"""The README's pipeline YAML (blocks fenced ```` ```yaml pipeline ````) is valid as written:
each block's sections, put in place of the demo churn pipeline's, load."""

import re
from pathlib import Path

import pytest
import yaml

from batch_inference_assets import load_spec
from dagster_defs.definitions import PIPELINES_DIR
from tests.conftest import churn_yaml, write_pipeline

README = Path(__file__).parents[2] / "README.md"
BLOCK = re.compile(r"^```yaml pipeline\n(?P<body>.*?)^```", re.S | re.M)
BLOCKS = [m["body"] for m in BLOCK.finditer(README.read_text())]


def test_the_readme_has_pipeline_yaml() -> None:
    assert len(BLOCKS) >= 2  # passthrough and sinks at least


@pytest.mark.parametrize("body", BLOCKS, ids=[b.split(":", 1)[0] for b in BLOCKS])
def test_each_pipeline_yaml_block_loads(tmp_path: Path, body: str) -> None:
    sections = yaml.safe_load(body)
    for value in sections.values():  # a SQL file named as the demo names it: the demo's own
        if isinstance(value, dict) and "sql_file" in value:
            value["sql_file"] = str(PIPELINES_DIR / "churn" / value["sql_file"])
    spec = load_spec(write_pipeline(tmp_path, {**churn_yaml(), **sections}))
    loaded = spec.model_dump(mode="json")
    for value in sections.values():
        if isinstance(value, dict) and "sql_file" in value:  # read into `sql` at load
            value.pop("sql_file")
    for name, value in sections.items():  # every value written is the spec's, unchanged
        assert _within(value, loaded[name]), name


def _within(written: object, loaded: object) -> bool:
    """Whether everything `written` says is in `loaded` (which also has the defaults)."""
    if isinstance(written, dict):
        return isinstance(loaded, dict) and all(
            k in loaded and _within(v, loaded[k]) for k, v in written.items()
        )
    if isinstance(written, list):
        return (
            isinstance(loaded, list)
            and len(written) == len(loaded)
            and all(_within(w, x) for w, x in zip(written, loaded, strict=True))
        )
    return written == loaded
