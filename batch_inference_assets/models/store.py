"""The model store: content-hash versions, aliases, metadata; never "the newest file"."""

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field
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
from batch_inference_assets.records import ModelHandle

MODEL_FILE = "model.txt"
META_FILE = "meta.json"
_VERSION = re.compile(r"^[0-9a-f]{16}$")


class ModelStoreError(RuntimeError):
    pass


def content_version(model_text: str) -> str:
    return hashlib.sha256(model_text.encode()).hexdigest()[:16]


class ModelStore(dg.ConfigurableResource):
    """Models under `<root>/<name>/versions/<version>/` with aliases in `<root>/<name>/aliases/`."""

    store: ObjectStore = Field(description="Where the models live (a folder or a bucket).")
    prefix: str = Field(default="", description="Sub-path of the store holding the models.")

    @property
    def base(self) -> UPath:
        return self.store.path(self.prefix) if self.prefix else self.store.base

    def _version_dir(self, name: str, version: str) -> UPath:
        return self.base / name / "versions" / version

    def save(
        self,
        name: str,
        trained: TrainedModel,
        *,
        aliases: tuple[str, ...] = ("champion",),
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Store a model under its content hash (saving it twice is a no-op) and point
        `aliases` at it. `extra` lands in the metadata (e.g. the training window)."""
        version = content_version(trained.model_text)
        folder = self._version_dir(name, version)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_FILE).write_text(trained.model_text)
        meta = {
            "name": name,
            "version": version,
            "kind": trained.kind,
            "classes": trained.classes,
            "features": [f.model_dump() for f in trained.features],
            "reference": {k: h.model_dump() for k, h in trained.reference.items()},
            "metrics": trained.metrics,
            "created_at": datetime.now(UTC).isoformat(),
            **(extra or {}),
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
        needs = kinds.PredictFnOutput([Column(kinds.SCORE, "float64")], exact=False)
        try:
            score = needs.arrays(out, sample.num_rows, f"predict_fn {predict_fn}")[kinds.SCORE]
        except kinds.ModelOutputError as err:
            raise ModelStoreError(
                f"{err} on the sample; it must return a DataFrame with a {kinds.SCORE!r} column "
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
        folder = self.base / name / "versions"
        if not folder.exists():
            return []
        metas = [self.read_meta(name, p.name) for p in folder.iterdir() if p.is_dir()]
        return sorted(metas, key=lambda m: str(m.get("created_at", "")))

    def aliases(self, name: str) -> dict[str, str]:
        folder = self.base / name / "aliases"
        if not folder.exists():
            return {}
        return {p.name: p.read_text().strip() for p in folder.iterdir()}

    def set_alias(self, name: str, alias: str, version: str) -> None:
        if not (self._version_dir(name, version) / MODEL_FILE).exists():
            raise ModelStoreError(f"model {name!r} has no version {version!r}")
        folder = self.base / name / "aliases"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / alias).write_text(version)

    def resolve(self, name: str, ref: str) -> str:
        """A version for `ref`: the version itself, or what the alias `ref` points at."""
        if _VERSION.match(ref) and self._version_dir(name, ref).exists():
            return ref
        alias_file = self.base / name / "aliases" / ref
        if not alias_file.exists():
            raise ModelStoreError(
                f"model {name!r} has no version or alias {ref!r} in the model store at {self.base}"
            )
        return alias_file.read_text().strip()

    def load(self, name: str, ref: str, label_threshold: float = 0.5) -> ModelHandle:
        """Resolve `ref`, verify the model file against its content hash, and describe it."""
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
        actual = content_version(model_text)
        if actual != version:
            raise ModelStoreError(
                f"model {name!r} version {version} is corrupt: its file hashes to {actual}"
            )
        try:
            kinds.load_predictor(meta["kind"], model_text)
        except Exception as err:  # LightGBM raises its own error type for unparsable models
            raise ModelStoreError(f"model {name!r} version {version}: cannot load: {err}") from err
        return ModelHandle(
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

    def read_model_text(self, handle: ModelHandle) -> str:
        text = self.store.open_path(handle.uri).read_text()
        if content_version(text) != handle.version:
            raise ModelStoreError(
                f"model {handle.name!r} version {handle.version} changed on disk since it was "
                "resolved for this partition"
            )
        return text
