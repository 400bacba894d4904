"""`<p>/model`: the pipeline's model reference resolved to a verified version for the run."""

from typing import Any

import dagster as dg

from batch_inference_assets.assets.common import (
    RECORDS_IO_MANAGER,
    daily,
    fail,
    key,
    training_key,
)
from batch_inference_assets.models.store import ModelStore
from batch_inference_assets.records import ModelHandle
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import model as stage


def model_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(spec, "model"),
        description=f"The model {spec.model.name}@{spec.model.ref} resolved for this partition.",
        kinds={"python" if spec.model.kind == "python" else "lightgbm"},
        deps=[training_key(spec.name, "champion_model")] if spec.training else [],
        io_manager_key=RECORDS_IO_MANAGER,
        **daily(spec),
    )
    def model(context: dg.AssetExecutionContext, model_store: ModelStore) -> dg.Output[ModelHandle]:
        try:
            handle = stage.resolve(spec, model_store)
        except stage.ModelProblem as err:
            raise fail(spec, context, "model", str(err)) from err
        metadata: dict[str, Any] = {
            "model_version": handle.version,
            "model_ref": spec.model.ref,
            "uri": dg.MetadataValue.path(handle.uri),
            "features": len(handle.features),
            "kind": handle.kind,
            **({"classes": ", ".join(handle.classes)} if handle.classes else {}),
        }
        try:
            compiled = stage.compile_if_requested(spec, handle, model_store)
        except Exception as err:  # a compiler failure must not stop scoring: LightGBM works
            context.log.warning(f"compiling {handle.version} failed, using LightGBM: {err}")
        else:
            if compiled is not None:
                metadata["compiled"] = compiled.path
                metadata["compile_seconds"] = compiled.seconds
                metadata["compiled_now"] = compiled.compiled_now
        return dg.Output(handle, metadata=metadata)

    return model
