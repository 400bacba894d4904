"""Retries, timeouts, re-execution from failure, hard kills, limits, retention, progress."""

import os
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from batch_inference_assets import PipelineSpec, build_pipeline
from batch_inference_assets.assets.retention import build_retention_job
from tests.conftest import (
    DAY,
    OTHER_DAYS,
    RERUN_AFTER_SHARD_00001,
    SEED_CUSTOMERS,
    Materialize,
    failure_message,
    last_run_steps,
    materialize_cli,
    read_table,
)
from tests.faulty_defs import churn_job

REPO = Path(__file__).resolve().parents[2]


def _recon() -> Any:
    """The faulty job, rebuilt for this test's environment.

    Dagster caches the last reconstructed job per pointer; each test has its own root and fault.
    """
    recon = dg.reconstructable(churn_job)
    type(recon).get_definition.cache_clear()
    type(recon).get_repository_definition.cache_clear()
    return recon


def _events(result: Any, kind: str) -> list[Any]:
    return [e for e in result.all_events if e.event_type_value == kind]


def _started_steps(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    return {
        r.event_log_entry.step_key
        for r in instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.STEP_START
        ).records
    }


def test_a_transient_shard_failure_is_retried(
    fault_env: dict[str, str], resources: dict[str, Any]
) -> None:
    fault_env["BI_TEST_FAULT_MODE"] = "raise_once"
    os.environ["BI_TEST_FAULT_MODE"] = "raise_once"
    Path(fault_env["BI_TEST_FAULT_MARKER"]).touch()
    with dg.instance_for_test() as instance:
        result = dg.execute_job(_recon(), instance, tags={"dagster/partition": DAY})
        assert result.success
        retried = [
            e.step_key for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"
        ]
        assert retried == ["churn__scored_shards.churn__score_shard[shard_00001]"]
    assert read_table(resources).num_rows == SEED_CUSTOMERS


def test_deterministic_failures_are_not_retried(
    materialize: Materialize, churn_spec: PipelineSpec, root: Path
) -> None:
    version = (root / "models" / "churn" / "aliases" / "champion").read_text()
    # The model file changes after the model asset verified it: every shard step fails the same way.
    result = materialize(DAY)
    assert result.success
    (root / "models" / "churn" / "versions" / version / "model.txt").write_text("tree\n")
    pipeline = build_pipeline(churn_spec)
    again = dg.materialize(
        pipeline.assets,
        selection=dg.AssetSelection.assets(pipeline.key("scored_shards")),
        partition_key=DAY, resources=materialize.__closure__[1].cell_contents,  # type: ignore[index]
        raise_on_error=False,
    )  # fmt: skip
    assert not again.success
    assert not _events(again, "STEP_UP_FOR_RETRY")
    assert "changed on disk since it was resolved" in failure_message(again)


def test_a_shard_over_its_timeout_fails_clearly(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    spec = churn_spec.model_copy(update={
        "timeouts": churn_spec.timeouts.model_copy(update={"shard_seconds": 1e-6}),
        "retries": churn_spec.retries.model_copy(update={"max_retries": 1, "delay_seconds": 0}),
    })  # fmt: skip
    result = materialize(DAY, spec)
    assert not result.success
    message = failure_message(result)
    assert "pipeline 'churn', partition 2026-10-15, scoring shard_0000" in message
    assert "exceeded its 1e-06s timeout" in message
    assert len(_events(result, "STEP_UP_FOR_RETRY")) >= 1  # a slow node may recover: retried
    assert read_table(resources).num_rows == 0


def test_reexecution_from_failure_reruns_only_the_failed_shard(
    fault_env: dict[str, str], resources: dict[str, Any]
) -> None:
    marker = Path(fault_env["BI_TEST_FAULT_MARKER"])
    marker.touch()
    with dg.instance_for_test() as instance:
        recon = _recon()
        first = dg.execute_job(
            recon, instance, tags={"dagster/partition": DAY}, raise_on_error=False
        )
        assert not first.success
        assert read_table(resources).num_rows == 0  # nothing published
        failed = [e.step_key for e in first.all_events if e.is_step_failure]
        assert failed == ["churn__scored_shards.churn__score_shard[shard_00001]"]

        marker.unlink()  # the fault is gone
        second = dg.execute_job(
            recon, instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
            tags={"dagster/partition": DAY},  # execute_job does not copy it (PITFALLS.md)
        )  # fmt: skip
        assert second.success
        assert _started_steps(instance, second.run_id) == RERUN_AFTER_SHARD_00001
    table = read_table(resources)
    assert table.num_rows == SEED_CUSTOMERS
    assert len(set(table.column("customer_id").to_pylist())) == SEED_CUSTOMERS
    assert set(table.column("run_id").to_pylist()) == {first.run_id, second.run_id}


@pytest.mark.slow
def test_a_hard_killed_shard_step_publishes_nothing_and_a_rerun_completes(
    fault_env: dict[str, str], resources: dict[str, Any], materialize: Materialize, tmp_path: Path
) -> None:
    assert materialize(OTHER_DAYS[0]).success
    before = read_table(resources)
    env = {**fault_env, "BI_TEST_FAULT_MODE": "kill", "BI_TEST_EXECUTOR": "multiprocess"}
    Path(env["BI_TEST_FAULT_MARKER"]).touch()
    done = materialize_cli("key:churn/*", DAY, tmp_path / "home", env, module="tests.faulty_defs")
    assert done.returncode != 0
    run, failed = last_run_steps(tmp_path / "home", dg.DagsterEventType.STEP_FAILURE)
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert "churn__scored_shards.churn__score_shard[shard_00001]" in failed
    assert read_table(resources).equals(before)  # SIGKILL mid-run: the table is untouched

    Path(env["BI_TEST_FAULT_MARKER"]).unlink()
    done = materialize_cli("key:churn/*", DAY, tmp_path / "home", env, module="tests.faulty_defs")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    day = read_table(resources, "WHERE partition_date = ?", (DAY,))
    assert day.num_rows == SEED_CUSTOMERS
    assert read_table(resources, "WHERE partition_date <> ?", (DAY,)).equals(before)


def test_row_limit_fails_before_scoring(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    spec = churn_spec.model_copy(
        update={"limits": churn_spec.limits.model_copy(update={"max_rows": 5000})}
    )
    result = materialize(DAY, spec)
    assert not result.success
    assert "row_count_within_limit failed (8,000 rows, limit 5,000)" in failure_message(result)
    assert not [e for e in result.all_events if "score_shard" in (e.step_key or "")]
    assert read_table(resources).num_rows == 0


def test_progress_and_cost_are_recorded(
    churn_spec: PipelineSpec, resources: dict[str, Any]
) -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            build_pipeline(churn_spec).assets, partition_key=DAY, resources=resources,
            instance=instance,
        )  # fmt: skip
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert result.success
    shard_outputs = [
        e.event_specific_data.metadata for e in result.all_events
        if e.is_successful_output and "score_shard[" in (e.step_key or "")
    ]  # fmt: skip
    done = sorted(md["progress/shards_done"].value for md in shard_outputs)
    total = shard_outputs[0]["progress/shards_total"].value
    assert done == list(range(1, total + 1))  # in process, shards finish one after another
    last = max(shard_outputs, key=lambda md: md["progress/shards_done"].value)
    assert last["progress/rows_done"].value == last["progress/rows_total"].value == SEED_CUSTOMERS
    assert "progress/eta_seconds" in last
    assert any(f"{total}/{total} shards, 8,000/8,000 rows scored, ETA" in m for m in logs)
    md = result.asset_materializations_for_node("churn__predictions")[0].metadata
    assert md["cost/warehouse_seconds"].value > 0 and md["cost/compute_seconds"].value > 0
    assert md["cost/estimated_usd"].value > 0


def test_retention_deletes_only_old_intermediate_files(
    materialize: Materialize, resources: dict[str, Any], root: Path
) -> None:
    first, second = materialize(OTHER_DAYS[0]), materialize(OTHER_DAYS[0])
    assert first.success and second.success and materialize(DAY).success
    table = read_table(resources)
    store = root / "object_store" / "churn"
    job, schedule = build_retention_job(["churn"])
    assert schedule.cron_schedule == "30 3 * * *"

    def age(run_id: str) -> None:
        old = time.time() - 10 * 86400
        for stage in ("features", "scored"):
            for f in (store / stage / OTHER_DAYS[0] / run_id).iterdir():
                os.utime(f, (old, old))

    def clean() -> int:
        result = job.execute_in_process(resources={"object_store": resources["object_store"]})
        assert result.success
        return int(result.output_for_node("delete_expired_intermediate_files"))

    age(first.run_id)  # each run has its own folders: the old run's go, the newer run's stay
    assert clean() == 2
    for stage in ("features", "scored"):
        assert not (store / stage / OTHER_DAYS[0] / first.run_id).exists()
        assert (store / stage / OTHER_DAYS[0] / second.run_id).exists()
    age(second.run_id)  # then the day's last run, and its emptied day folders
    assert clean() == 2
    assert not (store / "features" / OTHER_DAYS[0]).exists()
    assert not (store / "scored" / OTHER_DAYS[0]).exists()
    assert (store / "scored" / DAY).exists() and (store / "features" / DAY).exists()
    assert (store / "drift" / f"{OTHER_DAYS[0]}.json").exists()  # drift profiles are kept
    assert read_table(resources).equals(table)  # published tables are never touched


def test_instance_limits_and_job_tags(
    churn_spec: PipelineSpec, resources: dict[str, Any], tmp_path: Path
) -> None:
    shutil.copy(REPO / ".dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    config = instance.get_concurrency_config()
    assert config.run_queue_config.max_concurrent_runs == 4
    # Runs of one pipeline are limited by its pool, counted per run, not by a job tag.
    assert not config.run_queue_config.tag_concurrency_limits
    assert config.pool_config.default_pool_limit == 2
    assert config.pool_config.pool_granularity.value == "run"
    assert instance.run_monitoring_enabled
    pipeline = build_pipeline(churn_spec)
    defs = dg.Definitions(assets=pipeline.assets, jobs=[pipeline.job], resources=resources)
    job = defs.resolve_job_def("churn_daily")
    assert job.tags["pipeline"] == "churn"
    assert job.tags["dagster/max_runtime"] == str(churn_spec.timeouts.run_seconds)
    # Every op the pipeline can run, alone or in any selection, is in the pipeline's pool.
    ops = {op.name: op.pool for a in pipeline.assets for op in a.node_def.iterate_op_defs()}
    assert len(ops) >= 8 and set(ops.values()) == {"batch_inference.churn"}, ops
