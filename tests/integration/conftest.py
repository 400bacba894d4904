"""Servers for the production path: S3 (moto) and Snowflake (fakesnow), started per session;
and a copy of the project to change."""

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakesnow
import pytest
import s3fs

from tests.conftest import DEPLOY
from tests.servers import S3_KEY, S3_SECRET, moto_s3, postgres_server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    name = f"bi-test-{uuid.uuid4().hex[:10]}"
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key=S3_KEY, secret=S3_SECRET)
    fs.mkdir(name)
    return name


@pytest.fixture(scope="session")
def snowflake_server() -> Iterator[dict[str, Any]]:
    with fakesnow.server() as kwargs:
        yield kwargs


@pytest.fixture
def production_instance(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> Iterator[tuple[Path, dict[str, str]]]:
    """A DAGSTER_HOME holding the production dagster.yaml as shipped, and the environment it
    reads: a throwaway PostgreSQL server for storage, the moto S3 bucket for step logs."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    with postgres_server() as postgres:
        yield (
            home,
            {
                **postgres,
                "DAGSTER_HOME": str(home),
                "BATCH_INFERENCE_S3_BUCKET": s3_bucket,
                "AWS_ENDPOINT_URL_S3": s3_endpoint,
                "AWS_ACCESS_KEY_ID": S3_KEY,
                "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        )


@pytest.fixture(params=["duckdb", "snowflake"])
def each_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """An empty warehouse of each kind: a DuckDB file, and a fakesnow database."""
    from batch_inference_assets.io.duckdb_warehouse import DuckDBWarehouse
    from tests.servers import snowflake_warehouse_on

    if request.param == "duckdb":
        return DuckDBWarehouse(database=str(tmp_path / "w.duckdb"), output_schema="predictions")
    return snowflake_warehouse_on(request.getfixturevalue("snowflake_server"))


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the shipped project (its config and code location), to change freely."""
    target = tmp_path / "project"
    target.mkdir()
    shutil.copy(REPO / "pyproject.toml", target)
    shutil.copytree(
        REPO / "dagster_defs", target / "dagster_defs", ignore=shutil.ignore_patterns("__pycache__")
    )
    return target
