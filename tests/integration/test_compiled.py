"""The opt-in compiled predictor: same scores as LightGBM, cached per version, safe fallback."""

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from upath import UPath

from batch_inference_assets import PipelineSpec
from batch_inference_assets.models import compiled
from batch_inference_assets.models.lightgbm_model import LightGBMPredictor, train_lightgbm
from batch_inference_assets.models.matrix import feature_matrix
from tests.conftest import DAY, SEED_CUSTOMERS, Materialize, read_table


def test_compiled_scores_match_lightgbm_and_are_cached(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    assert materialize(DAY).success
    stock = read_table(resources).select(["customer_id", "score"])
    spec = churn_spec.model_copy(
        update={"model": churn_spec.model.model_copy(update={"predictor": "compiled"})}
    )
    first = materialize(DAY, spec)
    assert first.success
    model_md = first.asset_materializations_for_node("churn__model")[0].metadata
    assert model_md["compiled_now"].value is True
    assert Path(model_md["compiled"].value).stat().st_size > 0
    kinds = {
        e.event_specific_data.metadata["predictor"].value
        for e in first.all_events
        if e.is_successful_output and "score_shard[" in (e.step_key or "")
    }
    assert kinds == {"lleaves"}
    fast = read_table(resources).select(["customer_id", "score"])
    assert fast.num_rows == SEED_CUSTOMERS
    assert fast.column("customer_id").equals(stock.column("customer_id"))
    diff = np.abs(fast.column("score").to_numpy() - stock.column("score").to_numpy())
    assert diff.max() < 1e-9

    again = materialize(DAY, spec)  # the next run reuses the cached object
    assert (
        again.asset_materializations_for_node("churn__model")[0].metadata["compiled_now"].value
        is False
    )


def _tiny(seed: int) -> Any:
    rng = np.random.default_rng(seed)
    t = pa.table({"x": rng.normal(size=500), "y": rng.integers(0, 2, 500)})
    return train_lightgbm("lightgbm_binary", t, t, ["x"], "y", num_boost_round=3)


def test_a_compiled_object_that_disagrees_falls_back_to_lightgbm(tmp_path: Path) -> None:
    a, b = _tiny(1), _tiny(2)
    (tmp_path / "a.txt").write_text(a.model_text)
    (tmp_path / "b.txt").write_text(b.model_text)
    cache = UPath(str(tmp_path / "a.o"))
    assert compiled.ensure_compiled(UPath(str(tmp_path / "a.txt")), cache)
    assert not compiled.ensure_compiled(UPath(str(tmp_path / "a.txt")), cache)  # cached
    # b's predictor given a's compiled code: verification must reject it.
    reference = LightGBMPredictor(b.model_text)
    predictor = compiled.CompiledPredictor(UPath(str(tmp_path / "b.txt")), cache, reference)
    x = feature_matrix(pa.table({"x": np.linspace(-3, 3, 100)}), b.features)
    with pytest.warns(UserWarning, match="scoring with LightGBM instead"):
        scores = predictor.predict(x)
    assert predictor.kind.startswith("lightgbm")
    np.testing.assert_array_equal(scores, reference.predict(x))


def test_a_cached_compiled_predictor_is_used_automatically_unless_lightgbm_is_asked_for(
    materialize: Materialize, churn_spec: PipelineSpec
) -> None:
    def predictors(spec: PipelineSpec) -> set[str]:
        result = materialize(DAY, spec)
        assert result.success
        return {
            e.event_specific_data.metadata["predictor"].value
            for e in result.all_events
            if e.is_successful_output and "score_shard[" in (e.step_key or "")
        }

    def with_predictor(kind: str) -> PipelineSpec:
        return churn_spec.model_copy(
            update={"model": churn_spec.model.model_copy(update={"predictor": kind})}
        )

    assert predictors(churn_spec) == {"lightgbm"}  # auto, nothing cached yet
    assert predictors(with_predictor("compiled")) == {"lleaves"}  # compiles and caches
    assert predictors(churn_spec) == {"lleaves"}  # auto: the cached object is used
    assert predictors(with_predictor("lightgbm")) == {"lightgbm"}
