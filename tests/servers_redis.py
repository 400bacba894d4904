"""A throwaway redis-server (Debian's package) on a free loopback port, for the sink and Celery."""

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_SERVER = "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(*, requirepass: str | None = None, maxmemory: str | None = None) -> Iterator[str]:
    """Yields the server's URL (with the password, if any); stops the server on exit.

    No persistence (`--save ''`, no AOF), everything under a temporary folder. `maxmemory`
    ("2mb") comes with the noeviction policy: writes past it fail with an OOM error."""
    binary = shutil.which("redis-server") or REDIS_SERVER
    if not Path(binary).exists():
        raise RuntimeError("redis-server not found: install Debian's redis-server package")
    with tempfile.TemporaryDirectory(prefix="bi-redis-") as tmp:
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = _free_port()
            log = Path(tmp) / f"redis-{port}.log"
            args = [
                binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", tmp, "--logfile", str(log),
            ]  # fmt: skip
            if requirepass:
                args += ["--requirepass", requirepass]
            if maxmemory:
                args += ["--maxmemory", maxmemory, "--maxmemory-policy", "noeviction"]
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            auth = f":{requirepass}@" if requirepass else ""
            url = f"redis://{auth}127.0.0.1:{port}/0"
            try:
                if _wait_for_ping(proc, url):
                    yield url
                    return
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        raise RuntimeError(f"redis-server did not start:\n{log.read_text()[-2000:]}")


def _wait_for_ping(proc: subprocess.Popen[bytes], url: str, timeout: float = 20) -> bool:
    """True once the server answers PING; False if it exited (its port was taken)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with (
            contextlib.suppress(redis.ConnectionError),
            redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0)) as client,
        ):
            if client.ping():
                return True
        time.sleep(0.05)
    raise RuntimeError(f"redis-server at {url} did not answer PING within {timeout:g}s")
