"""Production wiring without a cluster: every executor, run launcher and instance config we ship
is checked against Dagster's own config schema (nothing validates it before a run otherwise)."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_celery import celery_executor
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.job import get_user_defined_k8s_config
from dagster_postgres import DagsterPostgresStorage

from batch_inference_assets import PipelineSpec, load_specs
from batch_inference_assets.assets.shards import score_op_name
from batch_inference_assets.spec import SpecError, parse_spec
from dagster_defs.definitions import PIPELINES_DIR, build_definitions
from dagster_defs.deployments import local_resources
from dagster_defs.executors import celery_config, chosen_executor, k8s_config
from tests.conftest import DEPLOY, churn_yaml

PG_ENV = {
    "DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "secret",
    "BATCH_INFERENCE_S3_BUCKET": "bucket",
}  # fmt: skip
EXECUTOR_ENV = (
    "BATCH_INFERENCE_EXECUTOR", "BATCH_INFERENCE_CELERY_BROKER", "BATCH_INFERENCE_CELERY_BACKEND",
    "BATCH_INFERENCE_CELERY_DIR", "BATCH_INFERENCE_K8S_NAMESPACE", "BATCH_INFERENCE_K8S_MAX_PODS",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in EXECUTOR_ENV:
        monkeypatch.delenv(name, raising=False)


def valid(config_type: Any, value: Any) -> dict[str, Any]:
    result = process_config(config_type, value)
    assert result.success, [e.message for e in result.errors or []]
    return result.value  # type: ignore[return-value]


@pytest.fixture
def specs() -> list[PipelineSpec]:
    return load_specs(PIPELINES_DIR)


def test_each_shard_step_asks_its_pod_for_the_spec_resources(
    specs: list[PipelineSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_INFERENCE_EXECUTOR", "k8s")
    monkeypatch.setenv("BATCH_INFERENCE_K8S_NAMESPACE", "batch-inference")
    monkeypatch.setenv("BATCH_INFERENCE_K8S_MAX_PODS", "16")
    config = valid(k8s_job_executor.config_schema.config_type, k8s_config())
    assert config["job_namespace"] == "batch-inference"
    assert config["max_concurrent"] == 16
    defs = build_definitions(local_resources(Path("/nonexistent")), executor=chosen_executor())
    for spec in specs:
        job = defs.resolve_job_def(f"{spec.name}_daily")
        assert job.executor_def.name == "k8s"
        ops = {op.name: op for op in job.graph.iterate_op_defs()}
        # The pod size rides on the op that the job really runs, as dagster-k8s reads it.
        pod = get_user_defined_k8s_config(ops[score_op_name(spec.name)].tags)
        need = spec.sharding.step_resources
        assert pod.container_config["resources"] == {
            "requests": {"cpu": need.cpu, "memory": need.memory},
            "limits": {"memory": need.memory},
        }
        assert not any("dagster-k8s/config" in op.tags for n, op in ops.items() if "score" not in n)


def test_shard_step_resources_must_be_kubernetes_quantities() -> None:
    raw = churn_yaml()
    raw["sharding"]["step_resources"] = {"cpu": "two", "memory": "1.5 GB"}
    with pytest.raises(SpecError) as err:
        parse_spec(raw, "churn.yaml")
    assert "sharding.step_resources.cpu" in str(err.value)
    assert "sharding.step_resources.memory" in str(err.value)


def test_celery_executor_config_for_a_broker_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_INFERENCE_CELERY_BROKER", "redis://:pw@redis:6379/0")
    config = valid(celery_executor.config_schema.config_type, celery_config())
    assert config["broker"] == "redis://:pw@redis:6379/0"  # resolved from the env at run start
    assert config["backend"] == "redis://:pw@redis:6379/0"  # Redis is its own result backend
    assert config["include"] == ["dagster_defs.definitions"]  # workers import the definitions

    monkeypatch.setenv("BATCH_INFERENCE_CELERY_BROKER", "amqp://user:pw@rabbit:5672//")
    assert valid(celery_executor.config_schema.config_type, celery_config())["backend"] == "rpc://"
    monkeypatch.setenv("BATCH_INFERENCE_CELERY_BACKEND", "redis://results:6379/1")
    assert celery_config()["backend"] == {"env": "BATCH_INFERENCE_CELERY_BACKEND"}


def test_celery_needs_exactly_one_broker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs BATCH_INFERENCE_CELERY_BROKER"):
        celery_config()
    monkeypatch.setenv("BATCH_INFERENCE_CELERY_BROKER", "redis://redis:6379/0")
    monkeypatch.setenv("BATCH_INFERENCE_CELERY_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="not both"):
        celery_config()


def test_an_unknown_executor_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_INFERENCE_EXECUTOR", "dask")
    with pytest.raises(ValueError, match="must be one of"):
        chosen_executor()


def test_the_production_instance_yaml_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in PG_ENV.items():
        monkeypatch.setenv(k, v)
    config, _ = dagster_instance_config(str(DEPLOY))  # raises on any schema error
    db = valid(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])["postgres_db"]
    assert (db["hostname"], db["port"], db["password"]) == ("db.internal", 5432, "secret")
    valid(S3ComputeLogManager.config_type(), config["compute_logs"]["config"])
    # The same limits as the embedded default.
    local, _ = dagster_instance_config(str(Path(__file__).parents[2] / ".dagster_home"))
    assert config["concurrency"]["pools"] == local["concurrency"]["pools"]
    assert local["concurrency"]["pools"]["granularity"] == "run"


def helm_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The parts of dagster.yaml the official chart renders from our values (its templates
    helpers/instance/_run-launcher.tpl, _postgresql.tpl and _concurrency.tpl, for what we set)."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = k8s.get("runK8sConfig", {})
    pg = values["postgresql"]
    conc = values["concurrency"]
    return {
        "run_launcher": {
            "load_incluster_config": k8s["loadInclusterConfig"],
            "job_namespace": k8s["jobNamespace"],
            "image_pull_policy": k8s["imagePullPolicy"],
            "service_account_name": "dagster",
            "dagster_home": {"env": "DAGSTER_HOME"},
            "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
            "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
            "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}]
            + [c["name"] for c in k8s["envConfigMaps"]],
            "env_secrets": [c["name"] for c in k8s["envSecrets"]],
            "run_k8s_config": {
                "container_config": run_k8s.get("containerConfig", {}),
            },
        },
        "postgres_db": {
            "username": pg["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": pg["postgresqlHost"],
            "db_name": pg["postgresqlDatabase"],
            "port": pg["service"]["port"],
            "params": pg["postgresqlParams"],
            "scheme": pg["postgresqlScheme"],
        },
        "concurrency": {
            "pools": {
                "default_limit": conc["pools"]["defaultLimit"],
                "granularity": conc["pools"]["granularity"],
            },
            "runs": {
                "max_concurrent_runs": conc["runs"]["maxConcurrentRuns"],
            },
        },
    }


def test_the_helm_values_render_a_valid_run_launcher_storage_and_limits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for k, v in {
        "DAGSTER_HOME": "/opt/dagster/dagster_home", "DAGSTER_PG_PASSWORD": "secret",
        "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "dagster-instance",
        "DAGSTER_K8S_PG_PASSWORD_SECRET": "batch-inference-postgresql",
        "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP": "dagster-pipeline-env",
    }.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    rendered = helm_instance(values)
    launcher = valid(K8sRunLauncher.config_type(), rendered["run_launcher"])
    assert launcher["env_config_maps"][1:] == ["batch-inference-env"]
    assert launcher["run_k8s_config"]["container_config"]["resources"]["limits"]["memory"] == "1Gi"
    valid(DagsterPostgresStorage.config_type(), {"postgres_db": rendered["postgres_db"]})
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"concurrency": rendered["concurrency"]}))
    dagster_instance_config(str(tmp_path))  # raises on any schema error
    assert rendered["concurrency"]["pools"]["granularity"] == "run"
    # What the code location runs with on the cluster: the k8s executor on Snowflake and S3.
    env = yaml.safe_load((DEPLOY / "k8s" / "env.yaml").read_text())["data"]
    assert env["BATCH_INFERENCE_EXECUTOR"] == "k8s"
    assert env["BATCH_INFERENCE_DEPLOYMENT"] == "snowflake_s3"
    assert (
        env["BATCH_INFERENCE_K8S_NAMESPACE"]
        == values["runLauncher"]["config"]["k8sRunLauncher"]["jobNamespace"]
    )
