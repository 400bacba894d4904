from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.models.lightgbm_model import (
    LightGBMPredictor,
    TrainedModel,
    train_lightgbm,
)
from batch_inference_assets.models.matrix import feature_matrix
from batch_inference_assets.models.store import ModelStore, ModelStoreError, content_version
from batch_inference_assets.records import FeatureInfo


def _table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    cat = rng.choice(["a", "b", "c"], n)
    y = (x + (cat == "a") + rng.normal(0, 0.5, n) > 0.5).astype(np.int64)
    return pa.table({"x": x, "cat": cat, "y": y})


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    return train_lightgbm(
        "lightgbm_binary", _table(3000, 1), _table(1000, 2), ["x", "cat"], "y", num_boost_round=20
    )


def test_training_is_deterministic_and_learns(trained: TrainedModel) -> None:
    again = train_lightgbm(
        "lightgbm_binary", _table(3000, 1), _table(1000, 2), ["x", "cat"], "y", num_boost_round=20
    )
    assert content_version(again.model_text) == content_version(trained.model_text)
    assert trained.metrics["holdout_auc"] > 0.8
    assert [f.type for f in trained.features] == ["float64", "string"]
    assert trained.features[1].categories == ["a", "b", "c"]
    assert set(trained.reference) == {"x", "cat", "__score__"}


def test_matrix_codes_categories_and_missing_values() -> None:
    feats = [
        FeatureInfo(name="x", type="float64"),
        FeatureInfo(name="c", type="string", categories=["a", "b"]),
    ]
    t = pa.table({"x": pa.array([1, None, 3], pa.int64()), "c": ["b", "zzz", None]})
    m = feature_matrix(t, feats)
    assert m.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(m, np.array([[1.0, 1.0], [np.nan, np.nan], [3.0, np.nan]]))


def test_store_round_trip_by_alias_and_version(tmp_path: Path, trained: TrainedModel) -> None:
    store = ModelStore(store=LocalObjectStore(root=str(tmp_path)))
    version = store.save("m", trained)
    assert store.resolve("m", "champion") == version
    assert store.resolve("m", version) == version
    handle = store.load("m", "champion")
    assert handle.version == version and [f.name for f in handle.features] == ["x", "cat"]
    predictor = LightGBMPredictor(store.read_model_text(handle))
    scores = predictor.predict(feature_matrix(_table(10, 3), handle.features))
    assert scores.shape == (10,) and ((scores >= 0) & (scores <= 1)).all()


def test_store_refuses_unknown_refs_and_corrupt_files(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = ModelStore(store=LocalObjectStore(root=str(tmp_path)))
    version = store.save("m", trained)
    with pytest.raises(ModelStoreError, match="no version or alias 'staging'"):
        store.load("m", "staging")
    model_file = tmp_path / "m" / "versions" / version / "model.txt"
    model_file.write_text(model_file.read_text().replace("tree", "tre", 1))
    with pytest.raises(ModelStoreError, match="is corrupt"):
        store.load("m", "champion")
    model_file.unlink()
    with pytest.raises(ModelStoreError, match="missing file"):
        store.load("m", "champion")
