"""Shared fixtures: a small seeded demo warehouse and model, copied fresh for each test."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from batch_inference_assets import PipelineSpec, build_pipeline, load_spec
from batch_inference_assets.spec import COMPONENT_TYPE, SQL_SECTIONS
from dagster_defs.definitions import PIPELINES_DIR
from dagster_defs.demo.seed import seed
from dagster_defs.deployments import DEMO_OUTPUT_SCHEMA, local_resources

# Small but realistic: 16 days x 8,000 customers; DuckDB writes ~4 row groups a day.
SEED_CUSTOMERS = 8_000
SEED_DAYS = 16
DAY = "2026-10-15"
OTHER_DAYS = ("2026-10-13", "2026-10-14")
EMPTY_DAY = "2026-10-20"  # inside the partition range, after the seeded data
TABLE = f"{DEMO_OUTPUT_SCHEMA}.churn_predictions"
# What a re-execution from failure re-runs when only shard_00001 failed: it and downstream.
RERUN_AFTER_SHARD_00001 = {
    "churn__scored_shards.churn__score_shard[shard_00001]",
    "churn__scored_shards.churn__collect_scores",
    "churn__predictions",
    "churn__shadow_predictions",
    "churn__challenger_comparison",
    "churn__drift_stats",
    "churn__exports",
    "churn__top_k",
}
DEPLOY = Path(__file__).parents[1] / "dagster_defs" / "deploy"  # production instance, Helm values
OUTPUT_COLUMNS = [
    "customer_id", "score", "label", "model_version", "scored_at", "run_id", "partition_date",
    "region",  # passthrough
    "reason_1", "reason_1_contribution", "reason_2", "reason_2_contribution",
    "reason_3", "reason_3_contribution", "reason_rest_contribution",  # explain: top_k 3
]  # fmt: skip


@pytest.fixture(autouse=True)
def _own_dagster_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make test` exports the checkout's DAGSTER_HOME; what a test records (run_partition
    uses DAGSTER_HOME's instance) goes to a throwaway one instead."""
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seeded")
    seed(root, customers=SEED_CUSTOMERS, days=SEED_DAYS, train_days=10, holdout_days=4)
    return root


@pytest.fixture
def root(seeded_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(seeded_template, target)
    return target


@pytest.fixture
def resources(root: Path) -> dict[str, Any]:
    return local_resources(root)


@pytest.fixture
def churn_spec() -> PipelineSpec:
    spec = load_spec(PIPELINES_DIR / "churn" / "defs.yaml")
    # Smaller shards than the demo so every run here fans out to several steps.
    return spec.model_copy(
        update={"sharding": spec.sharding.model_copy(update={"target_rows": 2_000})}
    )


Materialize = Callable[..., dg.ExecuteInProcessResult]


@pytest.fixture
def materialize(resources: dict[str, Any], churn_spec: PipelineSpec) -> Materialize:
    """Run a pipeline's whole asset graph for one partition, in process."""

    def run(partition: str, spec: PipelineSpec | None = None) -> dg.ExecuteInProcessResult:
        pipeline = build_pipeline(spec or churn_spec)
        return dg.materialize(
            pipeline.assets, partition_key=partition, resources=resources, raise_on_error=False
        )

    return run


def read_table(
    resources: dict[str, Any], where: str = "", params: tuple[Any, ...] = ()
) -> pa.Table:
    warehouse = resources["warehouse"]
    exists = (
        warehouse.query(
            "SELECT COUNT(*) AS n FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = 'churn_predictions'",
            [DEMO_OUTPUT_SCHEMA],
        )
        .column("n")[0]
        .as_py()
    )
    if not exists:
        return pa.table({})
    return warehouse.query(
        f"SELECT * FROM {TABLE} {where} ORDER BY partition_date, customer_id", list(params)
    )


def materialize_cli(
    select: str,
    partition: str,
    home: Path,
    env: dict[str, str],
    module: str = "dagster_defs.definitions",
) -> subprocess.CompletedProcess[str]:
    """`dagster asset materialize` in a fresh process (the multiprocess executor unless `env`
    chooses another), on a SQLite instance in `home` unless it already has a dagster.yaml."""
    home.mkdir(exist_ok=True)
    if not (home / "dagster.yaml").exists():  # a test may bring its own instance
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    cmd = [
        sys.executable, "-m", "dagster", "asset", "materialize",
        "-m", module, "--select", select, "--partition", partition,
    ]  # fmt: skip
    return subprocess.run(
        cmd, env={**os.environ, "DAGSTER_HOME": str(home), **env},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def last_run_steps(home: Path, event: dg.DagsterEventType) -> tuple[dg.DagsterRun, set[str]]:
    """The newest run in the instance at `home`, and the steps with `event` in its event log.

    Step processes print their own log lines and may exit (or be killed) before their output
    is flushed, so the event log, not the CLI's output, says what each step did."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_runs(limit=1)[0]
        records = instance.get_records_for_run(run.run_id, of_type=event).records
    return run, {r.event_log_entry.step_key for r in records if r.event_log_entry.step_key}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "expected a failed step"
    data = failures[0].step_failure_data
    return data.user_failure_data.description if data.user_failure_data else data.error.message


def check_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    """(asset stage, check name) -> passed, for every check evaluated in the run."""
    out = {}
    for e in result.all_events:
        if e.event_type_value == "ASSET_CHECK_EVALUATION":
            ev = e.event_specific_data
            out[(ev.asset_key.path[-1], ev.check_name)] = ev.passed
    return out


_EXIT_STATUS: list[int] = []
# Every process the suite starts inherits this, so the end of the session can find leftovers.
SESSION_MARK = "BI_TEST_SESSION"


def _xdist_worker() -> bool:
    """Inside a pytest-xdist worker (`make test` runs two): the controller, which starts the
    workers with its environment and outlives them, owns the mark and the leftover check."""
    return "PYTEST_XDIST_WORKER" in os.environ


def pytest_sessionstart(session: pytest.Session) -> None:
    import uuid

    if not _xdist_worker():
        os.environ[SESSION_MARK] = uuid.uuid4().hex


def _leftovers() -> list[Any]:
    import psutil

    mark, me = os.environ.get(SESSION_MARK), os.getpid()
    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if proc.pid != me and proc.environ().get(SESSION_MARK) == mark:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.hookimpl(trylast=True)  # after pytest-xdist has stopped its workers
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No process a test started may outlive the suite: wait a little, then fail and stop them."""
    import time

    if _xdist_worker():  # the other worker's tests may still be running
        return
    deadline = time.monotonic() + 15
    while (left := _leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        names = sorted(f"{p.pid} {' '.join(p.cmdline()[:4])}" for p in left)
        sys.stderr.write("processes started by the tests outlived them:\n  " + "\n  ".join(names))
        for proc in left:
            proc.kill()
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _EXIT_STATUS.append(int(session.exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    # DuckDB 2.0 keeps module-level type constants (_duckdb._sqltypes) alive into interpreter
    # teardown, where nanobind prints a benign "leaked instances" report under pytest's summary
    # line. Nothing of ours leaks (checked with gc); end the process once pytest is done instead.
    # A pytest-xdist worker must exit normally (its controller waits for its channel to close):
    # it has sent its results by now, so its report goes nowhere instead (at exit, once pytest
    # has given the captured stderr back).
    if _xdist_worker():
        import atexit

        atexit.register(lambda: os.dup2(os.open(os.devnull, os.O_WRONLY), 2))
    elif _EXIT_STATUS and not config.option.collectonly:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])


def pipeline_yaml(name: str) -> dict[str, Any]:
    """A demo pipeline's attributes (its defs.yaml) as a mapping whose SQL files resolve from
    anywhere."""
    import yaml

    folder = PIPELINES_DIR / name
    raw: dict[str, Any] = yaml.safe_load((folder / "defs.yaml").read_text())["attributes"]
    for section in SQL_SECTIONS:
        if "sql_file" in raw.get(section, {}):
            raw[section]["sql_file"] = str(folder / raw[section]["sql_file"])
    return raw


def churn_yaml() -> dict[str, Any]:
    return pipeline_yaml("churn")


def write_pipeline(folder: Path, raw: dict[str, Any]) -> Path:
    """A pipeline's attributes written as `<folder>/<name>/defs.yaml`, the component's layout."""
    import yaml

    path = folder / raw["name"] / "defs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"type": COMPONENT_TYPE, "attributes": raw}, sort_keys=False))
    return path


def write_test_pipelines(folder: Path, max_retries: int, delay_seconds: float) -> Path:
    """The churn pipeline with test-sized shards and the given retries, as a defs folder."""
    folder.mkdir()
    raw = churn_yaml()
    raw["sharding"]["target_rows"] = 2_000
    raw["retries"] = {"max_retries": max_retries, "delay_seconds": delay_seconds}
    write_pipeline(folder, raw)
    return folder


@pytest.fixture
def fast_pipelines(tmp_path: Path) -> Path:
    return write_test_pipelines(tmp_path / "pipelines", max_retries=2, delay_seconds=0.2)


@pytest.fixture
def fault_env(root: Path, fast_pipelines: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for tests/faulty_defs.py; shard_00001 of DAY fails while the marker exists."""
    env = {
        "BI_TEST_ROOT": str(root),
        "BI_TEST_PIPELINES_DIR": str(fast_pipelines),
        "BI_TEST_FAULT_SUFFIX": f"scored/{DAY}/*/shard_00001.parquet",
        "BI_TEST_FAULT_MARKER": str(root / "fault-armed"),
        "BI_TEST_FAULT_MODE": "raise",
        "BI_TEST_EXECUTOR": "in_process",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def read_downstream(spec: PipelineSpec, resources: dict[str, Any], day: str) -> pd.DataFrame:
    """What a user's own asset that takes `<p>/predictions` as an input receives."""
    received: dict[str, pd.DataFrame] = {}
    pipeline = build_pipeline(spec)

    @dg.asset(
        partitions_def=pipeline.partitions, ins={"rows": dg.AssetIn(pipeline.key("predictions"))}
    )
    def retention_offers(rows: pd.DataFrame) -> pd.DataFrame:
        received["rows"] = rows
        return rows[rows["score"] > 0.5]  # stored by the deployment's default IO manager

    result = dg.materialize(
        [*pipeline.assets, retention_offers],
        selection=[retention_offers.key],
        partition_key=day,
        resources=resources,
    )
    assert result.success
    return received["rows"]
