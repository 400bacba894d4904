"""Servers for the production path: S3 (moto) and Snowflake (fakesnow), started per session."""

import uuid
from collections.abc import Iterator
from typing import Any

import fakesnow
import pytest
import s3fs

from tests.servers import S3_KEY, S3_SECRET, moto_s3


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
