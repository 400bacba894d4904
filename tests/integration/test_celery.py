"""The shard fan-out on Celery: real worker processes, a real broker, the user's command.

Two workers (one process each, as if on two machines) are started the way the README says,
with `python -m dagster_defs.celery_worker`, and `dagster asset materialize` submits the run's
steps to them. The partition must come out exactly as the multiprocess executor publishes it.
The broker is kombu's filesystem transport (one machine, no service) or, as in production, a
redis-server given by BATCH_INFERENCE_CELERY_BROKER.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import redis

from dagster_defs.demo.seed import FIRST_DAY, seed
from dagster_defs.deployments import local_resources
from tests.conftest import DAY, churn_yaml, materialize_cli, read_table, write_pipeline
from tests.servers_redis import redis_server

pytestmark = pytest.mark.slow

# Enough rows for many shards: DuckDB will not cut a day into row groups under ~2,048 rows.
CUSTOMERS = 24_000
SHARD_ROWS = 3_000
SHARDS = CUSTOMERS // SHARD_ROWS


def pipelines_with_small_shards(folder: Path) -> Path:
    raw = churn_yaml()
    raw["sharding"].update(target_rows=SHARD_ROWS, max_parallel=SHARDS)
    raw["retries"] = {"max_retries": 0, "delay_seconds": 0}
    write_pipeline(folder, raw)
    return folder


@pytest.fixture(scope="module")
def large_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("large")
    days = (date.fromisoformat(DAY) - FIRST_DAY).days + 1
    seed(root, customers=CUSTOMERS, days=days, train_days=days - 3, holdout_days=2)
    return root


@pytest.fixture
def celery_env(
    large_template: Path,
    tmp_path: Path,
    production_instance: tuple[Path, dict[str, str]],
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, str]]:
    """What the code location and every worker share: the production instance (Postgres),
    the broker, the data and the pipeline YAML. The broker is a folder unless the test asks
    for "redis" (indirect parametrization)."""
    root = tmp_path / "data"
    shutil.copytree(large_template, root)
    env = {
        **production_instance[1],
        "BATCH_INFERENCE_ROOT": str(root),
        "BATCH_INFERENCE_PIPELINES_DIR": str(pipelines_with_small_shards(tmp_path / "pipelines")),
        "BATCH_INFERENCE_EXECUTOR": "celery",
    }
    if getattr(request, "param", "filesystem") == "redis":
        with redis_server() as url:  # outlives the workers, which are torn down first
            yield {**env, "BATCH_INFERENCE_CELERY_BROKER": url}
    else:
        yield {**env, "BATCH_INFERENCE_CELERY_DIR": str(tmp_path / "broker")}


@pytest.fixture
def worker_cwd(tmp_path: Path) -> Path:
    """Where the workers are started: nothing of the broker's may land here."""
    folder = tmp_path / "worker_cwd"
    folder.mkdir()
    return folder


@pytest.fixture
def workers(celery_env: dict[str, str], tmp_path: Path, worker_cwd: Path) -> Iterator[list[Path]]:
    logs, procs = [], []
    for i in range(2):
        log = tmp_path / f"worker{i}.log"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "dagster_defs.celery_worker",
                 "--concurrency", "1", "--name", f"worker{i}@test"],
                env={**os.environ, **celery_env}, stdout=log.open("w"), stderr=subprocess.STDOUT,
                start_new_session=True, cwd=worker_cwd,
            )
        )  # fmt: skip
        logs.append(log)
    deadline = time.monotonic() + 60
    while not all("ready." in log.read_text() for log in logs):
        for p, log in zip(procs, logs, strict=True):
            assert p.poll() is None, f"worker exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "workers not ready:\n" + logs[0].read_text()[-3000:]
        time.sleep(0.2)
    yield logs
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def step_workers(home: Path, env: dict[str, str]) -> dict[str, str]:
    """step key -> the Celery worker that executed it, from the run's engine events."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            run = instance.get_runs(limit=1)[0]
            records = instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT
            ).records
    out = {}
    for r in records:
        event = r.event_log_entry.dagster_event
        meta = event.engine_event_data.metadata if event else {}
        if "Celery worker" in meta:
            out[r.event_log_entry.step_key] = str(meta["Celery worker"].value)
    return out


def test_celery_workers_score_a_partition_like_the_multiprocess_executor(
    celery_env: dict[str, str],
    workers: list[Path],
    worker_cwd: Path,
    large_template: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_cwd = tmp_path / "run_cwd"
    run_cwd.mkdir()
    monkeypatch.chdir(run_cwd)  # the CLI below starts here
    home = Path(celery_env["DAGSTER_HOME"])
    done = materialize_cli("group:churn", DAY, home, celery_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # kombu's filesystem transport keeps its exchange bindings under the broker folder, not in
    # ./control of the run or of a worker (the repository, when started from it).
    control = Path(celery_env["BATCH_INFERENCE_CELERY_DIR"]) / "control"
    assert any(control.iterdir()), "kombu wrote no exchange bindings under the broker folder"
    assert not (run_cwd / "control").exists() and not (worker_cwd / "control").exists()
    ran_on = step_workers(home, celery_env)
    shard_steps = {k: w for k, w in ran_on.items() if "score_shard[" in k}
    assert len(shard_steps) == SHARDS
    assert set(ran_on.values()) == {"worker0@test", "worker1@test"}  # both machines worked
    celery_table = read_table(local_resources(Path(celery_env["BATCH_INFERENCE_ROOT"])))
    assert celery_table.num_rows == CUSTOMERS

    # The same partition with the default multiprocess executor, on a fresh copy of the data.
    other_root = tmp_path / "multiprocess"
    shutil.copytree(large_template, other_root)
    env = {
        "BATCH_INFERENCE_ROOT": str(other_root),
        "BATCH_INFERENCE_PIPELINES_DIR": celery_env["BATCH_INFERENCE_PIPELINES_DIR"],
        "BATCH_INFERENCE_EXECUTOR": "multiprocess",
    }
    done = materialize_cli("group:churn", DAY, tmp_path / "sqlite_home", env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    multiprocess_table = read_table(local_resources(other_root))
    compared = [c for c in celery_table.column_names if c not in ("run_id", "scored_at")]
    assert celery_table.select(compared).equals(multiprocess_table.select(compared))


@pytest.mark.parametrize("celery_env", ["redis"], indirect=True)
def test_celery_workers_take_the_steps_from_a_redis_broker(
    celery_env: dict[str, str], workers: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production setting: BATCH_INFERENCE_CELERY_BROKER=redis://..., which is also the
    result backend. One run; the comparison with the multiprocess executor is the test above."""
    monkeypatch.chdir(tmp_path)
    home = Path(celery_env["DAGSTER_HOME"])
    done = materialize_cli("group:churn", DAY, home, celery_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran_on = step_workers(home, celery_env)
    assert len([k for k in ran_on if "score_shard[" in k]) == SHARDS
    assert set(ran_on.values()) == {"worker0@test", "worker1@test"}
    table = read_table(local_resources(Path(celery_env["BATCH_INFERENCE_ROOT"])))
    assert table.num_rows == CUSTOMERS
    with redis.Redis.from_url(celery_env["BATCH_INFERENCE_CELERY_BROKER"]) as broker:
        results = list(broker.scan_iter(match="celery-task-meta-*"))
        bindings = list(broker.scan_iter(match="_kombu.binding.*"))
    assert len(results) == len(ran_on), "each step's result went through the Redis backend"
    assert bindings, "kombu declared no queue binding in Redis"
