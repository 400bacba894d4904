"""Reason codes (models/reasons.py): the top contributions, the rows they are paid for, and the
stable id hash that picks a sample."""

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest
from upath import UPath

from batch_inference_assets.models import compiled, reasons
from batch_inference_assets.models.kinds import PythonPredictor
from batch_inference_assets.models.lightgbm_model import LightGBMPredictor
from batch_inference_assets.spec import ExplainSpec, PipelineSpec

NAMES = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2_000, len(NAMES)))
    y = (x[:, 0] + x[:, 1] * x[:, 2] - 0.3 * x[:, 3] > 0).astype(float)
    params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(x, y, feature_name=NAMES), num_boost_round=20)


def matrix(rows: int, seed: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, len(NAMES)))


def test_top_reasons_rank_by_absolute_contribution_with_ties_in_feature_order() -> None:
    contrib = np.array(
        [
            [0.1, -0.5, 0.3, 0.0, 0.2, 1.0],  # -0.5 first: the size counts, not the sign
            [0.2, 0.2, -0.2, 0.2, 0.1, -1.0],  # four tied: the first three features win
        ]
    )
    got = reasons.top_reasons(contrib, 3)
    assert got.features.tolist() == [[1, 2, 4], [0, 1, 2]]
    assert got.contributions.tolist() == [[-0.5, 0.3, 0.2], [0.2, 0.2, -0.2]]
    np.testing.assert_allclose(got.rest, [0.1 + 0.0 + 1.0, 0.2 + 0.1 - 1.0])
    np.testing.assert_allclose(got.contributions.sum(axis=1) + got.rest, contrib.sum(axis=1))


def test_more_reasons_than_features_leaves_the_extra_ones_null() -> None:
    got = reasons.top_reasons(np.array([[0.1, -0.4, 2.0]]), 4)  # two features and the bias
    assert got.features.tolist() == [[1, 0, -1, -1]]
    assert got.rest.tolist() == [2.0]
    cols = reasons.arrow_columns(got, np.array([0]), 1, ["x", "y"])
    assert [cols[f"reason_{i}"][0].as_py() for i in range(1, 5)] == ["y", "x", None, None]
    assert cols["reason_3_contribution"].null_count == 1


def test_reason_columns_name_the_largest_contributions_and_sum_to_the_margin(
    booster: lgb.Booster,
) -> None:
    x = matrix(500)
    cols = reasons.reason_columns(booster, x, NAMES, top_k=2)
    assert list(cols) == reasons.column_names(2)
    contrib = np.asarray(booster.predict(x, pred_contrib=True))
    expected = np.argsort(-np.abs(contrib[:, :-1]), axis=1, kind="stable")[:, :2]
    assert cols["reason_1"].to_pylist() == [NAMES[j] for j in expected[:, 0]]
    assert cols["reason_2"].to_pylist() == [NAMES[j] for j in expected[:, 1]]
    total = sum(cols[c].to_numpy() for c in cols if c.endswith("contribution"))
    np.testing.assert_allclose(total, booster.predict(x, raw_score=True), atol=1e-12)
    np.testing.assert_allclose(1 / (1 + np.exp(-total)), booster.predict(x), atol=1e-12)


def test_only_the_given_rows_are_explained_the_others_are_null(booster: lgb.Booster) -> None:
    x = matrix(50)
    rows = np.array([3, 17, 40])
    cols = reasons.reason_columns(booster, x, NAMES, top_k=3, rows=rows)
    full = reasons.reason_columns(booster, x, NAMES, top_k=3)
    for name, column in cols.items():
        assert len(column) == 50
        assert np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False)).tolist() == [
            3,
            17,
            40,
        ]
        assert column.take(rows).to_pylist() == full[name].take(rows).to_pylist()
    empty = reasons.reason_columns(booster, x, NAMES, top_k=3, rows=np.array([], dtype=int))
    assert all(c.null_count == 50 for c in empty.values())


def test_column_names_are_the_specs_reason_columns() -> None:
    spec = PipelineSpec.model_validate(
        {
            "name": "p",
            "start_date": "2026-01-01",
            "features": {"sql": "SELECT 1 AS id", "id_columns": ["id"]},
            "model": {"name": "m", "kind": "lightgbm_binary"},
            "output": {
                "table": "t",
                "columns": [
                    {"name": "id", "type": "int64", "nullable": False},
                    {"name": "score", "type": "float64", "nullable": False},
                    {"name": "model_version", "type": "string", "nullable": False},
                    {"name": "scored_at", "type": "timestamp", "nullable": False},
                    {"name": "run_id", "type": "string", "nullable": False},
                    {"name": "partition_date", "type": "date", "nullable": False},
                ],
            },
            "explain": {"top_k": 4},
        }
    )
    assert [c.name for c in spec.reason_columns] == reasons.column_names(4)


def test_the_id_hash_is_pinned_and_ignores_integer_width_and_chunking() -> None:
    ids = pa.array(range(10_000), type=pa.int64())
    h = reasons.id_hash([ids])
    # Pinned: a change here would move every pipeline's sample to other customers.
    assert int(h[0]) == 12035550249420947055
    assert int(h[1]) == 6791897765849424158
    np.testing.assert_array_equal(reasons.id_hash([ids.cast(pa.int32())]), h)
    chunked = pa.chunked_array([ids.slice(0, 3_000), ids.slice(3_000)])
    np.testing.assert_array_equal(reasons.id_hash([chunked]), h)
    assert len(set(h.tolist())) == 10_000


def test_string_ids_hash_by_their_bytes_whatever_the_buffer() -> None:
    values = ["", "a", "b", "ab", "ba", "customer-00017", "é", "a" * 300]
    h = reasons.id_hash([pa.array(values)])
    assert len(set(h.tolist())) == len(values)
    sliced = pa.array(["pad", *values, "pad"]).slice(1, len(values))
    np.testing.assert_array_equal(reasons.id_hash([sliced]), h)
    np.testing.assert_array_equal(reasons.id_hash([pa.array(values, pa.large_string())]), h)
    np.testing.assert_array_equal(reasons.id_hash([pa.array(values).dictionary_encode()]), h)
    assert int(reasons.id_hash([pa.array(["customer-00017"])])[0]) == 6729875542890542418
    # Two id columns: the pair counts, not each value alone.
    a, b = pa.array(["x", "y"]), pa.array([1, 2])
    assert reasons.id_hash([a, b])[0] != reasons.id_hash([pa.array(["y", "x"]), b])[0]


def test_the_sample_is_about_the_rate_and_the_same_ids_every_time() -> None:
    ids = pa.array(range(100_000), type=pa.int64())
    rows = reasons.sample_rows([ids], 0.05)
    assert 4_700 < len(rows) < 5_300
    np.testing.assert_array_equal(reasons.sample_rows([ids], 0.05), rows)
    # An id's fate does not depend on the batch it arrives in.
    later = reasons.sample_rows([ids.slice(50_000)], 0.05) + 50_000
    np.testing.assert_array_equal(later, rows[rows >= 50_000])
    assert len(reasons.sample_rows([ids], 1.0)) == 100_000


def test_highest_breaks_ties_to_the_earlier_row_and_ranks_nan_last() -> None:
    scores = np.array([0.2, 0.9, 0.5, 0.9, np.nan, 0.5, 0.1])
    assert reasons.highest(scores, 2).tolist() == [1, 3]
    assert reasons.highest(scores, 3).tolist() == [1, 2, 3]
    assert reasons.highest(scores, 6).tolist() == [0, 1, 2, 3, 5, 6]
    assert reasons.highest(scores, 10).tolist() == list(range(7))


def test_top_rows_across_batches_are_the_shards_highest_scores() -> None:
    rng = np.random.default_rng(5)
    scores = np.round(rng.random(10_000), 3)  # many ties
    x = rng.normal(size=(10_000, 3))
    top = reasons.TopRows(250, 3)
    for start in range(0, 10_000, 777):
        top.add(scores[start : start + 777], x[start : start + 777])
    expected = np.lexsort((np.arange(10_000), -scores))[:250]
    assert top.positions.tolist() == sorted(expected.tolist())
    np.testing.assert_array_equal(top.x, x[top.positions])
    assert top.seen == 10_000


def test_a_shard_with_rows_top_k_explains_its_leaders_slice_by_slice(
    booster: lgb.Booster,
) -> None:
    x = matrix(1_000, seed=6)
    scores = np.asarray(booster.predict(x))
    ids = pa.array(range(1_000))
    explain = ExplainSpec(top_k=2, rows="top_k", row_count=40)
    explainer = reasons.ShardReasons(explain, _predictor(booster), NAMES, ["id"])
    for start in range(0, 1_000, 300):
        batch = pa.record_batch({"id": ids.slice(start, 300)})
        assert explainer.batch(batch, x[start : start + 300], scores[start : start + 300]) is None
    assert explainer.deferred
    explained = []
    for start in range(0, 1_000, 128):
        cols = explainer.columns_at(start, min(128, 1_000 - start))
        valid = cols["reason_1"].is_valid().to_numpy(zero_copy_only=False)
        explained += (np.flatnonzero(valid) + start).tolist()
    assert sorted(explained) == sorted(np.argsort(-scores, kind="stable")[:40].tolist())
    assert explainer.rows_explained == 40


def test_rows_sample_explains_the_sampled_ids_as_each_batch_is_scored(
    booster: lgb.Booster,
) -> None:
    x = matrix(2_000, seed=7)
    ids = pa.array(range(2_000))
    explain = ExplainSpec(top_k=1, rows="sample", sample_rate=0.1)
    explainer = reasons.ShardReasons(explain, _predictor(booster), NAMES, ["id"])
    cols = explainer.batch(pa.record_batch({"id": ids}), x, np.asarray(booster.predict(x)))
    assert cols is not None and not explainer.deferred
    valid = np.flatnonzero(cols["reason_1"].is_valid().to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(valid, reasons.sample_rows([ids], 0.1))


def test_only_lightgbm_predictors_can_explain() -> None:
    with pytest.raises(ValueError, match="need a LightGBM model, not PythonPredictor"):
        reasons.booster_of(object.__new__(PythonPredictor))


def _predictor(booster: lgb.Booster) -> LightGBMPredictor:
    return LightGBMPredictor(booster.model_to_string(), threads=1)


def test_the_compiled_predictor_is_explained_by_its_lightgbm_reference(
    booster: lgb.Booster, tmp_path: Path
) -> None:
    model_file = tmp_path / "model.txt"
    model_file.write_text(booster.model_to_string())
    cache = UPath(str(tmp_path / "compiled.o"))
    compiled.ensure_compiled(UPath(str(model_file)), cache)
    reference = _predictor(booster)
    predictor = compiled.CompiledPredictor(UPath(str(model_file)), cache, reference)
    assert reasons.booster_of(predictor) == (reference.booster, 1)
    x = matrix(300, seed=8)
    scores = predictor.predict(x)  # lleaves, verified against the reference on these rows
    assert predictor.kind == "lleaves"
    cols = reasons.reason_columns(reasons.booster_of(predictor)[0], x, NAMES, top_k=2)
    margin = sum(cols[c].to_numpy() for c in cols if c.endswith("contribution"))
    np.testing.assert_allclose(margin, np.log(scores / (1 - scores)), atol=1e-9)
