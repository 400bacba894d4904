"""The model stage: resolve a pipeline's model reference, check that it fits the spec, compile it
when asked, and choose the predictor a shard scores with."""

import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from batch_inference_assets.models import compiled, kinds
from batch_inference_assets.models.store import ModelStore, ModelStoreError
from batch_inference_assets.records import ModelHandle
from batch_inference_assets.spec import PipelineSpec


class ModelProblem(ValueError):
    """The model cannot score this pipeline: missing, changed, or of the wrong shape."""


def resolve(spec: PipelineSpec, model_store: ModelStore) -> ModelHandle:
    """The exact version behind `model.ref`, verified against its hash and the spec's kind,
    with the spec's challengers resolved the same way (once per run, so every shard scores the
    same versions; a challenger that is the champion's version is left out)."""
    handle = _resolve_ref(spec, model_store, spec.model.ref)
    challengers: dict[str, ModelHandle] = {}
    for ref in spec.challengers:
        try:
            challenger = _resolve_ref(spec, model_store, ref)
        except ModelProblem as err:
            raise ModelProblem(f"challenger {ref!r}: {err}") from err
        if challenger.version != handle.version:
            challengers.setdefault(challenger.version, challenger)
    return handle.model_copy(update={"challengers": list(challengers.values())})


def _resolve_ref(spec: PipelineSpec, model_store: ModelStore, ref: str) -> ModelHandle:
    try:
        handle = model_store.load(spec.model.name, ref, label_threshold=spec.model.label_threshold)
    except (ModelStoreError, ValidationError) as err:
        raise ModelProblem(str(err)) from err
    problems = kinds.fit_problems(handle, spec.model.kind, spec.model_output_columns)
    if problems:
        raise ModelProblem("; ".join(problems))
    return handle.model_copy(update={"ref": ref})


@dataclass(frozen=True)
class Compilation:
    path: str
    seconds: float
    compiled_now: bool


def compile_if_requested(
    spec: PipelineSpec, handle: ModelHandle, model_store: ModelStore
) -> Compilation | None:
    """With `predictor: compiled`, compile once per version and cache beside the model with
    its hash. Raises what the compiler raises, or UntrustedCompiledObject for a cached object
    that does not match its recorded hash; the caller falls back to LightGBM."""
    if spec.model.predictor != "compiled" or handle.kind not in compiled.KINDS:
        return None
    cache = model_store.store.open_path(compiled.cache_path(handle))
    started = time.perf_counter()
    now = compiled.ensure_compiled(model_store.store.open_path(handle.uri), cache)
    return Compilation(str(cache), round(time.perf_counter() - started, 2), now)


def predictor_for(
    spec: PipelineSpec, model: ModelHandle, model_store: ModelStore
) -> tuple[Any, str | None]:
    """LightGBM (or the python predict_fn), or the cached compiled object when the spec allows
    it and the object matches the hash recorded when it was compiled; the second value is a
    warning for the log when a compiled predictor is missing or refused. Raises ModelProblem
    when the model cannot be loaded, or when `predictor: compiled` finds an untrusted object."""
    try:
        base = kinds.load_predictor(
            model.kind, model_store.read_model_text(model), spec.model.predict_threads
        )
    except (ModelStoreError, ValueError) as err:
        raise ModelProblem(str(err)) from err
    cache = model_store.store.open_path(compiled.cache_path(model))
    if model.kind in compiled.KINDS and spec.model.predictor != "lightgbm" and cache.exists():
        try:
            predictor = compiled.CompiledPredictor(
                model_store.store.open_path(model.uri), cache, base, spec.model.predict_threads
            )
        except compiled.UntrustedCompiledObject as err:
            where = f"model {model.name}@{model.version}"
            if spec.model.predictor == "compiled":
                raise ModelProblem(
                    f"{where}: {err}; delete it to compile it again, or set predictor: lightgbm"
                ) from err
            return base, f"pipeline {spec.name!r}, {where}: {err}; scoring with stock LightGBM"
        return predictor, None
    if spec.model.predictor == "compiled":
        return base, f"no compiled predictor at {cache}; scoring with LightGBM"
    return base, None
