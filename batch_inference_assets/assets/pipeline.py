"""One pipeline's definitions: its assets in flow order, its jobs, schedule and sensors."""

from dataclasses import dataclass
from typing import Any

import dagster as dg

from batch_inference_assets.assets import automation
from batch_inference_assets.assets.challengers import challenger_assets
from batch_inference_assets.assets.common import key, partitions
from batch_inference_assets.assets.drift import drift_stats_asset
from batch_inference_assets.assets.exports import export_assets
from batch_inference_assets.assets.features import source_features_asset
from batch_inference_assets.assets.model import model_asset
from batch_inference_assets.assets.performance import realized_performance_asset
from batch_inference_assets.assets.predictions import predictions_asset
from batch_inference_assets.assets.shards import scored_shards_asset, shard_manifest_asset
from batch_inference_assets.assets.sinks import sink_assets
from batch_inference_assets.assets.training import training_assets
from batch_inference_assets.spec import PipelineSpec


@dataclass(frozen=True)
class Pipeline:
    spec: PipelineSpec
    partitions: dg.DailyPartitionsDefinition
    assets: list[dg.AssetsDefinition]  # the daily ones: one partition per run
    job: Any  # what dg.define_asset_job returns; its class is not public
    training_assets: list[dg.AssetsDefinition]
    training_job: Any  # `<name>_train` when the spec has a training section, else None

    @property
    def all_assets(self) -> list[dg.AssetsDefinition]:
        return [*self.assets, *self.training_assets]

    @property
    def jobs(self) -> list[Any]:
        return [self.job] + ([self.training_job] if self.training_job is not None else [])

    def key(self, stage: str) -> dg.AssetKey:
        return key(self.spec, stage)

    def definitions(self) -> dg.Definitions:
        """Assets, jobs, the daily schedule, and the landing sensor and retraining schedule
        when the spec asks for them."""
        schedules = [automation.build_schedule(self)]
        sensors = []
        if (retrain := automation.build_training_schedule(self)) is not None:
            schedules.append(retrain)
        if (landing := automation.build_landing_sensor(self)) is not None:
            sensors.append(landing)
        if (labels := automation.build_labels_sensor(self)) is not None:
            sensors.append(labels)
        return dg.Definitions(
            assets=self.all_assets, jobs=self.jobs, schedules=schedules, sensors=sensors
        )


def build_pipeline(spec: PipelineSpec) -> Pipeline:
    name = spec.name
    daily = [
        model_asset(spec),
        source_features_asset(spec),
        shard_manifest_asset(spec),
        scored_shards_asset(spec),
        predictions_asset(spec),
        *challenger_assets(spec),
        drift_stats_asset(spec),
        *export_assets(spec),
        *sink_assets(spec),
        *([realized_performance_asset(spec)] if spec.labels else []),
    ]
    selection: dg.AssetSelection = dg.AssetSelection.groups(name)
    if spec.labels:  # measured once its labels land (`<name>_labels_sensor`), not with the scoring
        selection -= dg.AssetSelection.assets(key(spec, "realized_performance"))
    job = dg.define_asset_job(
        f"{name}_daily",
        selection=selection,
        partitions_def=partitions(spec),
        description=f"Score one day of {name} end to end.",
        # Run-level timeout (enforced by run monitoring) and a tag for per-pipeline queue limits.
        tags={"dagster/max_runtime": spec.timeouts.run_seconds, "pipeline": name},
    )
    training = training_assets(spec) if spec.training else []
    training_job = (
        dg.define_asset_job(
            f"{name}_train",
            selection=dg.AssetSelection.groups(f"{name}_training"),
            description=f"Train a candidate {spec.model.name} model and promote it if it passes.",
            tags={"pipeline": name},
        )
        if spec.training
        else None
    )
    return Pipeline(spec, partitions(spec), daily, job, training, training_job)
