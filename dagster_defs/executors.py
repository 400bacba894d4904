"""The executor per deployment: where the steps of a run (the shard fan-out above all) execute.

Chosen by BATCH_INFERENCE_EXECUTOR when the code location loads:
  multiprocess  one process per step on the run's machine (the default; forkserver)
  celery        steps go to warm Celery workers on any number of machines, through a broker
  k8s           each step in its own Kubernetes pod (dagster-k8s), sized by its op's tag

The library never knows which one runs. dagster-dask is deliberately not offered: it silently
dropped dynamic (shard) steps (see PITFALLS.md).
"""

import contextlib
import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

EXECUTORS = ("multiprocess", "celery", "k8s")

# What each deployment's steps import beyond dagster_defs.step_preload.
DEPLOYMENT_PRELOAD = {"snowflake_s3": ["snowflake.connector"]}


STEP_PRELOAD = "dagster_defs.step_preload"


def multiprocess(deployment: str = "local", preload: str = STEP_PRELOAD) -> dg.ExecutorDefinition:
    """Steps fork from a server that has already imported the instance's storage and the
    library (dagster_defs.step_preload) and, with `preload` naming a module that builds them
    (dagster_defs.step_definitions), the code location's definitions: a step starts in about
    0.1 s instead of ~1 s."""
    modules = [preload, *DEPLOYMENT_PRELOAD.get(deployment, [])]
    return dg.multiprocess_executor.configured(
        {"start_method": {"forkserver": {"preload_modules": modules}}}
    )


MULTIPROCESS = multiprocess()


class PreloadedDefinitions:
    """A code location's definitions, built once by the server the step processes fork from
    (for the environment it was started with) instead of in every step: Dagster 1.13 loads the
    code location twice per step process. Only that server preloads; the code server and the
    webserver load afresh each time, so a reload sees edited files."""

    def __init__(self, load: Callable[[], dg.Definitions]) -> None:
        self._load = load
        self._built: dict[frozenset[tuple[str, str]], dg.Definitions] = {}

    def preload(self) -> None:
        # A location that fails to load fails in the step instead, with its own error.
        with contextlib.suppress(Exception):
            self._built = {frozenset(os.environ.items()): self._load()}
        # What the server holds now is shared with every step it forks, as long as nothing
        # writes to it: the garbage collector would, touching every object (see step_preload).
        gc.freeze()

    def __call__(self) -> dg.Definitions:
        built = self._built.get(frozenset(os.environ.items()))
        return built if built is not None else self._load()


# Every worker imports the code location, so the first step of a run does not pay for it.
CELERY_INCLUDE = ["dagster_defs.definitions"]


def celery_config() -> dict[str, Any]:
    """The Celery executor's config; workers must be started with the same (see celery_worker).

    Production: BATCH_INFERENCE_CELERY_BROKER (redis://… or amqp://…) and, optionally,
    BATCH_INFERENCE_CELERY_BACKEND (defaults to the broker for Redis, rpc:// otherwise); both are
    resolved when a run starts, so credentials in the URLs stay in the environment.
    One machine without any service: BATCH_INFERENCE_CELERY_DIR, a folder used as a
    `filesystem://` broker with a `file://` result backend.
    """
    broker = os.environ.get("BATCH_INFERENCE_CELERY_BROKER")
    folder = os.environ.get("BATCH_INFERENCE_CELERY_DIR")
    if broker and folder:
        raise ValueError(
            "set BATCH_INFERENCE_CELERY_BROKER or BATCH_INFERENCE_CELERY_DIR, not both"
        )
    config: dict[str, Any] = {"include": CELERY_INCLUDE}
    if broker:
        config["broker"] = {"env": "BATCH_INFERENCE_CELERY_BROKER"}
        if os.environ.get("BATCH_INFERENCE_CELERY_BACKEND"):
            config["backend"] = {"env": "BATCH_INFERENCE_CELERY_BACKEND"}
        elif broker.startswith(("redis://", "rediss://")):
            config["backend"] = {"env": "BATCH_INFERENCE_CELERY_BROKER"}
        return config
    if folder:
        return {**config, **filesystem_broker(Path(folder))}
    raise ValueError(
        "BATCH_INFERENCE_EXECUTOR=celery needs BATCH_INFERENCE_CELERY_BROKER (redis:// or "
        "amqp:// URL) or BATCH_INFERENCE_CELERY_DIR (a folder for a one-machine broker)"
    )


def filesystem_broker(folder: Path) -> dict[str, Any]:
    """Celery's `filesystem://` broker and `file://` backend: real workers, no service.

    Everything the broker writes stays under `folder`: without `control_folder`, kombu keeps its
    exchange bindings in `./control` of whichever process declares a queue (the run and every
    worker), i.e. in the repository or wherever they were started."""
    folder = folder.resolve()
    queue, processed, results = folder / "queue", folder / "processed", folder / "results"
    control = folder / "control"
    for d in (queue, processed, results, control):
        d.mkdir(parents=True, exist_ok=True)
    return {
        "broker": "filesystem://",
        "backend": f"file://{results}",
        "config_source": {
            "broker_transport_options": {
                "data_folder_in": str(queue),
                "data_folder_out": str(queue),
                "data_folder_processed": str(processed),
                "control_folder": str(control),
            }
        },
    }


def k8s_config() -> dict[str, Any]:
    """k8s_job_executor config. Each shard step's pod size comes from its op's
    `dagster-k8s/config` tag (set from the spec's sharding.step_resources), not from here."""
    config: dict[str, Any] = {}
    if os.environ.get("BATCH_INFERENCE_K8S_NAMESPACE"):
        config["job_namespace"] = {"env": "BATCH_INFERENCE_K8S_NAMESPACE"}
    if os.environ.get("BATCH_INFERENCE_K8S_MAX_PODS"):
        config["max_concurrent"] = {"env": "BATCH_INFERENCE_K8S_MAX_PODS"}
    return config


def chosen_executor(preload: str = STEP_PRELOAD) -> dg.ExecutorDefinition:
    name = os.environ.get("BATCH_INFERENCE_EXECUTOR") or "multiprocess"
    if name == "multiprocess":
        return multiprocess(os.environ.get("BATCH_INFERENCE_DEPLOYMENT") or "local", preload)
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_config())
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(k8s_config())
    raise ValueError(f"BATCH_INFERENCE_EXECUTOR must be one of {EXECUTORS}, not {name!r}")
