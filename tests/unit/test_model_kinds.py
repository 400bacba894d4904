"""Model kinds, aliases, python models, the promotion gate, and kind-aware specs."""

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from batch_inference_assets.contracts import Column, Contract
from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.models import kinds
from batch_inference_assets.models.lightgbm_model import train_lightgbm
from batch_inference_assets.models.matrix import feature_matrix
from batch_inference_assets.models.store import ModelStore, ModelStoreError
from batch_inference_assets.records import CandidateModel, FeatureInfo, ModelHandle
from batch_inference_assets.spec import SpecError, parse_spec
from batch_inference_assets.stages.training import gate
from tests.conftest import churn_yaml


def _table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    cat = rng.choice(["a", "b", "c"], n)
    klass = np.where(x > 0.7, "high", np.where(x < -0.7, "low", "mid"))
    return pa.table({"x": x, "cat": cat, "klass": klass, "amount": 3 * x + (cat == "a")})


def _store(tmp_path: Path) -> ModelStore:
    return ModelStore(store=LocalObjectStore(root=str(tmp_path)))


def test_multiclass_probabilities_label_and_score() -> None:
    trained = train_lightgbm(
        "lightgbm_multiclass", _table(3000, 1), _table(1000, 2), ["x", "cat"], "klass", 30
    )
    assert trained.classes == ["high", "low", "mid"]
    assert trained.metrics["holdout_accuracy"] > 0.9
    handle_like = _handle(trained, "lightgbm_multiclass")
    predictor = kinds.load_predictor("lightgbm_multiclass", trained.model_text)
    produced = ["score", "label", "prob_high", "prob_low", "prob_mid"]
    output = Contract.of([])
    scorer = kinds.Scorer(handle_like, predictor, output, produced)
    batch = _table(50, 3).to_batches()[0]
    scored = scorer.score(batch, feature_matrix(batch, handle_like.features))
    probs = np.column_stack([scored.columns[f"prob_{c}"].to_numpy() for c in trained.classes])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(scored.score, probs.max(axis=1))
    labels = scored.columns["label"].to_pylist()
    assert labels == [trained.classes[i] for i in probs.argmax(axis=1)]
    assert set(labels) == {"high", "low", "mid"}


def test_regression_trains_with_error_metrics() -> None:
    trained = train_lightgbm(
        "lightgbm_regression", _table(3000, 1), _table(1000, 2), ["x", "cat"], "amount", 50
    )
    assert trained.metrics["holdout_rmse"] < 0.5 < 3.0  # the target's spread is ~3
    assert trained.classes == []


def _handle(trained: Any, kind: str) -> ModelHandle:
    return ModelHandle(
        name="m", version="0" * 16, kind=kind, uri="-", features=trained.features,
        reference=trained.reference, classes=trained.classes,
    )  # fmt: skip


def test_aliases_resolve_to_exact_versions_never_newest(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = train_lightgbm(
        "lightgbm_regression", _table(500, 1), _table(200, 2), ["x"], "amount", 5
    )
    second = train_lightgbm(
        "lightgbm_regression", _table(500, 4), _table(200, 2), ["x"], "amount", 5
    )
    v1 = store.save("m", first, extra={"training_window": {"start": "2026-10-01"}})
    v2 = store.save("m", second, aliases=("candidate",))  # newer, but not the champion
    assert v1 != v2
    assert store.resolve("m", "champion") == v1
    assert store.resolve("m", "candidate") == v2
    assert store.load("m", v2).version == v2  # a version pins itself
    meta = store.read_meta("m", v1)
    assert meta["training_window"] == {"start": "2026-10-01"}
    assert meta["kind"] == "lightgbm_regression" and "holdout_rmse" in meta["metrics"]
    store.set_alias("m", "champion", v2)
    assert store.load("m", "champion").version == v2


def test_python_models_are_pinned_to_their_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "mymodel.py"
    module.write_text(
        "import pandas as pd\n"
        "def predict(df):\n"
        "    return pd.DataFrame({'score': df['x'] * 0 + 0.5})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    store = _store(tmp_path / "models")
    sample = _table(200, 1)
    version = store.register_python("rule", "mymodel:predict", sample, ["x", "cat"])
    handle = store.load("rule", "champion")
    assert handle.kind == "python" and handle.version == version
    assert [f.name for f in handle.features] == ["x", "cat"]

    module.write_text(module.read_text().replace("0.5", "0.6"))
    importlib.reload(sys.modules["mymodel"])
    with pytest.raises(ModelStoreError, match="source of mymodel:predict changed"):
        store.load("rule", version)
    # Registering the new code is a new version; the old one stays as it was.
    assert store.register_python("rule", "mymodel:predict", sample, ["x", "cat"]) != version


def test_python_registration_refuses_bad_paths_and_outputs(tmp_path: Path) -> None:
    store = _store(tmp_path)
    sample = _table(50, 1)
    with pytest.raises(ValueError, match=r"must look like 'package\.module:function'"):
        store.register_python("rule", "tests.predict_fns.churn_rule", sample, ["x"])
    with pytest.raises(ValueError, match="cannot import predict_fn"):
        store.register_python("rule", "tests.predict_fns:nope", sample, ["x"])
    features = ["contract", "num_support_tickets"]
    with pytest.raises(ModelStoreError, match="one row per input row"):
        store.register_python("rule", "tests.predict_fns:one_row_short", _churn_like(), features)
    with pytest.raises(ModelStoreError, match=r"column 'score' is object, declared double"):
        store.register_python("rule", "tests.predict_fns:text_score", _churn_like(), features)
    with pytest.raises(ModelStoreError, match=r"raised KeyError.*'contract'"):
        store.register_python("rule", "tests.predict_fns:churn_rule", _churn_like(), ["x"])


def _churn_like() -> pa.Table:
    return pa.table(
        {"x": [1.0, 2.0, 3.0], "contract": ["month_to_month", "one_year", "two_year"],
         "num_support_tickets": [0, 3, 1]}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        ("undeclared_column", r"exactly the declared output columns .*undeclared \['extra'\]"),
        ("text_score", r"column 'score' is object, declared double"),
        ("one_row_short", r"returned 2 rows for 3 input rows"),
        # What dagster-pandas's column constraints catch: nulls where the contract has none,
        # numbers where it wants strings, booleans where it wants numbers.
        ("null_segment", r"column 'segment' has nulls, declared not null"),
        ("numeric_segment", r"column 'segment' is int64, declared string"),
        ("boolean_score", r"column 'score' is bool, declared double"),
        ("repeated_score", r"returned the columns \['score'\] more than once"),
    ],
)
def test_predict_fn_output_is_validated(fn: str, message: str) -> None:
    with pytest.raises(kinds.ModelOutputError, match=message) as raised:
        _python_scorer(fn).score(_churn_like().to_batches()[0], np.zeros((3, 2)))
    assert str(raised.value).startswith(f"predict_fn tests.predict_fns:{fn}")


def test_predict_fn_output_in_object_columns_is_accepted() -> None:
    from tests.predict_fns import churn_rule

    batch = _churn_like().to_batches()[0]
    scored = _python_scorer("object_columns").score(batch, np.zeros((3, 2)))
    expected = churn_rule(batch.to_pandas())
    np.testing.assert_allclose(scored.score, expected["score"].to_numpy())
    assert scored.columns["segment"].type == pa.string()
    assert scored.columns["segment"].to_pylist() == expected["segment"].tolist()


def _python_scorer(fn: str) -> kinds.Scorer:
    predictor = kinds.PythonPredictor(kinds.python_model_text(f"tests.predict_fns:{fn}"))
    features = [
        FeatureInfo(name="contract", type="string"),
        FeatureInfo(name="num_support_tickets", type="float64"),
    ]
    handle = _handle(SimpleNamespace(features=features, reference={}, classes=[]), "python")
    output = Contract.of([Column("score", "float64", False), Column("segment", "string", False)])
    return kinds.Scorer(handle, predictor, output, ["score", "segment"])


def _candidate(**kw: Any) -> CandidateModel:
    base: dict[str, Any] = {
        "pipeline": "p", "model": "m", "version": "c" * 16, "kind": "lightgbm_binary",
        "metric": "auc", "value": 0.80, "higher_is_better": True, "threshold": 0.75,
        "tolerance": 0.01, "champion_version": "a" * 16, "champion_value": 0.805,
        "window_start": "2026-10-01", "window_end": "2026-10-15", "train_rows": 1,
        "holdout_rows": 1, "seconds": 0.1,
    }  # fmt: skip
    return CandidateModel(**{**base, **kw})


def test_promotion_gate_threshold_and_tolerance() -> None:
    assert gate(_candidate())[0]  # 0.005 worse than the champion, within 0.01
    passed, why = gate(_candidate(champion_value=0.82))
    assert not passed and "reject" in why and "champion aaaa" in why
    assert not gate(_candidate(value=0.74, champion_value=None, champion_version=None))[0]
    assert gate(_candidate(champion_value=None, champion_version=None))[0]  # no champion yet
    # Lower is better for errors.
    rmse = {"metric": "rmse", "higher_is_better": False, "threshold": 5.0, "tolerance": 0.05}
    assert gate(_candidate(**rmse, value=4.0, champion_value=4.03))[0]
    assert not gate(_candidate(**rmse, value=4.2, champion_value=4.0))[0]
    assert not gate(_candidate(**rmse, value=5.5, champion_value=None, champion_version=None))[0]


@pytest.fixture
def raw_churn() -> dict[str, Any]:
    raw = churn_yaml()
    raw["features"]["sql"] = "SELECT * FROM {schema}.t WHERE snapshot_date = :partition_date"
    del raw["features"]["sql_file"]
    raw.pop("training")
    return raw


def _with(raw: dict[str, Any], kind: str, columns: list[dict[str, Any]]) -> dict[str, Any]:
    out = {**raw, "model": {**raw["model"], "kind": kind}}
    out["output"] = {**raw["output"], "columns": columns, "passthrough": []}
    out["exports"] = {}
    # The demo's sections that need its columns or its kind: not what these tests are about.
    for section in ("explain", "drift", "challengers", "labels"):
        out.pop(section, None)
    return out


SYSTEM = [
    {"name": "customer_id", "type": "int64"}, {"name": "score", "type": "float64"},
    {"name": "model_version", "type": "string"}, {"name": "scored_at", "type": "timestamp"},
    {"name": "run_id", "type": "string"}, {"name": "partition_date", "type": "date"},
]  # fmt: skip


def test_specs_declare_the_columns_of_their_kind(raw_churn: dict[str, Any]) -> None:
    multiclass = _with(
        raw_churn, "lightgbm_multiclass",
        [*SYSTEM, {"name": "label", "type": "string"}, {"name": "prob_a", "type": "float64"}],
    )  # fmt: skip
    assert parse_spec(multiclass).model_output_columns == ["score", "label", "prob_a"]
    bad = [
        (_with(raw_churn, "lightgbm_regression", [*SYSTEM, {"name": "label", "type": "int64"}]),
         "lightgbm_regression models have no label"),
        (_with(raw_churn, "lightgbm_multiclass", [*SYSTEM, {"name": "label", "type": "int64"}]),
         "must be string for lightgbm_multiclass"),
        (_with(raw_churn, "lightgbm_binary", [*SYSTEM, {"name": "prob_a", "type": "float64"}]),
         "'prob_a' is not produced by lightgbm_binary scoring"),
        ({**_with(raw_churn, "lightgbm_multiclass", SYSTEM),
          "model": {**raw_churn["model"], "kind": "lightgbm_multiclass", "predictor": "compiled"}},
         "compiled is not available for lightgbm_multiclass"),
    ]  # fmt: skip
    for raw, message in bad:
        with pytest.raises(SpecError, match=message):
            parse_spec(raw)
    # A python model declares whatever its predict_fn returns.
    python = _with(raw_churn, "python", [*SYSTEM, {"name": "segment", "type": "string"}])
    assert parse_spec(python).model_output_columns == ["score", "segment"]


def test_the_models_cli_lists_and_promotes_only_good_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dagster_defs.models_cli import main

    store = _store(tmp_path)
    first = train_lightgbm(
        "lightgbm_regression", _table(500, 1), _table(200, 2), ["x"], "amount", 5
    )
    second = train_lightgbm(
        "lightgbm_regression", _table(500, 4), _table(200, 2), ["x"], "amount", 5
    )
    v1 = store.save("m", first)
    v2 = store.save("m", second, aliases=("candidate",))
    assert main(["list", "m"], store) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[1:]] == [v1, v2]
    assert out[1].endswith("champion") and out[2].endswith("candidate")
    assert "rmse=" in out[1]

    assert main(["promote", "m", v2], store) == 0
    assert capsys.readouterr().out.strip() == f"m@champion: {v1} -> {v2}"
    assert store.resolve("m", "champion") == v2
    assert main(["promote", "m", "0123456789abcdef"], store) == 1
    assert "no version or alias" in capsys.readouterr().err
    assert store.resolve("m", "champion") == v2
