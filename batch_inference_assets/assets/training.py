"""`<p>_training/candidate_model` (trained, gated by the blocking promotion_gate) and
`<p>_training/champion_model` (moves the alias; runs only if the gate passed)."""

from collections.abc import Iterator
from datetime import date
from typing import Any

import dagster as dg
from pydantic import Field

from batch_inference_assets.assets import checks
from batch_inference_assets.assets.common import RECORDS_IO_MANAGER, key, pool, training_key
from batch_inference_assets.errors import PipelineFailure
from batch_inference_assets.io.warehouse import Warehouse, WarehouseError
from batch_inference_assets.models.store import ModelStore, ModelStoreError
from batch_inference_assets.records import CandidateModel, Promotion
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import training


class TrainingConfig(dg.Config):
    window_end: str | None = Field(
        default=None,
        description="Exclusive end of the labelled window (YYYY-MM-DD); default: today.",
    )


def training_run_config(pipeline: str, window_end: date) -> dict[str, Any]:
    """Run config of `<pipeline>_train` for the labelled window ending (exclusive) on a day."""
    op = f"{pipeline}_training__candidate_model"
    return {"ops": {op: {"config": {"window_end": window_end.isoformat()}}}}


def shadow_days(instance: dg.DagsterInstance, spec: PipelineSpec, version: str) -> int:
    """The days `version` was compared with the champion on the same rows, from the history of
    `<p>/challenger_comparison`."""
    days = set()
    records = instance.fetch_materializations(key(spec, "challenger_comparison"), limit=10_000)
    for record in records.records:
        event = record.asset_materialization
        same = event.metadata.get("same_rows") if event else None
        if same is not None and same.value.get(version) is True:  # type: ignore[union-attr]
            days.add(record.partition_key)
    return len(days)


def training_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    assert spec.training is not None
    name, group, alias = spec.name, f"{spec.name}_training", spec.training.promote_alias

    @dg.asset(
        key=training_key(name, "candidate_model"),
        group_name=group,
        pool=pool(spec),
        check_specs=checks.specs(training_key(name, "candidate_model"), [checks.PROMOTION_GATE]),
        description=f"LightGBM trained on the last {spec.training.window_days} labelled days, "
        f"evaluated on the last {spec.training.holdout_days}.",
        kinds={"lightgbm"},
        io_manager_key=RECORDS_IO_MANAGER,
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
        assert spec.training is not None
        needed = spec.training.shadow_days
        if passed and needed and candidate.version != candidate.champion_version:
            days = shadow_days(context.instance, spec, candidate.version)
            passed, why = training.shadow_gate(candidate, days, needed)
            description = f"{description}; {why}"
            if not passed:  # the daily runs score it beside the champion from now on
                shadowed = training.promote(
                    model_store, spec.model.name, spec.training.challenger_alias, candidate.version
                )
                context.log.info(
                    f"{spec.model.name}@{shadowed.alias}: {shadowed.previous} -> "
                    f"{candidate.version}"
                )
        yield dg.AssetCheckResult(
            check_name=checks.PROMOTION_GATE,
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
        key=training_key(name, "champion_model"),
        ins={"candidate": dg.AssetIn(training_key(name, "candidate_model"))},
        group_name=group,
        pool=pool(spec),
        description=f"Points {spec.model.name}@{alias} at a candidate that passed the gate.",
        io_manager_key=RECORDS_IO_MANAGER,
    )
    def champion_model(
        context: dg.AssetExecutionContext, model_store: ModelStore, candidate: CandidateModel
    ) -> dg.Output[Promotion]:
        promotion = training.promote(model_store, spec.model.name, alias, candidate.version)
        context.log.info(f"{spec.model.name}@{alias}: {promotion.previous} -> {candidate.version}")
        return dg.Output(
            promotion,
            metadata={"model_version": candidate.version, "previous": promotion.previous or "none"},
        )

    return [candidate_model, champion_model]
