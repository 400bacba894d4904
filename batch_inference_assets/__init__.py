"""batch-inference: daily batch scoring of warehouse features with ML models, as Dagster assets."""

from batch_inference_assets.factory import Pipeline, build_pipeline
from batch_inference_assets.spec import PipelineSpec, SpecError, load_spec, load_specs

__all__ = ["Pipeline", "PipelineSpec", "SpecError", "build_pipeline", "load_spec", "load_specs"]
