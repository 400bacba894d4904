"""build_pipeline(spec): the assets, checks and job of one pipeline; pure logic lives per stage."""

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field, ValidationError

from batch_inference_assets import checks, progress
from batch_inference_assets.contracts import arrow_schema_to_table_schema
from batch_inference_assets.errors import PipelineFailure
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.warehouse import Warehouse, WarehouseError
from batch_inference_assets.models import compiled, kinds
from batch_inference_assets.models.store import ModelStore, ModelStoreError
from batch_inference_assets.records import (
    CandidateModel,
    ExportedPredictions,
    FeatureExport,
    ModelHandle,
    Promotion,
    PublishedPartition,
    ScoredShards,
    Shard,
    ShardManifest,
    ShardScore,
)
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import (
    drift,
    exports,
    features,
    publish,
    scoring,
    shards,
    stats,
    training,
)

Context = dg.AssetExecutionContext | dg.OpExecutionContext
WAREHOUSE_POOL = "warehouse"  # bounds concurrent warehouse queries across runs (dagster.yaml)


@dataclass(frozen=True)
class Pipeline:
    spec: PipelineSpec
    partitions: dg.DailyPartitionsDefinition
    assets: list[dg.AssetsDefinition]
    job: Any  # what dg.define_asset_job returns; its class is not public
    training_assets: list[dg.AssetsDefinition] = field(default_factory=list)
    training_job: Any = None  # `<name>_train` when the spec has a training section

    @property
    def all_assets(self) -> list[dg.AssetsDefinition]:
        """The daily assets (`assets`, one partition per run) and the training ones."""
        return [*self.assets, *self.training_assets]

    @property
    def jobs(self) -> list[Any]:
        return [self.job] + ([self.training_job] if self.training_job is not None else [])

    def key(self, stage: str) -> dg.AssetKey:
        return dg.AssetKey([self.spec.name, stage])


def score_op_name(pipeline: str) -> str:
    """The op that scores one shard: the step that fans out, one per shard."""
    return f"{pipeline}__score_shard"


def _day(context: Context) -> date:
    return datetime.strptime(context.partition_key, "%Y-%m-%d").date()


def _blocking_failures(results: list[dg.AssetCheckResult], blocking: tuple[str, ...]) -> list[str]:
    return [
        f"{r.check_name} failed ({r.description})"
        for r in results
        if r.check_name in blocking and not r.passed
    ]


def build_pipeline(spec: PipelineSpec) -> Pipeline:
    name = spec.name
    partitions = dg.DailyPartitionsDefinition(
        start_date=spec.start_date.isoformat(), timezone=spec.timezone
    )

    def key(stage: str) -> dg.AssetKey:
        return dg.AssetKey([name, stage])

    def fail(context: Context, stage: str, cause: str, retryable: bool = False) -> PipelineFailure:
        return PipelineFailure(name, context.partition_key, stage, cause, retryable)

    common: dict[str, Any] = {"group_name": name, "partitions_def": partitions}

    @dg.asset(
        key=key("model"),
        description=f"The model {spec.model.name}@{spec.model.ref} resolved for this partition.",
        kinds={"python" if spec.model.kind == "python" else "lightgbm"},
        deps=[training_key(name, "champion_model")] if spec.training else [],
        **common,
    )
    def model(context: dg.AssetExecutionContext, model_store: ModelStore) -> dg.Output[ModelHandle]:
        try:
            handle = model_store.load(
                spec.model.name, spec.model.ref, label_threshold=spec.model.label_threshold
            )
        except (ModelStoreError, ValidationError) as err:
            raise fail(context, "model", str(err)) from err
        problems = kinds.fit_problems(handle, spec.model.kind, spec.model_output_columns)
        if problems:
            raise fail(context, "model", "; ".join(problems))
        metadata: dict[str, Any] = {
            "model_version": handle.version,
            "model_ref": spec.model.ref,
            "uri": dg.MetadataValue.path(handle.uri),
            "features": len(handle.features),
            "kind": handle.kind,
            **({"classes": ", ".join(handle.classes)} if handle.classes else {}),
        }
        if spec.model.predictor == "compiled" and handle.kind in compiled.KINDS:
            cache = model_store.store.open_path(compiled.cache_path(handle))
            started = time.perf_counter()
            try:
                compiled_now = compiled.ensure_compiled(
                    model_store.store.open_path(handle.uri), cache
                )
            except Exception as err:  # a compiler failure must not stop scoring: LightGBM works
                context.log.warning(f"compiling {handle.version} failed, using LightGBM: {err}")
            else:
                metadata["compiled"] = str(cache)
                metadata["compile_seconds"] = round(time.perf_counter() - started, 2)
                metadata["compiled_now"] = compiled_now
        return dg.Output(handle, metadata=metadata)

    @dg.asset(
        key=key("source_features"),
        ins={"model": dg.AssetIn(key("model"))},
        check_specs=checks.source_feature_specs(key("source_features")),
        description="The partition's feature rows, exported by the warehouse as Parquet files.",
        kinds={"parquet"},
        pool=WAREHOUSE_POOL,
        **common,
    )
    def source_features(
        context: dg.AssetExecutionContext,
        warehouse: Warehouse,
        object_store: ObjectStore,
        model: ModelHandle,
    ) -> Iterator[Any]:
        day = _day(context)
        window = context.partition_time_window
        try:
            export = features.export_features(
                spec, warehouse, object_store, day, (window.start, window.end), context.run_id
            )
        except WarehouseError as err:
            raise fail(context, "source_features", str(err)) from err
        schema = (
            features.read_schema(object_store.open_path(export.files[0].path))
            if export.files
            else None
        )
        problems = checks.contract_problems(spec, model, schema) if schema is not None else []
        profile = None
        if schema is not None and not problems:
            profile = features.profile_export(
                export, spec.features.id_columns, [f.name for f in model.features], object_store
            )
        published = 0
        if spec.output.mode == "incremental" and export.rows == 0:
            published = features.published_rows(spec, warehouse, day)
        if published:  # incremental, nothing new: every id of the day is already scored
            results = checks.nothing_new(export, published)
        else:
            results = checks.evaluate_source_features(
                spec, export, model, schema, problems, profile
            )
        results.append(checks.evaluate_row_limit(spec, export))
        yield dg.Output(
            export,
            metadata={
                "dagster/row_count": export.rows,
                "dagster/column_schema": arrow_schema_to_table_schema(schema or pa.schema([])),
                "bytes": export.bytes,
                "files": len(export.files),
                "query_seconds": export.query_seconds,
                "path": str(object_store.path(name, "features", context.partition_key)),
            },
        )
        yield from results
        failures = _blocking_failures(results, checks.SOURCE_BLOCKING_CHECKS)
        if failures:
            raise fail(context, "source_features", "; ".join(failures))

    @dg.asset(
        key=key("shard_manifest"),
        ins={"export": dg.AssetIn(key("source_features"))},
        description="The partition's row groups grouped into shards balanced by size.",
        **common,
    )
    def shard_manifest(
        context: dg.AssetExecutionContext, export: FeatureExport
    ) -> dg.Output[ShardManifest]:
        manifest = shards.plan_shards(export, spec.sharding)
        sizes = [s.rows for s in manifest.shards]
        return dg.Output(
            manifest,
            metadata={
                "shards": len(manifest.shards),
                "dagster/row_count": manifest.rows,
                "min_shard_rows": min(sizes, default=0),
                "max_shard_rows": max(sizes, default=0),
            },
        )

    @dg.op(name=f"{name}__fan_out_shards", out=dg.DynamicOut(Shard))
    def fan_out_shards(manifest: ShardManifest) -> Iterator[dg.DynamicOutput[Shard]]:
        for shard in manifest.shards:
            yield dg.DynamicOutput(shard, mapping_key=shard.key)

    @dg.op(
        name=score_op_name(name),
        retry_policy=dg.RetryPolicy(
            max_retries=spec.retries.max_retries,
            delay=spec.retries.delay_seconds,
            backoff=dg.Backoff.EXPONENTIAL,
        ),
    )
    def score_shard(
        context: dg.OpExecutionContext,
        object_store: ObjectStore,
        model_store: ModelStore,
        shard: Shard,
        model: ModelHandle,
    ) -> dg.Output[ShardScore]:
        try:
            base = kinds.load_predictor(
                model.kind, model_store.read_model_text(model), spec.model.predict_threads
            )
        except (ModelStoreError, ValueError) as err:
            raise fail(context, f"scoring {shard.key}", str(err)) from err
        predictor: Any = base
        cache = model_store.store.open_path(compiled.cache_path(model))
        compilable = model.kind in compiled.KINDS
        if compilable and spec.model.predictor != "lightgbm" and cache.exists():
            predictor = compiled.CompiledPredictor(
                model_store.store.open_path(model.uri), cache, base, spec.model.predict_threads
            )
        elif spec.model.predictor == "compiled":
            context.log.warning(f"no compiled predictor at {cache}; scoring with LightGBM")
        scorer = kinds.Scorer(model, predictor, spec.output_contract, spec.model_output_columns)
        run = scoring.ScoringRun(
            pipeline=name,
            partition=_day(context),
            run_id=context.run_id,
            scored_at=datetime.now(UTC),
            id_columns=spec.features.id_columns,
            output=spec.output_contract,
            batch_rows=spec.sharding.batch_rows,
            timeout_seconds=spec.timeouts.shard_seconds,
        )
        stage = f"scoring {shard.key}"
        try:
            result = scoring.score_shard(shard, model, scorer, run, object_store)
        except scoring.ShardTimeout as err:
            raise fail(context, stage, str(err), retryable=True) from err
        except OSError as err:  # storage hiccups: worth the retry policy
            raise fail(context, stage, f"{type(err).__name__}: {err}", retryable=True) from err
        except (KeyError, pa.ArrowException, ValueError) as err:
            raise fail(context, stage, f"{type(err).__name__}: {err}") from err
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

    @dg.op(name=f"{name}__collect_scores")
    def collect_scores(
        manifest: ShardManifest, model: ModelHandle, results: list[ShardScore]
    ) -> dg.Output[ScoredShards]:
        scored = ScoredShards(
            pipeline=name,
            partition=manifest.partition,
            model_version=model.version,
            source_rows=manifest.rows,
            shards=sorted(results, key=lambda r: r.index),
            export_seconds=manifest.export_seconds,
        )
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

    @dg.graph_asset(
        name="scored_shards",
        key_prefix=[name],
        ins={
            "shard_manifest": dg.AssetIn(key("shard_manifest")),
            "model": dg.AssetIn(key("model")),
        },
        description="One streamed scoring step per shard, each writing one scored Parquet file.",
        kinds={"parquet"},
        **common,
    )
    def scored_shards(shard_manifest: ShardManifest, model: ModelHandle) -> ScoredShards:
        results = fan_out_shards(shard_manifest).map(lambda s: score_shard(s, model))
        return collect_scores(shard_manifest, model, results.collect())

    output_table = spec.output.table

    @dg.asset(
        key=key("predictions"),
        ins={"scored": dg.AssetIn(key("scored_shards"))},
        check_specs=checks.prediction_specs(key("predictions"), spec),
        description=f"Predictions published to {output_table}, one partition replaced atomically.",
        metadata={"dagster/table_name": output_table},
        kinds={"table"},
        pool=WAREHOUSE_POOL,
        **common,
    )
    def predictions(
        context: dg.AssetExecutionContext,
        warehouse: Warehouse,
        object_store: ObjectStore,
        cost_model: progress.CostModel,
        scored: ScoredShards,
    ) -> Iterator[Any]:
        day = _day(context)
        started = time.perf_counter()
        try:
            staged, gates = publish.publish_partition(
                spec, warehouse, object_store, scored, day, context.run_id
            )
        except publish.PublicationRejected as rejected:
            yield from checks.gate_results(rejected.gates)
            raise fail(context, "predictions", f"nothing published: {rejected}") from rejected
        except WarehouseError as err:
            raise fail(context, "predictions", f"nothing published: {err}") from err
        publish_seconds = time.perf_counter() - started
        warehouse_seconds = scored.export_seconds + publish_seconds
        compute_seconds = sum(s.seconds for s in scored.shards)
        published = PublishedPartition(
            pipeline=name,
            partition=context.partition_key,
            table=output_table,
            rows=staged.rows,
            mode=spec.output.mode,
        )
        yield dg.Output(
            published,
            metadata={
                "dagster/row_count": staged.rows,
                "dagster/table_name": output_table,
                "dagster/column_schema": spec.output_contract.table_schema(),
                "mode": spec.output.mode,
                "model_version": scored.model_version,
                "cost/warehouse_seconds": round(warehouse_seconds, 3),
                "cost/compute_seconds": round(compute_seconds, 3),
                f"cost/estimated_{cost_model.currency.lower()}": round(
                    cost_model.estimate(warehouse_seconds, compute_seconds), 6
                ),
            },
        )
        yield from checks.gate_results(gates)
        yield from checks.evaluate_prediction_bounds(spec, scored)

    @dg.asset(
        key=key("drift_stats"),
        ins={
            "scored": dg.AssetIn(key("scored_shards")),
            "model": dg.AssetIn(key("model")),
            "published": dg.AssetIn(key("predictions")),
        },
        check_specs=checks.drift_specs(key("drift_stats")),
        description="PSI of the score and each feature vs training and the previous partition.",
        **common,
    )
    def drift_stats(
        context: dg.AssetExecutionContext,
        object_store: ObjectStore,
        scored: ScoredShards,
        model: ModelHandle,
        published: PublishedPartition,
    ) -> Iterator[Any]:
        window = context.partition_time_window
        previous_key = (
            partitions.get_partition_key_for_timestamp(window.start.timestamp() - 1)
            if window.start.date() > spec.start_date
            else None
        )
        previous = (
            drift.load_histograms(
                drift.profile_path(object_store, name, previous_key), model.version
            )
            if previous_key
            else None
        )
        if scored.rows == 0:  # incremental mode, nothing new: no distribution to compare
            yield dg.MaterializeResult(metadata={"rows": 0, "note": "nothing new was scored"})
            yield from checks.drift_not_evaluated("nothing new was scored")
            return
        report = drift.drift_report(model, scored, previous)
        path = drift.profile_path(object_store, name, context.partition_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.to_json())
        metadata: dict[str, Any] = {
            f"psi/{k if k != stats.SCORE_KEY else 'score'}": v
            for k, v in report.psi_reference.items()
        }
        if report.psi_previous is not None:
            metadata.update(
                {
                    f"psi_vs_previous/{k if k != stats.SCORE_KEY else 'score'}": v
                    for k, v in report.psi_previous.items()
                }
            )
        metadata["previous_partition"] = previous_key or "none"
        metadata["profile"] = str(path)
        yield dg.MaterializeResult(metadata=metadata)
        yield from checks.evaluate_drift(spec, report.psi_reference)

    def export_asset(stage: str, formats: list[str], what: str) -> dg.AssetsDefinition:
        @dg.asset(
            key=key(stage),
            ins={"published": dg.AssetIn(key("predictions"))},
            description=f"{what} of the published partition in the object store ({formats}).",
            kinds=set(formats),
            pool=WAREHOUSE_POOL,
            **common,
        )
        def export(
            context: dg.AssetExecutionContext,
            warehouse: Warehouse,
            object_store: ObjectStore,
            published: PublishedPartition,
        ) -> dg.Output[ExportedPredictions]:
            try:
                done = exports.export_partition(
                    spec, warehouse, object_store, _day(context), context.run_id,
                    stage=stage, formats=formats,
                )  # fmt: skip
            except (WarehouseError, ValueError, OSError) as err:
                raise fail(context, stage, str(err)) from err
            return dg.Output(
                done,
                metadata={
                    "dagster/row_count": done.rows,
                    **{f"{fmt}_files": len(paths) for fmt, paths in done.files.items()},
                    "path": str(object_store.path(name, stage, context.partition_key)),
                },
            )

        return export

    extra_assets: list[dg.AssetsDefinition] = []
    if spec.exports.formats:
        extra_assets.append(
            export_asset("exports", list(spec.exports.formats), "Parquet/CSV files")
        )
    if spec.exports.top_k:
        extra_assets.append(
            export_asset(
                "top_k",
                list(spec.exports.formats) or ["parquet"],
                f"The top {spec.exports.top_k.k:,} rows by {spec.exports.top_k.by}",
            )
        )
    training_assets, training_job = build_training(spec) if spec.training else ([], None)

    job = dg.define_asset_job(
        f"{name}_daily",
        selection=dg.AssetSelection.groups(name),
        partitions_def=partitions,
        description=f"Score one day of {name} end to end.",
        # Run-level timeout (enforced by run monitoring) and a tag for per-pipeline queue limits.
        tags={"dagster/max_runtime": spec.timeouts.run_seconds, "pipeline": name},
    )
    return Pipeline(
        spec=spec,
        partitions=partitions,
        assets=[
            model, source_features, shard_manifest, scored_shards, predictions, drift_stats,
            *extra_assets,
        ],
        job=job,
        training_assets=training_assets,
        training_job=training_job,
    )  # fmt: skip


PROMOTION_GATE = "promotion_gate"


class TrainingConfig(dg.Config):
    window_end: str | None = Field(
        default=None,
        description="Exclusive end of the labelled window (YYYY-MM-DD); default: today.",
    )


def training_key(pipeline: str, stage: str) -> dg.AssetKey:
    """Training assets live under `<p>_training/`, apart from the daily `<p>/*` ones, so
    `key:<p>/*` still selects exactly one day's graph."""
    return dg.AssetKey([f"{pipeline}_training", stage])


def training_run_config(pipeline: str, window_end: date) -> dict[str, Any]:
    """Run config of `<pipeline>_train` for the labelled window ending (exclusive) on a day."""
    op = f"{pipeline}_training__candidate_model"
    return {"ops": {op: {"config": {"window_end": window_end.isoformat()}}}}


def build_training(spec: PipelineSpec) -> tuple[list[dg.AssetsDefinition], Any]:
    """`<p>_training/candidate_model` (trained, checked by the blocking promotion gate) and
    `<p>_training/champion_model` (moves the alias; runs only if the gate passed)."""
    assert spec.training is not None
    name, group = spec.name, f"{spec.name}_training"

    def key(stage: str) -> dg.AssetKey:
        return training_key(name, stage)

    alias = spec.training.promote_alias

    @dg.asset(
        key=key("candidate_model"),
        group_name=group,
        check_specs=[
            dg.AssetCheckSpec(PROMOTION_GATE, asset=key("candidate_model"), blocking=True)
        ],
        description=f"LightGBM trained on the last {spec.training.window_days} labelled days, "
        f"evaluated on the last {spec.training.holdout_days}.",
        kinds={"lightgbm"},
    )
    def candidate_model(
        context: dg.AssetExecutionContext,
        config: TrainingConfig,
        warehouse: Warehouse,
        model_store: ModelStore,
    ) -> Iterator[Any]:
        end = date.fromisoformat(config.window_end) if config.window_end else date.today()
        try:
            candidate = training.train_candidate(spec, warehouse, model_store, end)
        except (training.TrainingError, WarehouseError, ModelStoreError, ValueError) as err:
            raise PipelineFailure(
                name, f"window ending {end}", "candidate_model", str(err)
            ) from err
        yield dg.Output(
            candidate,
            metadata={
                "model_version": candidate.version,
                f"holdout_{candidate.metric}": candidate.value,
                "champion_version": candidate.champion_version or "none",
                "train_rows": candidate.train_rows,
                "holdout_rows": candidate.holdout_rows,
                "window": f"{candidate.window_start} .. {candidate.window_end}",
            },
        )
        passed, description = training.gate(candidate)
        yield dg.AssetCheckResult(
            check_name=PROMOTION_GATE,
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=description,
            metadata={
                "candidate": candidate.version,
                "metric": candidate.metric,
                "value": candidate.value,
                "champion_value": candidate.champion_value
                if candidate.champion_value is not None
                else float("nan"),
            },
        )

    @dg.asset(
        key=key("champion_model"),
        ins={"candidate": dg.AssetIn(key("candidate_model"))},
        group_name=group,
        description=f"Points {spec.model.name}@{alias} at a candidate that passed the gate.",
    )
    def champion_model(
        context: dg.AssetExecutionContext, model_store: ModelStore, candidate: CandidateModel
    ) -> dg.Output[Promotion]:
        try:
            previous: str | None = model_store.resolve(spec.model.name, alias)
        except ModelStoreError:
            previous = None
        model_store.set_alias(spec.model.name, alias, candidate.version)
        context.log.info(f"{spec.model.name}@{alias}: {previous} -> {candidate.version}")
        promotion = Promotion(
            model=spec.model.name, alias=alias, version=candidate.version, previous=previous
        )
        return dg.Output(
            promotion,
            metadata={"model_version": candidate.version, "previous": previous or "none"},
        )

    job = dg.define_asset_job(
        f"{name}_train",
        selection=dg.AssetSelection.groups(group),
        description=f"Train a candidate {spec.model.name} model and promote it if it passes.",
        tags={"pipeline": name},
    )
    return [candidate_model, champion_model], job
