"""The Dagster UI in a real browser: Debian's chromium, driven by playwright, against `dg dev`.

An operator's path through the demo: the churn group's lineage, a two-day backfill launched
from "Materialize all…" (the daemon runs it), the backfill's page, a day's drift summary and
plots, and one asset check's description. Each step leaves a screenshot in .artifacts/browser/.

The browser is the system's chromium (`apt-get install chromium`, as .ci/run does), never one
downloaded by `playwright install`."""

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from batch_inference_assets.assets import checks
from batch_inference_assets.stages import publish
from dagster_defs.demo.seed import record_seeded_champion
from dagster_defs.deployments import local_resources
from tests.integration.test_dg import DG, REPO, _free_port, _gql, loaded_locations
from tests.servers import stop_group

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / ".artifacts" / "browser"
DAYS = ("2026-10-14", "2026-10-15")
# The churn group: model .. top_k, and the challenger's shadow_predictions and comparison.
CHURN_ASSETS = 10
UI_TIMEOUT = 90_000  # ms: the first render of a page waits on the code location's queries
BACKFILL_TIMEOUT = 600  # s: two churn days on a slow shared machine
CHECK = publish.SCORES_IN_UNIT_INTERVAL  # a check on churn/predictions
RUN_ROW = '[class*="RunsFeedRow_rowGrid"]'  # one run in a backfill's "Runs" tab
DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


@contextlib.contextmanager
def ui(env: dict[str, str], log: Path) -> Iterator[str]:
    """`dg dev` (webserver and daemon) on a free loopback port, once it serves the code
    location; stopped with everything it started on exit."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(DG), "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            if "batch_inference" in loaded_locations(url):
                break
            time.sleep(1)
        yield url
    finally:
        stop_group(proc)


def backfill(url: str, backfill_id: str) -> dict[str, Any]:
    found: dict[str, Any] = _gql(
        url,
        f'{{ partitionBackfillOrError(backfillId: "{backfill_id}") {{ __typename '
        "... on PartitionBackfill { status partitionNames runs(limit: 10) { runId status "
        "tags { key value } } } } }",
    )["partitionBackfillOrError"]
    return found


def wait_backfill(url: str, backfill_id: str, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + BACKFILL_TIMEOUT
    while True:
        found = backfill(url, backfill_id)
        assert found["__typename"] == "PartitionBackfill", found
        if found["status"] in DONE and all(
            r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in found["runs"]
        ):
            return found
        assert time.monotonic() < deadline, (found, log.read_text()[-3000:])
        time.sleep(3)


def shot(page: Page, step: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{step}.png"))


def visible(locator: Locator) -> None:
    expect(locator).to_be_visible(timeout=UI_TIMEOUT)


def test_an_operator_backfills_churn_in_the_ui_and_reads_drift_and_checks(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)"
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    print(f"screenshots: {ARTIFACTS}")
    home = tmp_path / "home"
    home.mkdir()
    # The demo's instance: its run queue, pools (2 days of a pipeline at once), run monitoring.
    shutil.copy(REPO / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    # As `make demo` does: the seeded champion counts as churn_training/champion_model's build.
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert record_seeded_champion(local_resources(root)["model_store"].resolve("churn", "champion"))
    log = tmp_path / "dg-dev.log"
    env = {"BATCH_INFERENCE_ROOT": str(root), "DAGSTER_HOME": str(home)}

    with ui(env, log) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.set_default_timeout(UI_TIMEOUT)
            try:
                operate(page, url, log)
            except BaseException:
                with contextlib.suppress(Exception):
                    shot(page, "failure")
                raise
        finally:
            browser.close()
            shutil.copy(log, ARTIFACTS / "dg-dev.log")  # the webserver's and daemon's side
    print(f"screenshots: {ARTIFACTS}")


def operate(page: Page, url: str, log: Path) -> None:
    # a. The churn group's lineage: its stages, and the champion model it reads from upstream.
    page.goto(f"{url}/locations/batch_inference/asset-groups/churn")
    visible(page.get_by_text("Asset Group in"))
    # On 127.0.0.1 a fresh instance greets its first visitor with a newsletter dialog, a second
    # after the page asks for it: dismiss it before it can land on top of another dialog.
    if _gql(url, "{ shouldShowNux }")["shouldShowNux"]:
        nux = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
        visible(nux)
        nux.get_by_role("button", name="Skip").click()
        expect(nux).to_be_hidden(timeout=UI_TIMEOUT)
    for node in ("source_features", "scored_shards", "predictions", "drift_stats", "top_k"):
        visible(page.get_by_text(node, exact=True).first)
    visible(page.get_by_text("champion_model", exact=True).first)  # upstream, in churn_training
    shot(page, "01_churn_lineage")

    # b. Materialize all opens the launch dialog at once: no "Are you sure?" about an upstream
    # champion_model that was never built (the seed's champion is recorded as its build).
    page.get_by_role("button", name="Materialize all…").click()
    confirm = page.get_by_role("dialog").filter(has_text="Are you sure?")
    launch = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    visible(launch)
    expect(confirm).to_have_count(0)
    visible(launch.get_by_text(f"Launch runs to materialize {CHURN_ASSETS} assets"))
    partitions = launch.get_by_placeholder("No matching partitions")
    partitions.fill(f"[{DAYS[0]}...{DAYS[1]}]")
    partitions.press("Enter")
    visible(launch.get_by_text("2 partitions", exact=True))
    shot(page, "03_launch_backfill_dialog")
    launch.get_by_role("button", name="Launch backfill").click()
    toast = page.get_by_text(re.compile(r"^Created backfill \w+$"))
    visible(toast)
    match = re.search(r"Created backfill (\w+)", toast.inner_text())
    assert match, toast.inner_text()
    backfill_id = match.group(1)
    shot(page, "04_backfill_created")

    # c. The daemon runs one run per day; the backfill's page says so once they succeed.
    page.goto(f"{url}/runs/b/{backfill_id}")
    visible(page.get_by_text(f"{DAYS[0]}...{DAYS[1]}"))
    shot(page, "05_backfill_running")
    done = wait_backfill(url, backfill_id, log)
    assert done["status"] == "COMPLETED_SUCCESS", (done, log.read_text()[-3000:])
    runs = {
        next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition"): r["status"]
        for r in done["runs"]
    }
    assert runs == dict.fromkeys(DAYS, "SUCCESS"), runs
    page.reload()
    status = page.get_by_text("Status", exact=True).locator("xpath=..")
    visible(status.get_by_text("Succeeded", exact=True))
    # One progress bar per churn asset, each at 100%.
    expect(page.get_by_text("100% completed", exact=True)).to_have_count(
        CHURN_ASSETS, timeout=UI_TIMEOUT
    )
    shot(page, "06_backfill_succeeded")
    page.get_by_role("tab", name="Runs").click()
    for day in DAYS:
        row = page.locator(RUN_ROW).filter(has_text=f"partition: {day}")
        expect(row).to_have_count(1, timeout=UI_TIMEOUT)
        visible(row.get_by_text("Success", exact=True))
    shot(page, "07_backfill_runs")

    # d. One day's drift: the Markdown summary and the PSI metadata, then the plots over days.
    day = DAYS[1]
    page.goto(f"{url}/assets/churn/drift_stats?view=partitions&partition={day}")
    visible(page.get_by_text("Materialized", exact=True).first)
    visible(
        page.get_by_text("PSI against training (warn at 0.1, error at 0.25) and the previous day.")
    )
    visible(page.get_by_role("columnheader", name="vs training"))
    visible(page.get_by_text("psi/score", exact=True))
    previous = page.get_by_role("row").filter(has_text="previous_partition")
    visible(previous.get_by_text(DAYS[0], exact=True))
    shot(page, "08_drift_stats_partition")
    page.goto(f"{url}/assets/churn/drift_stats")
    page.get_by_role("button", name="Plots").click()
    visible(page.get_by_text("psi/score", exact=True))
    visible(page.locator("canvas").first)
    shot(page, "09_drift_stats_plots")

    # d. One asset check on churn/predictions: its description from the registry.
    page.goto(f"{url}/assets/churn/predictions?view=checks&checkDetail={CHECK}")
    visible(page.get_by_text("This is a blocking asset check."))
    visible(page.get_by_text(checks.REGISTRY[CHECK].description, exact=True))
    visible(page.get_by_text("Passed", exact=True))
    shot(page, "10_asset_check")
