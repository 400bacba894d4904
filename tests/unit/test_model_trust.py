"""What the model store trusts: its versions hash the model and the metadata scoring reads, names
stay inside the store, and a cached compiled object runs only if it is the one we compiled."""

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from upath import UPath

from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.io.snowflake_warehouse import stage_path
from batch_inference_assets.io.warehouse import WarehouseError
from batch_inference_assets.models import compiled
from batch_inference_assets.models.lightgbm_model import (
    LightGBMPredictor,
    TrainedModel,
    train_lightgbm,
)
from batch_inference_assets.models.store import ModelStore, ModelStoreError, content_version
from batch_inference_assets.spec import SpecError, load_spec
from batch_inference_assets.stages.training import promote
from tests.conftest import churn_yaml, write_pipeline


def _table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    cat = rng.choice(["a", "b", "c"], n)
    y = (x + (cat == "a") + rng.normal(0, 0.5, n) > 0.5).astype(np.int64)
    return pa.table({"x": x, "cat": cat, "n": rng.normal(size=n), "y": y})


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    return train_lightgbm(
        "lightgbm_binary", _table(2000, 1), _table(500, 2), ["x", "cat", "n"], "y", 10
    )


def _store(tmp_path: Path) -> ModelStore:
    return ModelStore(store=LocalObjectStore(root=str(tmp_path / "models")))


def _edit_meta(store_root: Path, version: str, edit: Any) -> None:
    path = store_root / "models" / "m" / "versions" / version / "meta.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=1))


def _reverse_categories(meta: dict[str, Any]) -> None:
    meta["features"][1]["categories"].reverse()


def _swap_features(meta: dict[str, Any]) -> None:
    meta["features"][0], meta["features"][2] = meta["features"][2], meta["features"][0]


def _relabel_kind(meta: dict[str, Any]) -> None:
    meta["kind"] = "lightgbm_regression"


@pytest.mark.parametrize(
    ("edit", "field"),
    [(_reverse_categories, "features"), (_swap_features, "features"), (_relabel_kind, "kind")],
)
def test_a_model_whose_scoring_metadata_changed_is_refused(
    tmp_path: Path, trained: TrainedModel, edit: Any, field: str
) -> None:
    store = _store(tmp_path)
    version = store.save("m", trained)
    handle = store.load("m", "champion")  # verifies as saved
    _edit_meta(tmp_path, version, edit)
    with pytest.raises(ModelStoreError) as err:
        store.load("m", "champion")
    assert str(err.value).startswith(f"model 'm' version {version} is corrupt: {field} changed")
    # A handle resolved earlier but carrying other metadata does not verify with the file.
    forged = handle.model_copy(update={"features": list(reversed(handle.features))})
    with pytest.raises(ModelStoreError, match="changed on disk since it was resolved"):
        store.read_model_text(forged)


def test_the_version_covers_the_metadata_not_only_the_model_file(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = _store(tmp_path)
    cats = [f.model_copy(update={"categories": ["c", "b", "a"]}) if f.categories else f
            for f in trained.features]  # fmt: skip
    other = TrainedModel(trained.model_text, cats, trained.reference, trained.metrics)
    v1, v2 = store.save("m", trained), store.save("m", other)
    assert v1 != v2  # same model file, different categories: a different model
    assert store.load("m", v1).features[1].categories == ["a", "b", "c"]
    assert store.load("m", v2).features[1].categories == ["c", "b", "a"]


def test_a_version_stored_before_the_metadata_was_hashed_is_refused(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = _store(tmp_path)
    version = store.save("m", trained)
    meta = json.loads((tmp_path / "models/m/versions" / version / "meta.json").read_text())
    legacy = content_version(trained.model_text)  # how versions were named before
    folder = tmp_path / "models/m/versions" / legacy
    folder.mkdir(exist_ok=True)  # before this change, the version save wrote
    (folder / "model.txt").write_text(trained.model_text)
    meta.pop("manifest", None)
    (folder / "meta.json").write_text(json.dumps({**meta, "version": legacy}))
    with pytest.raises(ModelStoreError, match=f"model 'm' version {legacy} cannot be verified"):
        store.load("m", legacy)


def test_a_corrupt_model_file_is_named(tmp_path: Path, trained: TrainedModel) -> None:
    store = _store(tmp_path)
    version = store.save("m", trained)
    model_file = tmp_path / "models/m/versions" / version / "model.txt"
    model_file.write_text(model_file.read_text().replace("tree", "tre", 1))
    with pytest.raises(ModelStoreError, match=f"version {version} is corrupt: model.txt changed"):
        store.load("m", "champion")


BAD_NAMES = ["../x", "../../../../x/champion", "a/b", "..", ".", "", "x\n", "a.b", "-x"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_the_store_keeps_names_aliases_and_versions_inside_it(
    tmp_path: Path, trained: TrainedModel, bad: str
) -> None:
    store = _store(tmp_path)
    version = store.save("m", trained)
    calls = {
        "save name": lambda: store.save(bad, trained),
        "save alias": lambda: store.save("m", trained, aliases=(bad,)),
        "set_alias alias": lambda: store.set_alias("m", bad, version),
        "set_alias version": lambda: store.set_alias("m", "champion", bad),
        "set_alias name": lambda: store.set_alias(bad, "champion", version),
        "resolve name": lambda: store.resolve(bad, "champion"),
        "resolve ref": lambda: store.resolve("m", bad),
        "load name": lambda: store.load(bad, "champion"),
        "load ref": lambda: store.load("m", bad),
        "versions": lambda: store.versions(bad),
        "aliases": lambda: store.aliases(bad),
        "read_meta version": lambda: store.read_meta("m", bad),
        "promote alias": lambda: promote(store, "m", bad, version),
    }
    for what, call in calls.items():
        with pytest.raises(ModelStoreError, match=r"not a plain identifier|not a version|neither"):
            call()
            pytest.fail(f"{what} accepted {bad!r}")
    outside = sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "models"))
    assert outside == []
    assert store.resolve("m", "champion") == version


def test_an_alias_that_points_outside_the_store_is_refused(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = _store(tmp_path)
    store.save("m", trained)
    (tmp_path / "models/m/aliases/champion").write_text("../../../elsewhere")
    points = re.escape("alias 'champion' points at '../../../elsewhere'")
    with pytest.raises(ModelStoreError, match=points):
        store.load("m", "champion")


def _spec_error(tmp_path: Path, section: str, field: str, value: str) -> str:
    raw = churn_yaml()
    raw[section][field] = value
    path = write_pipeline(tmp_path, raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    return str(err.value)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("model", "ref", "../../../../x/champion"),
        ("model", "ref", "champion/../../x"),
        ("model", "name", "churn.v2"),
        ("training", "promote_alias", "../../../../x/champion"),
        ("training", "promote_alias", "champion\n"),
    ],
)
def test_the_spec_reports_model_names_that_are_not_plain_identifiers(
    tmp_path: Path, section: str, field: str, value: str
) -> None:
    message = _spec_error(tmp_path, section, field, value)
    lines = (tmp_path / "churn" / "defs.yaml").read_text().splitlines()
    start = lines.index(f"  {section}:")
    line = next(i + 1 for i in range(start, len(lines)) if lines[i].startswith(f"    {field}:"))
    assert f"  {section}.{field}: Value error, " in message
    assert repr(value) in message and f"(line {line})" in message


def test_a_version_is_a_valid_model_ref(tmp_path: Path) -> None:
    raw = churn_yaml()
    raw["model"]["ref"] = "0123456789abcdef"
    assert load_spec(write_pipeline(tmp_path, raw)).model.ref == "0123456789abcdef"


@pytest.mark.parametrize(
    "parts", [("churn", ".."), ("churn/../../x",), ("..", "x"), ("churn", ""), ("a//b",), (".",)]
)
def test_stage_paths_have_no_parent_or_empty_segments(parts: tuple[str, ...]) -> None:
    with pytest.raises(WarehouseError, match="refusing stage path"):
        stage_path(*parts)


def test_stage_paths_still_join_plain_segments() -> None:
    assert stage_path("churn", "2026-10-15", "run-1/") == "churn/2026-10-15/run-1"
    assert stage_path("churn/features/2026-10-15") == "churn/features/2026-10-15"


# --- the compiled predictor ----------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[UPath, LightGBMPredictor]:
    rng = np.random.default_rng(1)
    t = pa.table({"x": rng.normal(size=500), "y": rng.integers(0, 2, 500)})
    model = train_lightgbm("lightgbm_binary", t, t, ["x"], "y", num_boost_round=3)
    (tmp_path / "model.txt").write_text(model.model_text)
    return UPath(str(tmp_path / "model.txt")), LightGBMPredictor(model.model_text)


@pytest.fixture
def lleaves_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every object file lleaves is asked to load (or compile into)."""
    import lleaves

    seen: list[str] = []
    real = lleaves.Model.compile

    def spy(self: Any, cache: str | None = None, **kw: Any) -> None:
        seen.append(str(cache))
        real(self, cache=cache, **kw)

    monkeypatch.setattr(lleaves.Model, "compile", spy)
    return seen


def test_a_compiled_object_is_loaded_only_with_the_hash_recorded_when_compiled(
    tmp_path: Path, tiny: tuple[UPath, LightGBMPredictor], lleaves_loads: list[str]
) -> None:
    model_file, reference = tiny
    cache = UPath(str(tmp_path / "compiled" / "toolchain.o"))
    assert compiled.ensure_compiled(model_file, cache)
    sidecar = tmp_path / "compiled" / "toolchain.o.sha256"
    assert sidecar.read_text().split() == [
        hashlib.sha256(Path(cache.path).read_bytes()).hexdigest(),
        "toolchain.o",
    ]
    predictor = compiled.CompiledPredictor(model_file, cache, reference)
    x = np.linspace(-3, 3, 50).reshape(-1, 1)
    np.testing.assert_allclose(predictor.predict(x), reference.predict(x), atol=1e-9)
    assert predictor.kind == "lleaves"
    # lleaves loaded a private copy of the verified bytes, never the shared file itself.
    assert len(lleaves_loads) == 2 and cache.path not in lleaves_loads


@pytest.mark.parametrize("sidecar", [None, "0" * 64 + "  toolchain.o\n", "not a hash\n"])
def test_a_planted_object_is_refused_before_anything_loads_it(
    tmp_path: Path,
    tiny: tuple[UPath, LightGBMPredictor],
    lleaves_loads: list[str],
    sidecar: str | None,
) -> None:
    model_file, reference = tiny
    cache = tmp_path / "compiled" / "toolchain.o"
    cache.parent.mkdir()
    cache.write_bytes(b"\x7fELF not what we compiled")
    if sidecar is not None:
        (tmp_path / "compiled" / "toolchain.o.sha256").write_text(sidecar)
    with pytest.raises(compiled.UntrustedCompiledObject, match=f"refusing compiled object {cache}"):
        compiled.CompiledPredictor(model_file, UPath(str(cache)), reference)
    with pytest.raises(compiled.UntrustedCompiledObject):
        compiled.ensure_compiled(model_file, UPath(str(cache)))  # nor reused as compiled
    assert lleaves_loads == []
    assert cache.read_bytes() == b"\x7fELF not what we compiled"  # left for a look
