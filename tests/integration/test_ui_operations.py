"""What operators do in the UI, over GraphQL against a `dagster dev` started here:
re-execute a failed run from failure, and backfill a range (also from the CLI)."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
import yaml

from batch_inference_assets import build_pipeline, load_spec
from dagster_defs.definitions import PIPELINES_DIR
from dagster_defs.deployments import local_resources
from tests.conftest import (
    DAY,
    EMPTY_DAY,
    RERUN_AFTER_SHARD_00001,
    SEED_CUSTOMERS,
    materialize_cli,
    write_test_pipelines,
)
from tests.servers import stop_group, webhook_recorder

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
LOCATION = "faulty"
REPOSITORY = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
STABLE = ["customer_id", "score", "label", "model_version", "partition_date"]


class Dagster:
    def __init__(
        self, url: str, root: Path, home: Path, env: dict[str, str], alerts: list[dict[str, Any]]
    ) -> None:
        self.url, self.root, self.home, self.env, self.alerts = url, root, home, env, alerts

    def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            doc = json.loads(response.read())
        assert "errors" not in doc, doc
        return doc["data"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.gql(
            "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status "
            "tags { key value } stepStats { stepKey status } } } }",
            {"id": run_id},
        )["runOrError"]

    def wait_run(self, run_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                return run
            time.sleep(1)
        raise TimeoutError(f"run {run_id} did not finish: {self.run(run_id)}")

    def runs_with_tag(self, key: str, value: str) -> list[dict[str, Any]]:
        return self.gql(
            "query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results { runId "
            "status tags { key value } } } } }",
            {"f": {"tags": [{"key": key, "value": value}]}},
        )["runsOrError"]["results"]

    def table(self, day: str) -> Any:
        warehouse = local_resources(self.root)["warehouse"]
        exists = (
            warehouse.query(
                "SELECT COUNT(*) AS n FROM information_schema.tables "
                "WHERE table_schema = 'predictions' AND table_name = 'churn_predictions'"
            )
            .column("n")[0]
            .as_py()
        )
        if not exists:
            return pa.table({})
        return warehouse.query(
            "SELECT * FROM predictions.churn_predictions WHERE partition_date = ? "
            "ORDER BY customer_id",
            [day],
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dagster(seeded_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dagster]:
    base = tmp_path_factory.mktemp("ui")
    root = base / "data"
    shutil.copytree(seeded_template, root)
    pipelines = write_test_pipelines(base / "pipelines", max_retries=0, delay_seconds=0)
    home = base / "home"
    home.mkdir()
    instance_yaml = yaml.safe_load((REPO / ".dagster_home" / "dagster.yaml").read_text())
    instance_yaml["run_monitoring"]["poll_interval_seconds"] = 2  # so the timeout test is quick
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml))
    workspace = base / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "tests.faulty_defs", "working_directory": str(REPO),
        "location_name": LOCATION,
    }}]}))  # fmt: skip
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BI_TEST_ROOT": str(root),
        "BI_TEST_PIPELINES_DIR": str(pipelines),
        "BI_TEST_FAULT_SUFFIX": f"scored/{DAY}/*/shard_00001.parquet",
        "BI_TEST_FAULT_MARKER": str(root / "fault-armed"),
        "BI_TEST_FAULT_MODE": "raise",
        "BI_TEST_EXECUTOR": "in_process",
    }
    hook = contextlib.ExitStack()
    url, alerts = hook.enter_context(webhook_recorder())
    env["BATCH_INFERENCE_ALERT_WEBHOOK_URL"] = url
    port = _free_port()
    log = (base / "dagster-dev.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", "127.0.0.1",
         "-p", str(port)],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    client = Dagster(f"http://127.0.0.1:{port}", root, home, env, alerts)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status = client.gql(
                    "{ workspaceOrError { ... on Workspace { locationEntries { "
                    "locationOrLoadError { __typename } } } } }"
                )
                entries = status["workspaceOrError"]["locationEntries"]
                if (
                    entries
                    and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                ):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((base / "dagster-dev.log").read_text()[-5000:])
            time.sleep(1)
        yield client
    finally:
        stop_group(proc)  # dagster dev, its webserver and its daemon
        log.close()
        hook.close()


LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
REEXECUTE = """mutation($p: ReexecutionParams!) { launchRunReexecution(reexecutionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
BACKFILL = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""


def test_reexecute_from_failure_through_graphql(dagster: Dagster) -> None:
    marker = Path(dagster.env["BI_TEST_FAULT_MARKER"])
    marker.touch()
    launched = dagster.gql(LAUNCH, {"p": {
        "selector": {**REPOSITORY, "jobName": "churn_daily"},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DAY}]},
    }})["launchRun"]  # fmt: skip
    assert launched["__typename"] == "LaunchRunSuccess", launched
    parent_id = launched["run"]["runId"]
    parent = dagster.wait_run(parent_id)
    assert parent["status"] == "FAILURE"
    failed = [s["stepKey"] for s in parent["stepStats"] if s["status"] == "FAILURE"]
    assert failed == ["churn__scored_shards.churn__score_shard[shard_00001]"]
    assert dagster.table(DAY).num_rows == 0

    marker.unlink()
    again = dagster.gql(REEXECUTE, {"p": {"parentRunId": parent_id, "strategy": "FROM_FAILURE"}})
    child_id = again["launchRunReexecution"]["run"]["runId"]
    child = dagster.wait_run(child_id)
    assert child["status"] == "SUCCESS"
    assert {"key": "dagster/partition", "value": DAY} in child["tags"]  # GraphQL keeps it
    executed = {s["stepKey"] for s in child["stepStats"] if s["status"] == "SUCCESS"}
    assert executed == RERUN_AFTER_SHARD_00001
    table = dagster.table(DAY)
    assert table.num_rows == SEED_CUSTOMERS
    assert len(set(table.column("customer_id").to_pylist())) == SEED_CUSTOMERS


def _alone(seeded_template: Path, tmp_path: Path, days: list[str]) -> dict[str, Any]:
    """The same days, each run alone in process on a fresh copy: the reference."""
    root = tmp_path / "alone"
    shutil.copytree(seeded_template, root)
    resources = local_resources(root)
    spec = load_spec(PIPELINES_DIR / "churn" / "defs.yaml")
    spec = spec.model_copy(
        update={"sharding": spec.sharding.model_copy(update={"target_rows": 2_000})}
    )
    out = {}
    for day in days:
        assert dg.materialize(
            build_pipeline(spec).assets, partition_key=day, resources=resources
        ).success
        out[day] = (
            resources["warehouse"]
            .query(
                "SELECT * FROM predictions.churn_predictions WHERE partition_date = ? "
                "ORDER BY customer_id",
                [day],
            )
            .select(STABLE)
        )
    return out


def test_backfills_from_graphql_and_cli_match_single_day_runs(
    dagster: Dagster, seeded_template: Path, tmp_path: Path
) -> None:
    ui_days, cli_days = ["2026-10-12", "2026-10-13"], ["2026-10-10", "2026-10-11"]
    launched = dagster.gql(BACKFILL, {"p": {
        "selector": {
            "partitionSetName": "churn_daily_partition_set", "repositorySelector": REPOSITORY,
        },
        "partitionNames": ui_days,
    }})["launchPartitionBackfill"]  # fmt: skip
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    ui_backfill = launched["backfillId"]

    cli = subprocess.run(
        [sys.executable, "-m", "dagster", "job", "backfill",
         "-w", str(dagster.home.parent / "workspace.yaml"), "-l", LOCATION, "-j", "churn_daily",
         "--from", cli_days[0], "--to", cli_days[1], "--noprompt"],
        env=dagster.env, cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    cli_backfill = cli.stdout.split("Launched backfill job `")[1].split("`")[0]

    deadline = time.monotonic() + 300
    for backfill, days in ((ui_backfill, ui_days), (cli_backfill, cli_days)):
        while True:
            runs = dagster.runs_with_tag("dagster/backfill", backfill)
            done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
            if len(done) == len(days):
                break
            assert time.monotonic() < deadline, f"backfill {backfill} did not finish: {runs}"
            time.sleep(2)
        assert {r["status"] for r in runs} == {"SUCCESS"}
        partitions = sorted(
            t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"
        )
        assert partitions == days

    reference = _alone(seeded_template, tmp_path, ui_days + cli_days)
    for day in ui_days + cli_days:
        assert dagster.table(day).select(STABLE).equals(reference[day]), day


def test_run_timeout_is_enforced_by_run_monitoring(dagster: Dagster) -> None:
    marker = Path(dagster.env["BI_TEST_FAULT_MARKER"])
    marker.write_text("hang")  # shard_00001 hangs; only the run-level timeout can end it
    try:
        launched = dagster.gql(LAUNCH, {"p": {
            "selector": {**REPOSITORY, "jobName": "churn_daily"},
            "executionMetadata": {"tags": [
                {"key": "dagster/partition", "value": DAY},
                {"key": "dagster/max_runtime", "value": "5"},
            ]},
        }})["launchRun"]  # fmt: skip
        started = time.monotonic()
        run = dagster.wait_run(launched["run"]["runId"], timeout=120)
    finally:
        marker.unlink()
    assert run["status"] in ("FAILURE", "CANCELED")
    assert time.monotonic() - started < 90  # the hang alone would last 600 s


def test_a_failed_cli_run_alerts_once_through_the_daemon(dagster: Dagster) -> None:
    """`dagster asset materialize -m` (and `dg launch`, which runs it) names its own code
    location; the daemon's run-failure sensor of this one must still alert on its runs."""
    cli_env = {k: v for k, v in dagster.env.items() if k.startswith(("BI_TEST_", "BATCH_"))}
    failed = materialize_cli("key:churn/*", EMPTY_DAY, dagster.home, cli_env, "tests.faulty_defs")
    assert failed.returncode != 0  # the day has no source rows
    with dg.DagsterInstance.from_config(str(dagster.home)) as instance:
        run = instance.get_runs(limit=1)[0]
    assert run.status == dg.DagsterRunStatus.FAILURE

    def alerts() -> list[dict[str, Any]]:
        return [
            a for a in dagster.alerts if a["kind"] == "run_failed" and a["run_id"] == run.run_id
        ]

    deadline = time.monotonic() + 150
    while not alerts() and time.monotonic() < deadline:
        time.sleep(2)
    assert len(alerts()) == 1, dagster.alerts
    alert = alerts()[0]
    assert alert["pipeline"] == "churn" and alert["partition"] == EMPTY_DAY
    assert "partition_is_not_empty failed" in alert["message"]
    time.sleep(35)  # another sensor tick: still exactly once
    assert len(alerts()) == 1


def _wait_for(what: str, probe: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)
    return found


def test_a_cli_run_is_re_executed_from_failure_in_the_ui(dagster: Dagster) -> None:
    """`dagster asset materialize` (and `dg launch`) run in the CLI's process, with no code
    location of their own; the `run_identity` sensor gives them this one, so the UI's
    *Re-execute from failure* works on them."""
    cli_env = {k: v for k, v in dagster.env.items() if k.startswith(("BI_TEST_", "BATCH_"))}
    marker = Path(dagster.env["BI_TEST_FAULT_MARKER"])
    marker.touch()
    try:
        failed = materialize_cli("key:churn/*", DAY, dagster.home, cli_env, "tests.faulty_defs")
    finally:
        marker.unlink()
    assert failed.returncode != 0
    with dg.DagsterInstance.from_config(str(dagster.home)) as instance:
        parent_id = instance.get_runs(limit=1)[0].run_id

        def adopted() -> dg.DagsterRun | None:
            run = instance.get_run_by_id(parent_id)
            return run if run and run.remote_job_origin else None

        parent = _wait_for("the run_identity sensor", adopted)
    assert parent.status == dg.DagsterRunStatus.FAILURE
    assert parent.remote_job_origin.location_name == LOCATION
    assert parent.tags["pipeline"] == "churn" and parent.tags["dagster/max_runtime"] == "21600"

    again = dagster.gql(REEXECUTE, {"p": {"parentRunId": parent_id, "strategy": "FROM_FAILURE"}})
    assert again["launchRunReexecution"]["__typename"] == "LaunchRunSuccess", again
    child_id = again["launchRunReexecution"]["run"]["runId"]
    child = dagster.wait_run(child_id)
    assert child["status"] == "SUCCESS"
    assert {"key": "dagster/partition", "value": DAY} in child["tags"]
    executed = {s["stepKey"] for s in child["stepStats"] if s["status"] == "SUCCESS"}
    # `key:churn/*` also selected realized_performance (the daily job leaves it to its sensor)
    assert executed == RERUN_AFTER_SHARD_00001 | {"churn__realized_performance"}
    table = dagster.table(DAY)
    assert table.num_rows == SEED_CUSTOMERS
    # Each row names the run that scored it: the shards reused from the CLI run, and the one
    # re-scored in the UI's re-execution.
    assert set(table.column("run_id").to_pylist()) == {parent_id, child_id}


ASSET_RUN_DAYS = ["2026-10-05", "2026-10-06", "2026-10-07"]


def test_ui_asset_runs_are_held_to_the_pipelines_pool_and_timeout(dagster: Dagster) -> None:
    """What the UI's *Materialize* launches: `__ASSET_JOB` runs with no tag of ours. The
    pipeline's pool (limit 2, counted per run) still holds three days to two at a time."""
    with dg.DagsterInstance.from_config(str(dagster.home)) as instance:
        _wait_for(  # the pipeline_pools sensor registers the pool when the daemon starts
            "the pool",
            lambda: "batch_inference.churn" in instance.event_log_storage.get_concurrency_keys(),
        )
    assets = [{"path": ["churn", s]} for s in (
        "model", "source_features", "shard_manifest", "scored_shards", "predictions",
    )]  # fmt: skip
    ids = []
    for day in ASSET_RUN_DAYS:
        launched = dagster.gql(LAUNCH, {"p": {
            "selector": {**REPOSITORY, "jobName": "__ASSET_JOB", "assetSelection": assets},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
        }})["launchRun"]  # fmt: skip
        assert launched["__typename"] == "LaunchRunSuccess", launched
        ids.append(launched["run"]["runId"])

    most = 0
    deadline = time.monotonic() + 300
    while True:
        statuses = [dagster.run(i)["status"] for i in ids]
        running = statuses.count("STARTED") + statuses.count("STARTING")
        most = max(most, running)
        if all(s in ("SUCCESS", "FAILURE", "CANCELED") for s in statuses):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.5)
    assert statuses == ["SUCCESS"] * 3
    # Never three at once (before the pools, all three ran together). Whether a run is seen
    # queued behind two running ones depends on the daemon's pace, so it is not asserted.
    assert 1 <= most <= 2, most
    # The run_identity sensor tags each run once it has started (a tick or two later).
    with dg.DagsterInstance.from_config(str(dagster.home)) as instance:
        for run_id in ids:

            def tagged(run_id: str = run_id) -> dg.DagsterRun | None:
                run = instance.get_run_by_id(run_id)
                return run if run and "pipeline" in run.tags else None

            run = _wait_for(f"run {run_id}'s tags", tagged, timeout=60)
            assert run.job_name == "__ASSET_JOB"
            assert run.tags["pipeline"] == "churn" and run.tags["dagster/max_runtime"] == "21600"


TERMINATE = """mutation($id: String!) { terminateRun(runId: $id) { __typename
  ... on TerminateRunFailure { message } ... on PythonError { message } } }"""


def _launch(dagster: Dagster, day: str) -> str:
    launched = dagster.gql(LAUNCH, {"p": {
        "selector": {**REPOSITORY, "jobName": "churn_daily"},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
    }})["launchRun"]  # fmt: skip
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return str(launched["run"]["runId"])


def test_terminating_a_run_mid_scoring_leaves_the_table_and_no_files(dagster: Dagster) -> None:
    marker = Path(dagster.env["BI_TEST_FAULT_MARKER"])
    marker.unlink(missing_ok=True)
    if dagster.table(DAY).num_rows == 0:  # a published day, to see it stay as it was
        assert dagster.wait_run(_launch(dagster, DAY))["status"] == "SUCCESS"
    before = dagster.table(DAY)
    store = dagster.root / "object_store" / "churn"

    marker.write_text("hang")  # shard_00001's write waits: the run is mid-scoring
    try:
        run_id = _launch(dagster, DAY)
        scored = store / "scored" / DAY / run_id

        def scoring() -> bool:
            steps = {s["stepKey"]: s["status"] for s in dagster.run(run_id)["stepStats"]}
            return steps.get("churn__scored_shards.churn__score_shard[shard_00001]") == (
                "IN_PROGRESS"
            )

        _wait_for("the second shard to be scoring", scoring)
        assert (scored / "shard_00000.parquet").exists()  # a finished shard, to be cleaned up
        done = dagster.gql(TERMINATE, {"id": run_id})["terminateRun"]
        assert done["__typename"] == "TerminateRunSuccess", done
        assert dagster.wait_run(run_id, timeout=120)["status"] == "CANCELED"
    finally:
        marker.unlink(missing_ok=True)

    after = dagster.table(DAY)
    assert after.to_pylist() == before.to_pylist()  # exactly as it was: same rows, same run
    _wait_for(
        "the canceled run's files to be removed",
        lambda: not scored.exists() and not (store / "features" / DAY / run_id).exists(),
        timeout=60,
    )
    assert not any((store / "scored" / DAY).glob(f"*{run_id}*"))

    again = _launch(dagster, DAY)
    assert dagster.wait_run(again)["status"] == "SUCCESS"
    table = dagster.table(DAY)
    assert table.num_rows == SEED_CUSTOMERS
    assert set(table.column("run_id").to_pylist()) == {again}
