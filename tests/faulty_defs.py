"""A code location with an injected fault, for failure-handling tests (subprocesses load it too).

Configured by environment variables set by the tests:
  BI_TEST_ROOT            data root (a seeded copy)
  BI_TEST_PIPELINES_DIR   pipeline YAML folder (fast retries for tests)
  BI_TEST_FAULT_SUFFIX    pattern of the object path whose write fails,
                          e.g. scored/2026-10-15/*/shard_00001.parquet
  BI_TEST_FAULT_MARKER    the fault fires only while this file exists
  BI_TEST_FAULT_MODE      raise | raise_once | kill (SIGKILL of the step's own process) | hang;
                          a non-empty marker file overrides it with its own text
  BI_TEST_EXECUTOR        in_process | multiprocess (default)
"""

import os
import signal
import time
from fnmatch import fnmatch
from pathlib import Path

import dagster as dg
from upath import UPath

from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.io.records_io_manager import RecordIOManagerFactory
from dagster_defs.definitions import build_definitions
from dagster_defs.deployments import local_resources
from dagster_defs.executors import MULTIPROCESS


class FaultyObjectStore(LocalObjectStore):
    fail_suffix: str
    marker: str
    mode: str = "raise"

    def path(self, *parts: str) -> UPath:
        target = super().path(*parts)
        marker = Path(self.marker)
        if self.fail_suffix and fnmatch(str(target), f"*{self.fail_suffix}") and marker.exists():
            mode = marker.read_text().strip() or self.mode
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "hang":
                time.sleep(600)
            if mode == "raise_once":
                marker.unlink()
            raise OSError(f"injected fault: cannot write {target}")
        return target


def build() -> dg.Definitions:
    root = Path(os.environ["BI_TEST_ROOT"])
    resources = local_resources(root)
    store = FaultyObjectStore(
        root=str(root / "object_store"),
        fail_suffix=os.environ.get("BI_TEST_FAULT_SUFFIX", ""),
        marker=os.environ.get("BI_TEST_FAULT_MARKER", str(root / "no-fault")),
        mode=os.environ.get("BI_TEST_FAULT_MODE", "raise"),
    )
    resources.update(
        object_store=store, records_io_manager=RecordIOManagerFactory(object_store=store)
    )
    in_process = os.environ.get("BI_TEST_EXECUTOR") == "in_process"
    return build_definitions(
        resources,
        Path(os.environ["BI_TEST_PIPELINES_DIR"]),
        executor=dg.in_process_executor if in_process else MULTIPROCESS,
        location_name=os.environ.get("BI_TEST_LOCATION", "faulty"),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build()


def churn_job() -> dg.JobDefinition:
    """For dg.reconstructable: the daily job of this code location."""
    return build().resolve_job_def("churn_daily")
