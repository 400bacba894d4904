"""README blocks that users copy: run as written."""

import os
import re
import shutil
import subprocess
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_defs.deployments import local_resources
from tests.conftest import DAY, SEED_CUSTOMERS, read_table
from tests.servers import stop_group

REPO = Path(__file__).parents[2]


def readme_block(after: str, language: str = "python") -> str:
    """The first fenced block of `language` after the text `after` in the README."""
    text = (REPO / "README.md").read_text()
    start = text.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match, f"no {language} block after {after!r}"
    return match.group(1)


def test_the_notebook_snippet_runs_as_written(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The repository root after `make demo`: the code and the demo's `.data`.
    (tmp_path / ".data").symlink_to(root)
    (tmp_path / "dagster_defs").symlink_to(REPO / "dagster_defs")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(readme_block("**From a notebook**"), scope)  # the README's own code

    assert DAY == "2026-10-15"  # the day the snippet names
    scores, result = scope["scores"], scope["result"]
    assert len(scores) == SEED_CUSTOMERS and scores["score"].between(0, 1).all()
    assert (tmp_path / "scores.parquet").exists()
    assert result.success
    assert (
        read_table(scope["resources"], "WHERE partition_date = ?", (DAY,)).num_rows
        == SEED_CUSTOMERS
    )


RUNNABLE = re.compile(r"^```bash runnable(?P<flags>[^\n]*)\n(?P<body>.*?)^```", re.S | re.M)


def runnable_blocks() -> list[tuple[str, set[str]]]:
    """Every block fenced as ```` ```bash runnable [needs-daemon] ````, in README order."""
    text = (REPO / "README.md").read_text()
    return [(m["body"], set(m["flags"].split())) for m in RUNNABLE.finditer(text)]


def fresh_checkout(target: Path) -> Path:
    """The tracked files, as a clone has them, with this checkout's installed venv."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, files.split("\0")):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    (target / ".venv").symlink_to(REPO / ".venv")
    # The venv is this checkout's, installed from these files: make must not rebuild it.
    installed = (REPO / ".venv" / ".installed-stamp").stat().st_mtime - 1
    for name in ("pyproject.toml", "constraints.txt"):
        os.utime(target / name, (installed, installed))
    return target


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    """`make demo`, then every runnable block in order, verbatim, in one shell session (each
    block's exports carry on to the next, as in a terminal); `needs-daemon` blocks run with
    `dagster-daemon run -w workspace.yaml` up, as the README says, and their runs must succeed."""
    blocks = runnable_blocks()
    assert len(blocks) >= 4 and any("needs-daemon" in flags for _, flags in blocks)
    first = readme_block("# batch-inference", "bash")
    assert first.startswith("make demo")
    checkout = fresh_checkout(tmp_path / "checkout")
    session = tmp_path / "session.env"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "BATCH_"))}
    session.write_text("")

    def sh(script: str, what: str) -> str:
        wrapped = f"set -euo pipefail\nsource {session}\n{script}\nexport -p > {session}\n"
        done = subprocess.run(
            ["bash", "-c", wrapped], cwd=checkout, env=env, capture_output=True, text=True,
            timeout=900, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{what} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    demo = sh("make demo", "make demo")
    assert "churn: scored 20,000 rows of 2026-10-15" in demo
    # The seeded champion counts as built: "Materialize all" on churn does not warn about it.
    with dg.DagsterInstance.from_config(str(checkout / ".dagster_home")) as instance:
        seeded = instance.get_latest_materialization_event(
            dg.AssetKey(["churn_training", "champion_model"])
        )
    assert seeded is not None and seeded.asset_materialization is not None
    assert seeded.asset_materialization.metadata["source"].value == "seed"

    daemon_env = {**env, "DAGSTER_HOME": str(checkout / ".dagster_home"),
                  "BATCH_INFERENCE_ROOT": str(checkout / ".data")}  # fmt: skip
    with (tmp_path / "daemon.log").open("w") as log:
        daemon = subprocess.Popen(
            [str(checkout / ".venv" / "bin" / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=checkout, env=daemon_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        for number, (body, flags) in enumerate(blocks, 1):
            started = time.time()
            sh(body, f"README runnable block {number}:\n{body}")
            if "needs-daemon" in flags:
                runs = wait_for_queued_runs(checkout / ".dagster_home", started)
                assert runs and {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}, [
                    (r.run_id, r.status, r.tags.get("dagster/partition")) for r in runs
                ]
    finally:
        stop_group(daemon)
    # What the blocks did is in the demo's warehouse: the launched day and the backfilled days.
    table = read_table(local_resources(checkout / ".data"))
    days = set(table.column("partition_date").to_pylist())
    assert {date(2026, 10, d) for d in (1, 2, 3, 15)} <= days


def wait_for_queued_runs(home: Path, since: float, timeout: float = 600) -> list[dg.DagsterRun]:
    """The runs created since `since`, once none of them is queued or in progress."""
    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while True:
            runs = [
                r
                for r in instance.get_runs(filters=dg.RunsFilter(created_after=_utc(since)))
                if r.tags.get("dagster/backfill")
            ]
            if runs and all(r.is_finished for r in runs):
                return runs
            assert time.monotonic() < deadline, [(r.run_id, r.status) for r in runs]
            time.sleep(2)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
