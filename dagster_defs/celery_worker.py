"""Start a Celery worker for this code location, on the same broker as the executor.

    python -m dagster_defs.celery_worker [--concurrency N] [--name NAME] [--queue Q ...]

Run it on every worker machine with the same environment as the code location (the
BATCH_INFERENCE_* deployment variables, DAGSTER_HOME pointing at the production instance):
the worker reads the executor config from `dagster_defs.executors.celery_config`, so it cannot
listen on a different broker than the runs submit to. Each worker process imports the
definitions once and then runs shard steps back to back, warm.
"""

import argparse
import os
import socket
import sys
import tempfile
from pathlib import Path

import yaml

from dagster_defs.executors import CELERY_INCLUDE, celery_config


def worker_command(concurrency: int, name: str, queues: list[str], loglevel: str) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker",
        "--prefetch-multiplier=1",  # a long shard must not hold a second one hostage
        "--concurrency", str(concurrency),
        "--loglevel", loglevel,
        "-I", ",".join(CELERY_INCLUDE),
        "-Q", ",".join(queues),
        "-n", name,
    ]  # fmt: skip


def write_celery_config(folder: Path) -> Path:
    """The executor config as dagster-celery's `dagster_celery_config` module in `folder`."""
    from dagster_celery.cli import get_validated_config

    config_yaml = folder / "executor.yaml"
    config_yaml.write_text(yaml.safe_dump({"execution": {"config": celery_config()}}))
    validated = get_validated_config(str(config_yaml))  # resolves {"env": ...} values
    lines = []
    if validated.get("broker"):
        lines.append(f"broker_url = {validated['broker']!r}")
    if validated.get("backend"):
        lines.append(f"result_backend = {validated['backend']!r}")
    for key, value in (validated.get("config_source") or {}).items():
        lines.append(f"{key} = {value!r}")
    module = folder / "dagster_celery_config.py"
    module.write_text("\n".join(lines) + "\n")
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--name", default=f"batch-inference@{socket.gethostname()}")
    parser.add_argument("--queue", action="append", default=None, help="default: dagster")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)

    config_dir = Path(tempfile.mkdtemp(prefix="batch-inference-celery-"))
    write_celery_config(config_dir)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(config_dir), env.get("PYTHONPATH")) if p)
    cmd = worker_command(args.concurrency, args.name, args.queue or ["dagster"], args.loglevel)
    os.execve(sys.executable, cmd, env)


if __name__ == "__main__":
    main()
