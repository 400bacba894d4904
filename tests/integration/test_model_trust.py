"""Runs against a model store someone else can write to: a planted compiled object never runs,
edited metadata fails the run, and no name, alias or ref reaches outside the store."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from batch_inference_assets import PipelineSpec
from batch_inference_assets.models import compiled
from batch_inference_assets.models.lightgbm_model import LightGBMPredictor
from batch_inference_assets.stages import model as model_stage
from tests.conftest import DAY, SEED_CUSTOMERS, Materialize, failure_message, read_table

REPO = Path(__file__).resolve().parents[2]

# What an attacker compiles: lleaves' entry point, leaving a marker when it runs.
PLANTED_C = """
#include <stdio.h>
void forest_root(double *data, double *out, int start, int end) {
  FILE *f = fopen(MARKER, "w");
  if (f) { fputs("planted code ran\\n", f); fclose(f); }
  for (int i = start; i < end; i++) out[i] = 0.5;
}
"""


def _planted_object(folder: Path, marker: Path) -> bytes:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler to build the planted object")
    (folder / "planted.c").write_text(PLANTED_C)
    subprocess.run(
        [cc, "-c", "-O1", "-fno-pic", "-mcmodel=large", f'-DMARKER="{marker}"',
         "-o", str(folder / "planted.o"), str(folder / "planted.c")],
        check=True, capture_output=True,
    )  # fmt: skip
    return (folder / "planted.o").read_bytes()


def _with_predictor(spec: PipelineSpec, predictor: str) -> PipelineSpec:
    return spec.model_copy(update={"model": spec.model.model_copy(update={"predictor": predictor})})


def _shard_predictors(result: Any) -> set[str]:
    return {
        e.event_specific_data.metadata["predictor"].value
        for e in result.all_events
        if e.is_successful_output and "score_shard[" in (e.step_key or "")
    }


def test_a_planted_compiled_object_is_never_loaded(
    materialize: Materialize,
    resources: dict[str, Any],
    churn_spec: PipelineSpec,
    tmp_path: Path,
) -> None:
    assert materialize(DAY).success
    stock = read_table(resources).select(["customer_id", "score"])
    store = resources["model_store"]
    handle = store.load("churn", "champion")
    cache = Path(compiled.cache_path(handle))
    marker = tmp_path / "planted-code-ran"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(_planted_object(tmp_path, marker))

    # What every shard does: no hash was recorded for this object, so LightGBM scores.
    predictor, warning = model_stage.predictor_for(churn_spec, handle, store)
    assert isinstance(predictor, LightGBMPredictor)
    assert warning is not None
    assert warning.startswith(f"pipeline 'churn', model churn@{handle.version}: ")
    assert f"refusing compiled object {cache}" in warning
    assert warning.endswith("scoring with stock LightGBM")

    result = materialize(DAY)  # predictor: auto, the default
    assert result.success
    assert _shard_predictors(result) == {"lightgbm"}
    assert not marker.exists()
    scored = read_table(resources).select(["customer_id", "score"])
    assert scored.num_rows == SEED_CUSTOMERS and scored.equals(stock)

    failed = materialize(DAY, _with_predictor(churn_spec, "compiled"))
    assert not failed.success
    message = failure_message(failed)
    assert f"model churn@{handle.version}: refusing compiled object {cache}" in message
    assert not marker.exists()
    assert cache.read_bytes() == (tmp_path / "planted.o").read_bytes()  # kept, for a look

    # The planted object is live code: loaded as lleaves loads a cache, it runs.
    import lleaves

    live = lleaves.Model(model_file=handle.uri)
    live.compile(cache=str(cache))
    live.predict(np.zeros((1, live.num_feature())), n_jobs=1)
    assert marker.read_text() == "planted code ran\n"


def test_a_model_compiled_here_is_verified_and_used(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    first = materialize(DAY, _with_predictor(churn_spec, "compiled"))
    assert first.success and _shard_predictors(first) == {"lleaves"}
    handle = resources["model_store"].load("churn", "champion")
    cache = Path(compiled.cache_path(handle))
    assert (cache.parent / (cache.name + ".sha256")).read_text().split()[1] == cache.name
    assert _shard_predictors(materialize(DAY)) == {"lleaves"}  # auto: the verified object

    data = cache.read_bytes()
    cache.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one byte changed: refused
    assert _shard_predictors(materialize(DAY)) == {"lightgbm"}


def test_a_champion_whose_metadata_was_edited_fails_the_run(
    materialize: Materialize, resources: dict[str, Any], root: Path
) -> None:
    version = (root / "models" / "churn" / "aliases" / "champion").read_text()
    meta_file = root / "models" / "churn" / "versions" / version / "meta.json"
    meta = json.loads(meta_file.read_text())
    features = meta["features"]
    categorical = next(f for f in features if f["categories"])
    categorical["categories"].reverse()
    features[0], features[1] = features[1], features[0]
    meta_file.write_text(json.dumps(meta, indent=1))

    result = materialize(DAY)
    assert not result.success
    message = failure_message(result)
    assert f"model 'churn' version {version} is corrupt: features changed" in message
    assert read_table(resources).num_rows == 0  # nothing published


def test_a_model_ref_outside_the_store_fails_the_run(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    # model_copy skips the spec's validation: the store refuses it too.
    ref = "../../../../x/champion"
    spec = churn_spec.model_copy(update={"model": churn_spec.model.model_copy(update={"ref": ref})})
    result = materialize(DAY, spec)
    assert not result.success
    assert f"model 'churn': model ref {ref!r} is neither an alias" in failure_message(result)


def _files(root: Path) -> set[Path]:
    return {p for p in root.parent.rglob("*") if not p.is_relative_to(root / "models")}


@pytest.mark.parametrize(
    "args",
    [
        ["list", "../../x"],
        ["promote", "churn", "{version}", "--alias", "../../../escaped"],
        ["promote", "../../../x", "{version}"],
        ["promote", "churn", "../../x"],
    ],
)
def test_the_models_cli_refuses_names_outside_the_store(root: Path, args: list[str]) -> None:
    version = (root / "models" / "churn" / "aliases" / "champion").read_text()
    before = _files(root)
    env = {**os.environ, "BATCH_INFERENCE_ROOT": str(root), "BATCH_INFERENCE_DEPLOYMENT": "local"}
    result = subprocess.run(
        [sys.executable, "-m", "dagster_defs.models_cli",
         *(a.format(version=version) for a in args)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search("is not a plain identifier|is not a version|is neither an alias", lines[0])
    assert _files(root) == before
