"""The project as `dg` drives it: check, list, launch, and a pipeline scaffolded from nothing."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from batch_inference_assets import load_specs
from batch_inference_assets.assets import checks
from batch_inference_assets.spec import PipelineSpec
from dagster_defs.definitions import PIPELINES_DIR
from dagster_defs.deployments import DEMO_OUTPUT_SCHEMA, local_resources
from tests.conftest import DAY, read_table
from tests.servers import stop_group

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]
DG = Path(sys.executable).parent / "dg"
COMPONENT = "batch_inference_assets.BatchInferencePipeline"


def dg(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DG), *args],
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def run_env(root: Path, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {"BATCH_INFERENCE_ROOT": str(root), "DAGSTER_HOME": str(home)}


def expected(spec: PipelineSpec) -> dict[str, set[str]]:
    """What one pipeline's YAML asks for, in `dg list defs` terms."""
    stages = {"model", "source_features", "shard_manifest", "scored_shards", "predictions",
              "drift_stats"}  # fmt: skip
    if spec.exports.formats:
        stages.add("exports")
    if spec.exports.top_k:
        stages.add("top_k")
    assets = {f"{spec.name}/{s}" for s in stages}
    jobs, schedules, sensors = {f"{spec.name}_daily"}, {f"{spec.name}_daily_schedule"}, set()
    if spec.training:
        assets |= {f"{spec.name}_training/candidate_model", f"{spec.name}_training/champion_model"}
        jobs.add(f"{spec.name}_train")
        if spec.training.schedule:
            schedules.add(f"{spec.name}_train_schedule")
    if spec.landing:
        sensors.add(f"{spec.name}_landing_sensor")
    source = [*checks.SOURCE_CHECKS]
    predictions = checks.prediction_checks(spec)
    check_keys = {f"{spec.name}/source_features:{c}" for c in source}
    check_keys |= {f"{spec.name}/predictions:{c}" for c in predictions}
    check_keys |= {f"{spec.name}/drift_stats:{c}" for c in checks.DRIFT_CHECKS}
    return {"assets": assets, "checks": check_keys, "jobs": jobs, "schedules": schedules,
            "sensors": sensors}  # fmt: skip


def test_dg_checks_and_lists_the_shipped_project() -> None:
    yaml_check = dg("check", "yaml")
    assert yaml_check.returncode == 0, yaml_check.stdout + yaml_check.stderr
    defs_check = dg("check", "defs")
    assert defs_check.returncode == 0, defs_check.stdout + defs_check.stderr
    assert "All definitions loaded successfully" in defs_check.stdout + defs_check.stderr

    listed = dg("list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr
    defs = json.loads(listed.stdout)
    assets = {a["asset_key"]: a for a in defs["assets"]}
    check_keys = {c["key"]: c for c in defs["asset_checks"]}
    names = {kind: {d["name"] for d in defs[kind]} for kind in ("jobs", "schedules", "sensors")}
    specs = load_specs(PIPELINES_DIR)
    assert specs, "no pipeline under dagster_defs/defs/pipelines"
    for spec in specs:
        want = expected(spec)
        assert want["assets"] <= set(assets), spec.name
        assert want["checks"] <= set(check_keys), spec.name
        for kind in ("jobs", "schedules", "sensors"):
            assert want[kind] <= names[kind], (spec.name, kind)
        # Each asset points back at the YAML that declares it; each check explains itself.
        source = assets[f"{spec.name}/predictions"]["source"]
        assert source.startswith(f"dagster_defs/defs/pipelines/{spec.name}/defs.yaml:")
        for key in want["checks"]:
            name = key.split(":", 1)[1]
            assert check_keys[key]["description"] == checks.REGISTRY[name].description
    # What spans the pipelines belongs to the code location once.
    assert {"asset_check_failure_alerts", "run_failure_alerts"} <= names["sensors"]
    assert "retention_cleanup" in names["jobs"]
    # The component is registered where `dg` looks for it.
    components = dg("list", "components", "--json")
    assert COMPONENT in {c["key"] for c in json.loads(components.stdout)["items"]}


def test_a_broken_defs_yaml_is_reported_with_file_line_and_field(project: Path) -> None:
    path = project / "dagster_defs" / "defs" / "pipelines" / "churn" / "defs.yaml"
    text = path.read_text()
    lines = text.splitlines()
    line = next(i for i, s in enumerate(lines, 1) if s.strip().startswith("max_parallel:"))
    path.write_text(text.replace("max_parallel: 4", "max_parallel: lots"))

    result = dg("check", "yaml", str(path.parent), "--target-path", str(project), cwd=project)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert f"{path}:{line}" in out
    assert "attributes.sharding.max_parallel" in out and "'lots' is not of type 'integer'" in out

    # A rule across fields (the output table must fit the model's kind) is the component's
    # own validation: `dg check defs` names the file, the line and the field too.
    path.write_text(text.replace("kind: lightgbm_binary", "kind: lightgbm_regression"))
    result = dg("check", "defs", "--target-path", str(project), cwd=project)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    columns = next(i for i, s in enumerate(lines, 1) if s.strip() == "columns:")
    assert f"attributes.output.columns at {path}:{columns}" in out
    assert "column 'label': lightgbm_regression models have no label" in out


def test_a_broken_pipeline_never_unloads_the_healthy_ones(project: Path) -> None:
    path = project / "dagster_defs" / "defs" / "pipelines" / "demand" / "defs.yaml"
    text = path.read_text()
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.strip().startswith("ref:"))
    path.write_text(text.replace("ref: champion", "ref: [champion]", 1))
    where = f"dagster_defs/defs/pipelines/demand/defs.yaml:{line}"

    # The running deployment (UI, daemon, runs) keeps every healthy pipeline whole ...
    listed = dg("list", "defs", "--json", cwd=project)
    assert listed.returncode == 0, listed.stdout[-3000:] + listed.stderr[-3000:]
    defs = json.loads(listed.stdout)
    assets = {a["asset_key"]: a for a in defs["assets"]}
    names = {kind: {d["name"] for d in defs[kind]} for kind in ("jobs", "schedules", "sensors")}
    churn = expected(load_spec_named("churn"))
    assert churn["assets"] <= set(assets)
    for kind in ("jobs", "schedules", "sensors"):
        assert churn[kind] <= names[kind], kind
    assert not {a for a in assets if a.startswith("demand/") and a != "demand/pipeline_not_loaded"}
    assert "demand_daily" not in names["jobs"]
    # ... and shows the broken one as one asset in its group whose description is the error.
    shown = assets["demand/pipeline_not_loaded"]
    assert shown["group_name"] == "demand", shown
    assert where in shown["description"] and "attributes.model.ref" in shown["description"]

    # The CLI check fails on it with the same file, line and field.
    checked = dg("check", "defs", cwd=project)
    out = checked.stdout + checked.stderr
    assert checked.returncode != 0
    assert "attributes.model.ref" in out and f"demand/defs.yaml:{line}" in out


def test_dg_launch_scores_one_partition_of_the_shipped_project(
    run_env: dict[str, str], root: Path
) -> None:
    result = dg("launch", "--assets", "key:churn/*", "--partition", DAY, env=run_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = read_table(local_resources(root), "WHERE partition_date = ?", (DAY,))
    assert table.num_rows > 0
    assert set(table.column("run_id").to_pylist()) and len(set(table["run_id"].to_pylist())) == 1


def test_a_scaffolded_pipeline_scores_a_day_without_python(
    project: Path, run_env: dict[str, str], root: Path
) -> None:
    folder = project / "dagster_defs" / "defs" / "pipelines" / "retention_risk"
    result = dg("scaffold", "defs", COMPONENT, "pipelines/retention_risk", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    defs_yaml, sql = folder / "defs.yaml", folder / "features.sql"
    assert "TODO" in defs_yaml.read_text() and "TODO" in sql.read_text()
    # The stub is valid as scaffolded: it loads, with its schedule off until it is filled in.
    assert dg("check", "yaml", str(folder), cwd=project).returncode == 0

    # Fill it in as a user would: ids, the model (the demo's churn model), the query.
    churn_sql = (PIPELINES_DIR / "churn" / "features.sql").read_text()
    sql.write_text(churn_sql.replace(":min_tenure_months", "0"))
    defs_yaml.write_text(
        defs_yaml.read_text()
        .replace("id_columns: [id]", "id_columns: [customer_id]")
        .replace("{name: id, type: int64", "{name: customer_id, type: int64")
        .replace("name: retention_risk                     # the model", "name: churn  # the model")
        .replace(f'start_date: "{_scaffolded_start(defs_yaml)}"', 'start_date: "2026-10-01"')
    )
    assert dg("check", "defs", cwd=project).returncode == 0

    launched = dg(
        "launch", "--assets", "key:retention_risk/*", "--partition", DAY, cwd=project, env=run_env
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    warehouse = local_resources(root)["warehouse"]
    source = warehouse.query(
        "SELECT COUNT(*) AS n FROM raw.customer_features WHERE snapshot_date = ?", [DAY]
    )
    published = warehouse.query(
        f"SELECT COUNT(*) AS n, COUNT(DISTINCT customer_id) AS ids, MIN(model_version) AS v "
        f"FROM {DEMO_OUTPUT_SCHEMA}.retention_risk_predictions WHERE partition_date = ?",
        [DAY],
    ).to_pylist()[0]
    assert published["n"] == published["ids"] == source.to_pylist()[0]["n"] > 0
    champion = local_resources(root)["model_store"].resolve("churn", "champion")
    assert published["v"] == champion

    # A Python module of the user's own beside it reads those predictions as a DataFrame.
    (project / "dagster_defs" / "defs" / "reports.py").write_text(REPORTS)
    report = dg(
        "launch", "--assets", "retention_offers", "--partition", DAY, cwd=project, env=run_env
    )
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    offers = pd.read_pickle(root / "object_store" / "assets" / "retention_offers" / DAY)
    assert 0 < len(offers) < published["n"] and (offers["score"] > 0.8).all()


REPORTS = """
import dagster as dg
import pandas as pd


@dg.asset(
    partitions_def=dg.DailyPartitionsDefinition(start_date="2026-10-01"),
    ins={"churn": dg.AssetIn(["retention_risk", "predictions"])},
)
def retention_offers(churn: pd.DataFrame) -> pd.DataFrame:
    return churn[churn["score"] > 0.8][["customer_id", "score"]]
"""


def _scaffolded_start(defs_yaml: Path) -> str:
    line = next(s for s in defs_yaml.read_text().splitlines() if "start_date:" in s)
    return line.split('"')[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gql(url: str, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        doc = json.loads(response.read())
    assert "errors" not in doc, doc
    return doc["data"]


def loaded_locations(url: str) -> list[str]:
    """The code locations the webserver at `url` has loaded (none while it is starting)."""
    try:
        entries = _gql(
            url,
            "{ workspaceOrError { ... on Workspace { locationEntries { name "
            "locationOrLoadError { __typename } } } } }",
        )["workspaceOrError"]["locationEntries"]
    except OSError:
        return []
    return [
        e["name"]
        for e in entries
        if (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
    ]


def test_dg_dev_serves_the_code_location_with_described_checks(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "dg-dev.log").open("w") as log:
        proc = subprocess.Popen(
            [str(DG), "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env={**os.environ, **run_env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline, location = time.monotonic() + 180, None
        while location is None:
            assert proc.poll() is None, (tmp_path / "dg-dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "dg-dev.log").read_text()[-3000:]
            loaded = loaded_locations(url)
            location = loaded[0] if loaded else None
            time.sleep(1)
        assert location == "batch_inference"  # one name: dg, workspace.yaml and the daemon
        node = _gql(
            url,
            '{ assetNodeOrError(assetKey: {path: ["churn", "predictions"]}) { ... on AssetNode { '
            "assetChecksOrError { ... on AssetChecks { checks { name description blocking } } } "
            "} } }",
        )["assetNodeOrError"]
        shown = {c["name"]: c for c in node["assetChecksOrError"]["checks"]}
        assert set(shown) == set(checks.prediction_checks(load_spec_named("churn")))
        for name, check in shown.items():
            assert check["description"] == checks.REGISTRY[name].description
            assert check["blocking"] == checks.REGISTRY[name].blocking
    finally:
        stop_group(proc)


def load_spec_named(name: str) -> PipelineSpec:
    return next(s for s in load_specs(PIPELINES_DIR) if s.name == name)
