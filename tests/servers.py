"""Real protocol peers for tests: moto's S3 server and fakesnow's Snowflake server, on 127.0.0.1."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import snowflake.connector
from moto.server import ThreadedMotoServer

from batch_inference_assets.io.snowflake_warehouse import SnowflakeWarehouse

S3_KEY, S3_SECRET = "testing", "testing"


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def snowflake_warehouse_on(
    server: dict[str, Any], output_schema: str = "PREDICTIONS_DEV"
) -> SnowflakeWarehouse:
    """A SnowflakeWarehouse on the fakesnow `server`, in a database of its own whose output
    schema exists (an admin creates it once in production)."""
    warehouse = SnowflakeWarehouse(
        account=server["account"], user=server["user"], password=server["password"],
        host=server["host"], port=server["port"], protocol=server["protocol"],
        database=f"BI_{uuid.uuid4().hex[:8].upper()}", schema_name="FEATURES_DEV",
        output_schema=output_schema,
    )  # fmt: skip
    with warehouse.connect() as con:
        con.cursor().execute(f"CREATE SCHEMA IF NOT EXISTS {output_schema}")
    return warehouse


def snowflake_type(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "NUMBER(38,0)"
    if pa.types.is_floating(t):
        return "FLOAT"
    if pa.types.is_date(t):
        return "DATE"
    return "VARCHAR"


def load_into_snowflake(
    conn_kwargs: dict[str, Any], database: str, table: str, data: pa.Table
) -> None:
    """Create `table` and load `data` the way a user's loader would: PUT + COPY INTO."""
    con = snowflake.connector.connect(**conn_kwargs, database=database, paramstyle="qmark")
    try:
        cur = con.cursor()
        schema = table.split(".")[0]
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        cols = ", ".join(f"{f.name} {snowflake_type(f.type)}" for f in data.schema)
        cur.execute(f"CREATE OR REPLACE TABLE {table} ({cols})")
        folder = Path(tempfile.mkdtemp())
        pq.write_table(data, folder / "data.parquet")
        stage = f"{schema}.LOAD_{uuid.uuid4().hex[:8]}"
        cur.execute(f"CREATE STAGE {stage}")
        cur.execute(f"PUT 'file://{folder}/data.parquet' @{stage}/ AUTO_COMPRESS = FALSE")
        cur.execute(
            f"COPY INTO {table} FROM @{stage}/ FILE_FORMAT = (TYPE = PARQUET) "
            "MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"
        )
    finally:
        con.close()


def seeded_features(
    duckdb_file: Path, days: list[str], table: str = "customer_features"
) -> pa.Table:
    """The seed's rows of `days` from one of its daily tables (by snapshot_date)."""
    con = duckdb.connect(str(duckdb_file), read_only=True)
    try:
        return con.sql(
            f"SELECT * FROM raw.{table} WHERE snapshot_date IN "
            f"({', '.join('?' for _ in days)}) ORDER BY snapshot_date, customer_id",
            params=days,
        ).to_arrow_table()
    finally:
        con.close()


@contextlib.contextmanager
def moto_s3_with_auth() -> Iterator[str]:
    """A separate moto server that checks credentials (any key it does not know is refused)."""
    import os
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server with auth did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def _serving(handler: type) -> Iterator[int]:
    """A threaded HTTP server on a loopback port with `handler`, shut down on exit."""
    import threading
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()


@contextlib.contextmanager
def snowflake_login_refused() -> Iterator[int]:
    """An HTTP peer that answers the connector's login request as Snowflake does a bad password."""
    import json
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = json.dumps({
                "data": {"nextAction": "RETRY_LOGIN", "authnMethod": "USERNAME_PASSWORD"},
                "code": "390100", "message": "Incorrect username or password was specified.",
                "success": False,
            }).encode()  # fmt: skip
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Handler) as port:
        yield port


@contextlib.contextmanager
def s3_internal_errors() -> Iterator[tuple[str, list[str]]]:
    """An S3 endpoint that answers every request with a 500 InternalError (which botocore
    retries); yields its URL and the requests it received."""
    from http.server import BaseHTTPRequestHandler

    received: list[str] = []
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
        b"<Message>We encountered an internal error. Please try again.</Message></Error>"
    )

    class Handler(BaseHTTPRequestHandler):
        def _fail(self) -> None:
            received.append(f"{self.command} {self.path}")
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(500)
            self.send_header("content-type", "application/xml")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _fail

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Handler) as port:
        yield f"http://127.0.0.1:{port}", received


@contextlib.contextmanager
def webhook_recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP endpoint that records every JSON body POSTed to it."""
    import json
    from http.server import BaseHTTPRequestHandler

    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Handler) as port:
        yield f"http://127.0.0.1:{port}/hooks/alerts", received


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL server on 127.0.0.1 (initdb + pg_ctl from the machine's
    PostgreSQL), as DAGSTER_PG_* settings. Postgres refuses to run as root: as root it runs as
    the `postgres` user."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            "install Debian's postgresql package (.ci/run does)"
        )
    bindir = found[-1].parent
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory(prefix="bi-pg-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        if as_owner:
            shutil.chown(tmp, "postgres")
            shutil.chown(data, "postgres")
        subprocess.run(
            [*as_owner, str(bindir / "initdb"), "-D", str(data), "-U", "dagster", "-A", "trust"],
            capture_output=True, check=True,
        )  # fmt: skip
        port = _free_port()
        options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-o", options,
             "-l", str(Path(tmp) / "log"), "-w", "start"],
            capture_output=True, check=True,
        )  # fmt: skip
        try:
            yield {
                "DAGSTER_PG_HOST": "127.0.0.1",
                "DAGSTER_PG_PORT": str(port),
                "DAGSTER_PG_DB": "postgres",
                "DAGSTER_PG_USERNAME": "dagster",
                "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
            }
        finally:
            subprocess.run(
                [*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True, check=False,
            )  # fmt: skip


def stop_group(proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    """Stop a process started with `start_new_session=True` and everything it started (the
    webserver and daemon of `dagster dev`, say), so no process outlives the test."""
    import signal

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)  # anyone left in the group?
            except ProcessLookupError:
                return
            time.sleep(0.2)


@contextlib.contextmanager
def silent_peer() -> Iterator[str]:
    """A loopback TCP server that accepts connections and never answers: what a client sees
    of a stopped (SIGSTOP) or wedged server whose kernel still completes the handshake."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


class SnowflakeProxy:
    """What `snowflake_proxy` yields: its port, what passed through it, and the switch that
    makes it stop answering (a hung or SIGSTOPped Snowflake, seen from the client)."""

    def __init__(self, port: int) -> None:
        import threading

        self.port = port
        self.statements: list[str] = []  # sqlText of every query request, in order
        self.logins: list[dict[str, Any]] = []  # SESSION_PARAMETERS of every login
        self.silent_after: str | None = None  # regex: answer the first match, then go silent
        self.silenced = threading.Event()
        self.swallowed: list[str] = []  # requests it never answered, "METHOD path"
        self.lost_sessions: set[str] = set()  # Authorization headers of those requests

    def connection_kwargs(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "protocol": "http"}


@contextlib.contextmanager
def snowflake_proxy(upstream: dict[str, Any]) -> Iterator[SnowflakeProxy]:
    """A loopback HTTP proxy in front of the fakesnow server `upstream`: it forwards every
    request (logins, queries, stage uploads) until it has answered a statement matching
    `proxy.silent_after`, then accepts requests and never answers them. On exit it releases
    them and rolls back the transactions of the sessions it cut off, as Snowflake does for
    a session it no longer hears from, so the shared server's tables stay usable."""
    import gzip
    import http.client
    import json
    import re
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    released = threading.Event()
    holder: list[SnowflakeProxy] = []

    def forward(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        upstream_conn = http.client.HTTPConnection(upstream["host"], upstream["port"], timeout=60)
        try:
            upstream_conn.request(method, path, body=body, headers=headers)
            response = upstream_conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            upstream_conn.close()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # the connector keeps its connections alive

        def _relay(self) -> None:
            proxy = holder[0]
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            sql = None
            if self.path.startswith(("/queries/v1/query-request", "/session/v1/login-request")):
                raw = (
                    gzip.decompress(body)
                    if self.headers.get("content-encoding") == "gzip"
                    else body
                )
                data = json.loads(raw)
                if "sqlText" in data:
                    sql = data["sqlText"]
                    proxy.statements.append(sql)
                else:
                    proxy.logins.append(data["data"].get("SESSION_PARAMETERS", {}))
            if proxy.silenced.is_set():
                proxy.swallowed.append(f"{self.command} {self.path}")
                if auth := self.headers.get("authorization"):
                    proxy.lost_sessions.add(auth)
                released.wait()
                self.close_connection = True
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            status, response_headers, payload = forward(self.command, self.path, headers, body)
            self.send_response(status)
            for name, value in response_headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            if sql is not None and proxy.silent_after and re.search(proxy.silent_after, sql, re.I):
                proxy.silenced.set()

        do_GET = do_POST = do_PUT = _relay

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(SnowflakeProxy(server.server_port))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield holder[0]
    finally:
        released.set()
        server.shutdown()
        server.server_close()
        for auth in holder[0].lost_sessions:
            body = json.dumps({"sqlText": "ROLLBACK", "sequenceId": 1}).encode()
            forward(
                "POST", f"/queries/v1/query-request?requestId={uuid.uuid4()}",
                {"authorization": auth, "content-type": "application/json"}, body,
            )  # fmt: skip
