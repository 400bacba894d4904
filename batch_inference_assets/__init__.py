"""batch-inference: daily batch scoring of warehouse features with ML models, as Dagster assets."""

from batch_inference_assets.assets.pipeline import Pipeline, build_pipeline
from batch_inference_assets.component import BatchInferencePipeline
from batch_inference_assets.spec import PipelineSpec, SpecError, load_spec, load_specs

__all__ = [
    "BatchInferencePipeline",
    "Pipeline",
    "PipelineSpec",
    "SpecError",
    "build_pipeline",
    "load_spec",
    "load_specs",
]
