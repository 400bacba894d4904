"""`<p>/shard_manifest` and `<p>/scored_shards`: row groups packed into shards, then one scoring
step per shard (a DynamicOut fan-out), collected into one record."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow as pa

from batch_inference_assets import progress
from batch_inference_assets.assets.common import RECORDS_IO_MANAGER, daily, day, fail, key, pool
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.models import kinds
from batch_inference_assets.models.store import ModelStore
from batch_inference_assets.records import (
    ModelHandle,
    ScoredShards,
    Shard,
    ShardManifest,
    ShardScore,
)
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import model as model_stage
from batch_inference_assets.stages import scoring, shards


def score_op_name(pipeline: str) -> str:
    """The op that scores one shard: the step that fans out, one per shard."""
    return f"{pipeline}__score_shard"


def shard_pod(spec: PipelineSpec) -> dict[str, Any]:
    """The `dagster-k8s/config` of a shard step: its pod requests what the spec asks for.
    Executors that do not place steps in pods ignore the tag."""
    need = spec.sharding.step_resources
    return {
        "container_config": {
            "resources": {
                "requests": {"cpu": need.cpu, "memory": need.memory},
                "limits": {"memory": need.memory},
            }
        },
        "pod_template_spec_metadata": {"labels": {"batch-inference/pipeline": spec.name}},
    }


def shard_manifest_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(spec, "shard_manifest"),
        ins={"export": dg.AssetIn(key(spec, "source_features"))},
        description="The partition's row groups grouped into shards balanced by size.",
        io_manager_key=RECORDS_IO_MANAGER,
        **daily(spec),
    )
    def shard_manifest(context: dg.AssetExecutionContext, export: Any) -> dg.Output[ShardManifest]:
        manifest = shards.plan_shards(export, spec.sharding)
        sizes = [s.rows for s in manifest.shards]
        estimate = progress.run_estimate(
            manifest.rows,
            len(manifest.shards),
            progress.recent_pace(context.instance, key(spec, "predictions"), context.run_id),
        )
        context.log.info(f"{spec.name} {context.partition_key}: {estimate.line()}")
        context.instance.add_run_tags(context.run_id, estimate.tags())
        return dg.Output(
            manifest,
            metadata={
                "shards": len(manifest.shards),
                "dagster/row_count": manifest.rows,
                "min_shard_rows": min(sizes, default=0),
                "max_shard_rows": max(sizes, default=0),
                **estimate.metadata(),
            },
        )

    return shard_manifest


def _score_shard_op(spec: PipelineSpec) -> dg.OpDefinition:
    name = spec.name

    @dg.op(
        name=score_op_name(name),
        pool=pool(spec),
        retry_policy=dg.RetryPolicy(
            max_retries=spec.retries.max_retries,
            delay=spec.retries.delay_seconds,
            backoff=dg.Backoff.EXPONENTIAL,
        ),
        tags={"dagster-k8s/config": shard_pod(spec)},
        out=dg.Out(io_manager_key=RECORDS_IO_MANAGER),
    )
    def score_shard(
        context: dg.OpExecutionContext,
        object_store: ObjectStore,
        model_store: ModelStore,
        shard: Shard,
        model: ModelHandle,
    ) -> dg.Output[ShardScore]:
        stage = f"scoring {shard.key}"
        scorers = []
        for each in (model, *model.challengers):  # the challengers score the same batches
            try:
                predictor, warning = model_stage.predictor_for(spec, each, model_store)
            except model_stage.ModelProblem as err:
                raise fail(spec, context, stage, str(err)) from err
            if warning:
                context.log.warning(warning)
            out = spec.output_contract
            scorers.append(kinds.Scorer(each, predictor, out, spec.model_output_columns))
        scorer, predictor = scorers[0], scorers[0].predictor
        run = scoring.ScoringRun(
            pipeline=name,
            partition=day(context),
            run_id=context.run_id,
            scored_at=datetime.now(UTC),
            id_columns=spec.features.id_columns,
            passthrough=spec.output.passthrough,
            output=spec.output_contract,
            batch_rows=spec.sharding.batch_rows,
            batch_bytes=spec.sharding.batch_bytes,
            timeout_seconds=spec.timeouts.shard_seconds,
            explain=spec.explain,
        )
        try:
            result = scoring.score_shard(
                shard, model, scorer, run, object_store,
                challengers=list(zip(model.challengers, scorers[1:], strict=True)),
            )  # fmt: skip
        except scoring.ShardTimeout as err:
            raise fail(spec, context, stage, str(err), retryable=True) from err
        except OSError as err:  # storage hiccups: worth the retry policy
            raise fail(spec, context, stage, f"{type(err).__name__}: {err}", True) from err
        except (KeyError, pa.ArrowException, ValueError) as err:
            raise fail(spec, context, stage, f"{type(err).__name__}: {err}") from err
        run_stats = context.instance.get_run_stats(context.run_id)
        elapsed = time.time() - run_stats.start_time if run_stats.start_time else 0.0
        done = progress.estimate(
            shard, progress.finished_shards(context, score_op_name(name)), elapsed
        )
        context.log.info(f"{name} {context.partition_key}: {done.line()}")
        return dg.Output(
            result,
            metadata={
                "rows": result.rows,
                "seconds": result.seconds,
                "rows_per_second": round(result.rows / max(result.seconds, 1e-9)),
                "peak_rss_mb": round(result.peak_rss_bytes / 2**20, 1),
                "path": result.path,
                "predictor": getattr(predictor, "kind", "lightgbm"),
                "model_kind": model.kind,
                **done.metadata(),
            },
        )

    return score_shard


def scored_shards_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    name = spec.name

    @dg.op(
        name=f"{name}__fan_out_shards",
        out=dg.DynamicOut(Shard, io_manager_key=RECORDS_IO_MANAGER),
        pool=pool(spec),
    )
    def fan_out_shards(manifest: ShardManifest) -> Iterator[dg.DynamicOutput[Shard]]:
        for shard in manifest.shards:
            yield dg.DynamicOutput(shard, mapping_key=shard.key)

    @dg.op(
        name=f"{name}__collect_scores",
        out=dg.Out(io_manager_key=RECORDS_IO_MANAGER),
        pool=pool(spec),
    )
    def collect_scores(
        manifest: ShardManifest, model: ModelHandle, results: list[ShardScore]
    ) -> dg.Output[ScoredShards]:
        scored = scoring.collect(name, manifest, model, results)
        return dg.Output(
            scored,
            metadata={
                "dagster/row_count": scored.rows,
                "shards": len(scored.shards),
                "max_shard_peak_rss_mb": round(
                    max((s.peak_rss_bytes for s in scored.shards), default=0) / 2**20, 1
                ),
                "model_version": model.version,
                "compute_seconds": round(sum(s.seconds for s in scored.shards), 3),
            },
        )

    score_shard = _score_shard_op(spec)

    @dg.graph_asset(
        name="scored_shards",
        key_prefix=[name],
        ins={
            "shard_manifest": dg.AssetIn(key(spec, "shard_manifest")),
            "model": dg.AssetIn(key(spec, "model")),
        },
        description="One streamed scoring step per shard, each writing one scored Parquet file.",
        kinds={"parquet"},
        **daily(spec, graph=True),
    )
    def scored_shards(shard_manifest: ShardManifest, model: ModelHandle) -> ScoredShards:
        results = fan_out_shards(shard_manifest).map(lambda s: score_shard(s, model))
        return collect_scores(shard_manifest, model, results.collect())

    return scored_shards
