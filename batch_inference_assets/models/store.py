"""The model store: content-hash versions, aliases, metadata; never "the newest file"."""

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field, ValidationError
from upath import UPath

from batch_inference_assets.contracts import Column
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.models import kinds
from batch_inference_assets.models.lightgbm_model import (
    TrainedModel,
    drift_reference,
    infer_features,
)
from batch_inference_assets.models.matrix import feature_matrix
from batch_inference_assets.records import FeatureInfo, Histogram, ModelHandle
from batch_inference_assets.spec import (
    MODEL_VERSION,
    SCORE_COLUMN,
    valid_model_name,
    valid_model_ref,
)

MODEL_FILE = "model.txt"
META_FILE = "meta.json"
# The metadata scoring reads; the version hashes them with the model file.
SCORING_FIELDS = ("kind", "classes", "features", "reference")


class ModelStoreError(RuntimeError):
    pass


def content_version(model_text: str) -> str:
    """The model file's own hash (versions stored before the metadata was covered used it)."""
    return hashlib.sha256(model_text.encode()).hexdigest()[:16]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def scoring_fields(
    kind: str,
    classes: list[str],
    features: list[FeatureInfo],
    reference: dict[str, Histogram],
) -> dict[str, Any]:
    return {
        "kind": kind,
        "classes": list(classes),
        "features": [f.model_dump() for f in features],
        "reference": {k: h.model_dump() for k, h in reference.items()},
    }


def manifest(model_text: str, fields: dict[str, Any]) -> dict[str, str]:
    """sha256 of the model file and of each metadata field scoring reads (feature order, types
    and categories, classes, kind, drift reference); the version is the hash of these."""
    return {
        MODEL_FILE: _sha256(model_text),
        **{f: _sha256(_canonical(fields[f])) for f in SCORING_FIELDS},
    }


def manifest_version(parts: dict[str, str]) -> str:
    return _sha256(_canonical(parts))[:16]


def _handle_manifest(model_text: str, handle: ModelHandle) -> dict[str, str]:
    fields = scoring_fields(handle.kind, handle.classes, handle.features, handle.reference)
    return manifest(model_text, fields)


def verify(handle: ModelHandle, model_text: str, recorded: Any) -> None:
    """Refuse a version whose model file or scoring metadata no longer hash to it, naming
    what changed (by the manifest recorded at save time)."""
    actual = _handle_manifest(model_text, handle)
    if manifest_version(actual) == handle.version:
        return
    where = f"model {handle.name!r} version {handle.version}"
    if not isinstance(recorded, dict):
        if content_version(model_text) == handle.version:
            raise ModelStoreError(
                f"{where} cannot be verified: it was stored before versions covered the "
                f"metadata (its {META_FILE} has no manifest); save or register it again (the "
                "demo: seed it again)"
            )
        raise ModelStoreError(f"{where} is corrupt: it has no manifest and does not verify")
    changed = [part for part, digest in actual.items() if recorded.get(part) != digest]
    if manifest_version(recorded) != handle.version or not changed:
        changed.append(f"the manifest in {META_FILE}")
    raise ModelStoreError(
        f"{where} is corrupt: {', '.join(changed)} changed since it was stored (its model "
        f"file and metadata hash to {manifest_version(actual)})"
    )


def _name(name: str) -> str:
    """Names and aliases become folder and file names: plain identifiers only."""
    try:
        return valid_model_name(name, "model name")
    except ValueError as err:
        raise ModelStoreError(str(err)) from None


def _alias(name: str, alias: str) -> str:
    try:
        return valid_model_name(alias, "alias")
    except ValueError as err:
        raise ModelStoreError(f"model {name!r}: {err}") from None


def _ref(name: str, ref: str) -> str:
    try:
        return valid_model_ref(ref)
    except ValueError as err:
        raise ModelStoreError(f"model {name!r}: {err}") from None


def _version(name: str, version: str) -> str:
    if not MODEL_VERSION.fullmatch(version):
        raise ModelStoreError(f"model {name!r}: {version!r} is not a version (16 hex digits)")
    return version


class ModelStore(dg.ConfigurableResource):
    """Models under `<root>/<name>/versions/<version>/` with aliases in `<root>/<name>/aliases/`."""

    store: ObjectStore = Field(description="Where the models live (a folder or a bucket).")
    prefix: str = Field(default="", description="Sub-path of the store holding the models.")

    @property
    def base(self) -> UPath:
        return self.store.path(self.prefix) if self.prefix else self.store.base

    def _model_dir(self, name: str) -> UPath:
        return self.base / _name(name)

    def _version_dir(self, name: str, version: str) -> UPath:
        return self._model_dir(name) / "versions" / _version(name, version)

    def save(
        self,
        name: str,
        trained: TrainedModel,
        *,
        aliases: tuple[str, ...] = ("champion",),
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Store a model under its content hash (saving it twice is a no-op) and point
        `aliases` at it. `extra` lands in the metadata (e.g. the training window).

        The version hashes the model file and the metadata scoring reads (`manifest`), so
        `load` refuses a model whose file or metadata changed since."""
        for alias in aliases:
            _alias(name, alias)
        fields = scoring_fields(trained.kind, trained.classes, trained.features, trained.reference)
        parts = manifest(trained.model_text, fields)
        version = manifest_version(parts)
        reserved = {"name", "version", "metrics", "created_at", "manifest", *fields}
        if clash := sorted(reserved & set(extra or {})):
            raise ModelStoreError(f"model {name!r}: extra metadata may not set {clash}")
        folder = self._version_dir(name, version)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_FILE).write_text(trained.model_text)
        meta = {
            "name": name,
            "version": version,
            **fields,
            "metrics": trained.metrics,
            "created_at": datetime.now(UTC).isoformat(),
            **(extra or {}),
            "manifest": parts,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=1))
        for alias in aliases:
            self.set_alias(name, alias, version)
        return version

    def register_python(
        self,
        name: str,
        predict_fn: str,
        sample: pa.Table,
        feature_names: list[str],
        *,
        aliases: tuple[str, ...] = ("champion",),
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Register `predict_fn` ('package.module:function') as a version of model `name`.

        The version hashes the import path and the module's source, so changed code is a new
        version (and scoring refuses a version whose code changed since). `sample` gives the
        feature types and, scored once here, the drift reference."""
        text = kinds.python_model_text(predict_fn)
        predictor = kinds.PythonPredictor(text)
        features = infer_features(sample, feature_names)
        try:
            out = predictor.predict_frame(sample.select(feature_names).to_pandas())
        except Exception as err:  # the user's code: report whatever it raised
            raise ModelStoreError(
                f"predict_fn {predict_fn} raised {type(err).__name__}: {err} on the sample"
            ) from err
        # The score is all a registration needs; scoring checks every declared column.
        needs = kinds.PredictFnOutput([Column(SCORE_COLUMN, "float64")], exact=False)
        try:
            score = needs.arrays(out, sample.num_rows, f"predict_fn {predict_fn}")[SCORE_COLUMN]
        except kinds.ModelOutputError as err:
            raise ModelStoreError(
                f"{err} on the sample; it must return a DataFrame with a {SCORE_COLUMN!r} column "
                f"and one row per input row"
            ) from err
        scores = score.to_numpy(zero_copy_only=False).astype("float64")
        reference = drift_reference(feature_matrix(sample, features), features, scores)
        trained = TrainedModel(text, features, reference, {}, kind="python")
        return self.save(
            name, trained, aliases=aliases, extra={"predict_fn": predict_fn, **(extra or {})}
        )

    def read_meta(self, name: str, version: str) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = json.loads(
                (self._version_dir(name, version) / META_FILE).read_text()
            )
        except FileNotFoundError as err:
            raise ModelStoreError(f"model {name!r} has no version {version!r}") from err
        return meta

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every stored version's metadata, oldest first (by created_at)."""
        folder = self._model_dir(name) / "versions"
        if not folder.exists():
            return []
        metas = [
            self.read_meta(name, p.name)
            for p in folder.iterdir()
            if p.is_dir() and MODEL_VERSION.fullmatch(p.name)
        ]
        return sorted(metas, key=lambda m: str(m.get("created_at", "")))

    def aliases(self, name: str) -> dict[str, str]:
        folder = self._model_dir(name) / "aliases"
        if not folder.exists():
            return {}
        return {p.name: p.read_text().strip() for p in folder.iterdir()}

    def set_alias(self, name: str, alias: str, version: str) -> None:
        folder = self._model_dir(name) / "aliases"
        alias_file = folder / _alias(name, alias)
        if not (self._version_dir(name, version) / MODEL_FILE).exists():
            raise ModelStoreError(f"model {name!r} has no version {version!r}")
        folder.mkdir(parents=True, exist_ok=True)
        alias_file.write_text(version)

    def resolve(self, name: str, ref: str) -> str:
        """A version for `ref`: the version itself, or what the alias `ref` points at."""
        if MODEL_VERSION.fullmatch(_ref(name, ref)) and self._version_dir(name, ref).exists():
            return ref
        alias_file = self._model_dir(name) / "aliases" / ref
        if not alias_file.exists():
            raise ModelStoreError(
                f"model {name!r} has no version or alias {ref!r} in the model store at {self.base}"
            )
        version = alias_file.read_text().strip()
        if not MODEL_VERSION.fullmatch(version):
            raise ModelStoreError(
                f"model {name!r}: alias {ref!r} points at {version!r}, not a version "
                "(16 hex digits)"
            )
        return version

    def load(self, name: str, ref: str, label_threshold: float = 0.5) -> ModelHandle:
        """Resolve `ref`, verify the model file and its metadata against the version (their
        hash), and describe it."""
        version = self.resolve(name, ref)
        folder = self._version_dir(name, version)
        try:
            model_text = (folder / MODEL_FILE).read_text()
            meta = json.loads((folder / META_FILE).read_text())
        except FileNotFoundError as err:
            raise ModelStoreError(
                f"model {name!r} version {version}: missing file {err.filename}"
            ) from err
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelStoreError(f"model {name!r} version {version}: unreadable: {err}") from err
        try:
            handle = ModelHandle(
                name=name,
                version=version,
                kind=meta["kind"],
                uri=str(folder / MODEL_FILE),
                features=meta["features"],
                reference=meta["reference"],
                label_threshold=label_threshold,
                classes=meta.get("classes", []),
                metrics=meta.get("metrics", {}),
            )
        except (KeyError, TypeError, ValidationError) as err:
            raise ModelStoreError(
                f"model {name!r} version {version}: unreadable {META_FILE}: {err}"
            ) from err
        verify(handle, model_text, meta.get("manifest"))
        try:
            kinds.load_predictor(handle.kind, model_text)
        except Exception as err:  # LightGBM raises its own error type for unparsable models
            raise ModelStoreError(f"model {name!r} version {version}: cannot load: {err}") from err
        return handle

    def read_model_text(self, handle: ModelHandle) -> str:
        """The model file, checked with the handle's metadata against the version."""
        text = self.store.open_path(handle.uri).read_text()
        if manifest_version(_handle_manifest(text, handle)) != handle.version:
            raise ModelStoreError(
                f"model {handle.name!r} version {handle.version} changed on disk since it was "
                "resolved for this partition"
            )
        return text
