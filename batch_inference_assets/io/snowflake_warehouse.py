"""Snowflake as the warehouse: bulk export to Parquet, staged COPY INTO, atomic partition swap."""

import contextlib
import logging
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import pyarrow as pa
from pydantic import Field, model_validator
from upath import UPath

from batch_inference_assets.contracts import ColumnType, validate_identifier
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.parquet_files import RotatingParquetWriter
from batch_inference_assets.io.warehouse import (
    DeclaredColumn,
    PublishRequest,
    QueryTag,
    StagedPublication,
    StagedStats,
    Warehouse,
    WarehouseError,
    with_declared_types,
)
from batch_inference_assets.sql import SqlTemplateError, statement_count

if TYPE_CHECKING:
    from dagster_snowflake import SnowflakeResource
    from snowflake.connector import SnowflakeConnection
    from snowflake.connector.cursor import SnowflakeCursor

_DECLARED: dict[str, ColumnType] = {
    **dict.fromkeys(("FLOAT", "DOUBLE", "REAL"), "float64"),
    **dict.fromkeys(("TEXT", "VARCHAR", "STRING"), "string"),
    "BOOLEAN": "bool",
    "DATE": "date",
    **dict.fromkeys(("TIMESTAMP_TZ", "TIMESTAMP_LTZ"), "timestamp"),
}


def _declared_type(sql_type: str, scale: int | None) -> ColumnType | None:
    if sql_type in ("NUMBER", "DECIMAL", "NUMERIC"):
        return "int64" if not scale else "float64"
    return _DECLARED.get(sql_type)


_QUERY_ID = re.compile(r"^[0-9a-fA-F-]{36}$")
_STAGE_PATH = re.compile(r"^[A-Za-z0-9_./=-]*$")
_STAGING_PREFIX = "BI_STAGE_"
logger = logging.getLogger("batch_inference.snowflake")


def normalize_batch(table: pa.Table) -> pa.Table:
    """Lower-case Snowflake's folded column names; NUMBER(p,0) -> int64, NUMBER(p,s) -> float64."""
    fields = []
    for f in table.schema:
        typ = f.type
        if pa.types.is_decimal(typ):
            typ = pa.int64() if typ.scale == 0 else pa.float64()
        name = f.name.lower() if f.name.isupper() else f.name
        fields.append(pa.field(name, typ, nullable=True))
    return table.rename_columns([f.name for f in fields]).cast(pa.schema(fields))


def stage_path(*parts: str) -> str:
    """`parts` joined into a path inside a stage: never `..`, `.` or an empty segment."""
    path = "/".join(p.strip("/") for p in parts)
    if not _STAGE_PATH.fullmatch(path):
        raise WarehouseError(f"refusing stage path {path!r}: unexpected characters")
    if any(segment in ("", ".", "..") for segment in path.split("/")):
        raise WarehouseError(f"refusing stage path {path!r}: empty, '.' or '..' segment")
    return path


def unload_sql(
    stage: str, destination: str, query_id: str, columns: Sequence[str], max_file_bytes: int
) -> str:
    """COPY INTO <stage> from the result of an already-run (parameter-bound) query."""
    if not _QUERY_ID.match(query_id):
        raise WarehouseError(f"unexpected Snowflake query id {query_id!r}")
    select = ", ".join(
        f'"{c}" AS "{c.lower() if c.isupper() else c}"' for c in columns if '"' not in c
    )
    if len(select.split(", ")) != len(columns):
        raise WarehouseError(f"unsupported column names in feature query: {list(columns)}")
    return (
        f"COPY INTO @{validate_identifier(stage, 'stage')}/{stage_path(destination)}/part "
        f"FROM (SELECT {select} FROM TABLE(RESULT_SCAN('{query_id}'))) "
        f"FILE_FORMAT = (TYPE = PARQUET) HEADER = TRUE MAX_FILE_SIZE = {int(max_file_bytes)} "
        "OVERWRITE = TRUE"
    )


def one_statement(sql: str, where: str) -> str:
    """`sql`, refused unless it is one statement as Snowflake splits them, before it is sent.
    Run it with `num_statements=1` too: the server then refuses more (MULTI_STATEMENT_COUNT=1,
    whatever the account or session default), where fakesnow would run them all."""
    try:
        count = statement_count(sql, "snowflake")
    except SqlTemplateError as err:
        raise WarehouseError(f"{where}: refusing the query: {err}") from err
    if count != 1:
        raise WarehouseError(
            f"{where}: refusing to run {count} statements as one query, where one is allowed"
        )
    return sql


def copy_into_sql(
    table: str, stage: str, folder: str, files: Sequence[str] | None, *, purge: bool = False
) -> str:
    """COPY INTO `table` from a stage folder; `purge`: Snowflake deletes the files it loaded."""
    names = ""
    if files is not None:
        names = " FILES = (" + ", ".join(f"'{stage_path(f)}'" for f in files) + ")"
    return (
        f"COPY INTO {table} FROM @{validate_identifier(stage, 'stage')}/{stage_path(folder)}/"
        f"{names} FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"
        + (" PURGE = TRUE" if purge else "")
    )


def _staging_prefix(table: str, day: date) -> str:
    return f"{_STAGING_PREFIX}{validate_identifier(table, 'table').upper()}_{day:%Y%m%d}_"


def staging_table_name(table: str, day: date) -> str:
    """A new staging table for `table`'s partition `day`: BI_STAGE_<TABLE>_<YYYYMMDD>_<16 hex>.
    The name says whose it is, so a later publication of the same table and day can drop the
    one a killed run left behind, and leave every other day's alone."""
    return f"{_staging_prefix(table, day)}{uuid.uuid4().hex[:16].upper()}"


def leftover_staging_tables(names: Sequence[str], table: str, day: date) -> list[str]:
    """Those of `names` that are staging tables of `table`'s partition `day`, matched whole."""
    pattern = re.compile(re.escape(_staging_prefix(table, day)) + "[0-9A-F]{16}")
    return sorted(n for n in names if pattern.fullmatch(n.upper()))


def _connector() -> ModuleType:
    """snowflake.connector, imported when first used: about 0.45 s that a deployment without
    Snowflake never pays (the Snowflake deployment preloads it into every step process)."""
    import snowflake.connector

    return snowflake.connector


def _answered(err: BaseException) -> bool:
    """Snowflake answered (a SQL error, a statement it cancelled): the session still works.
    Anything else (timeouts, refused or dropped connections, HTTP errors the connector retried
    until its timeout) may mean it has gone away."""
    return isinstance(err, _connector().errors.ProgrammingError)


class SnowflakeWarehouse(Warehouse):
    """Snowflake with our own SQL, connected through dagster-snowflake's `SnowflakeResource`
    (auth, key loading) with server-side (qmark) binding and a query tag on every session."""

    account: str
    user: str
    password: str | None = Field(default=None, description="Password auth.")
    private_key: str | None = Field(
        default=None, description="Key-pair auth: the PEM itself (or base64 of it)."
    )
    private_key_path: str | None = Field(default=None, description="Key-pair auth: a PEM file.")
    private_key_password: str | None = Field(
        default=None, description="Passphrase of an encrypted private key."
    )
    authenticator: str | None = Field(
        default=None, description="e.g. externalbrowser or an Okta URL."
    )
    role: str | None = None
    database: str
    schema_name: str = Field(description="What {schema} in feature SQL resolves to.")
    output_schema: str = Field(description="Schema of the published prediction tables.")
    export_warehouse: str | None = Field(default=None, description="Runs feature queries.")
    publish_warehouse: str | None = Field(default=None, description="Runs loads and swaps.")
    host: str | None = Field(default=None, description="Only for private links or tests.")
    port: int | None = None
    protocol: str = "https"
    export_via: Literal["arrow_batches", "unload"] = Field(
        default="arrow_batches",
        description="unload: COPY INTO an external stage over the object store (production);"
        " arrow_batches: stream result batches into Parquet (no stage needed).",
    )
    unload_stage: str | None = Field(
        default=None, description="External stage whose URL is the object store root."
    )
    publish_via: Literal["put", "external_stage"] = Field(
        default="put",
        description="external_stage: COPY INTO from the stage over the object store;"
        " put: upload the scored files to an internal stage first.",
    )
    publish_stage: str = Field(
        default="BATCH_INFERENCE_STAGE",
        description="Internal stage for `put` (created if missing), or the external stage.",
    )
    login_timeout_seconds: int = Field(
        default=30, ge=1, description="Connecting and signing in, retries included."
    )
    socket_timeout_seconds: int = Field(
        default=60,
        ge=1,
        description="How long one HTTP request to Snowflake may go unanswered before the "
        "connector retries it (connect and read). Keep it above 45: Snowflake holds a query "
        "request up to 45 s before it answers that the statement is still running.",
    )
    export_timeout_seconds: int = Field(
        default=3600,
        ge=1,
        description="Each statement of a feature export (the query, its unload). The client "
        "cancels it after this, and it is the session's STATEMENT_TIMEOUT_IN_SECONDS, so "
        "Snowflake cancels it too even if the client has gone.",
    )
    publish_timeout_seconds: int = Field(
        default=300,
        ge=1,
        description="Each statement of a publication (stage upload, COPY INTO, stats, DELETE, "
        "INSERT, COMMIT), enforced the same two ways. A Snowflake that stops answering fails "
        "the step after about this + socket_timeout_seconds, one socket timeout for the "
        "ROLLBACK and one for the logout.",
    )
    cleanup_timeout_seconds: int = Field(
        default=30,
        ge=1,
        description="Each cleanup statement after a failure (ROLLBACK, REMOVE of the staged "
        "files, DROP of the staging table); an unanswered one still takes a socket timeout. "
        "Once one goes unanswered the rest are skipped: the next publication of the table and "
        "day drops the staging table.",
    )
    network_timeout_seconds: int = Field(
        default=300,
        ge=1,
        description="Every other statement (reads, checks), and STATEMENT_TIMEOUT_IN_SECONDS "
        "of their sessions.",
    )

    @property
    def dialect(self) -> str:
        return "snowflake"

    @property
    def feature_schema(self) -> str:
        return validate_identifier(self.schema_name, "schema_name")

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> "SnowflakeWarehouse":
        given = [n for n in ("password", "private_key", "private_key_path") if getattr(self, n)]
        if len(given) > 1 or not (given or self.authenticator):
            raise ValueError(
                "set exactly one of warehouse.password, private_key or private_key_path "
                f"(or an authenticator that needs none); got {', '.join(given) or 'none'}"
            )
        return self

    def snowflake_resource(
        self, tag: QueryTag | None = None, statement_timeout: int | None = None
    ) -> "SnowflakeResource":
        """dagster-snowflake's resource for one session, tagged with `tag`, whose statements
        Snowflake cancels after `statement_timeout` seconds (default network_timeout_seconds)."""
        # Imported here: it pulls in Snowpark (~2.4 s), which every step process of a local
        # (DuckDB) deployment would otherwise pay for.
        from dagster_snowflake import SnowflakeResource

        session: dict[str, Any] = {
            "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False,
            # In-band telemetry is sent when the connection closes: one more request to wait
            # out when Snowflake has stopped answering.
            "CLIENT_TELEMETRY_ENABLED": False,
            "STATEMENT_TIMEOUT_IN_SECONDS": statement_timeout or self.network_timeout_seconds,
            **({"QUERY_TAG": tag.as_json()} if tag else {}),
        }
        endpoint: dict[str, Any] = {"socket_timeout": self.socket_timeout_seconds}
        if self.host:
            endpoint.update(host=self.host, protocol=self.protocol)
        if self.port:
            endpoint["port"] = self.port
        return SnowflakeResource(
            account=self.account,
            user=self.user,
            password=self.password,
            private_key=self.private_key,
            private_key_path=self.private_key_path,
            private_key_password=self.private_key_password,
            authenticator=self.authenticator,
            role=self.role,
            database=self.database,
            paramstyle="qmark",
            # Statements commit as they run; the partition swap is an explicit BEGIN ... COMMIT.
            # (It also spares get_connection's COMMIT on a connection we have already closed.)
            autocommit=True,
            login_timeout=self.login_timeout_seconds,
            network_timeout=self.network_timeout_seconds,
            additional_snowflake_connection_args={"session_parameters": session, **endpoint},
        )

    @contextlib.contextmanager
    def connect(
        self, tag: QueryTag | None = None, statement_timeout: int | None = None
    ) -> Iterator["SnowflakeConnection"]:
        where = f" at {self.protocol}://{self.host}:{self.port}" if self.host else ""
        resource = self.snowflake_resource(tag, statement_timeout)
        with contextlib.ExitStack() as session:
            try:
                con = session.enter_context(resource.get_connection())
            except (_connector().errors.Error, ValueError, OSError) as err:
                raise WarehouseError(
                    f"cannot connect to Snowflake account {self.account!r} as {self.user!r}"
                    f"{where}: {err}. Check warehouse.account, user, password or "
                    "private_key_path (or private_key, private_key_password, authenticator), role"
                    + (", host and port." if self.host else ".")
                ) from err
            assert isinstance(con, _connector().SnowflakeConnection)
            try:
                yield con
            finally:
                # get_connection cleans up after a bare `yield`, so never when the block raised.
                # One logout attempt: a Snowflake that stopped answering costs one socket timeout.
                con.close(retry=False)

    def _qualified(self, name: str, what: str) -> str:
        """Stages named without a schema live in the output schema."""
        validate_identifier(name, what)
        return name if "." in name else f"{self.output_schema}.{name}"

    @staticmethod
    def _use_warehouse(cur: "SnowflakeCursor", name: str | None, timeout: int) -> None:
        if name:
            cur.execute(f"USE WAREHOUSE {validate_identifier(name, 'warehouse')}", timeout=timeout)

    def _timed_out(self, err: BaseException, setting: str) -> str:
        """What to add to `err`'s text when a timeout (`setting`) ended the statement."""
        if not isinstance(err, _connector().errors.Error):
            return ""
        if not _answered(err):
            return (
                f" (no usable answer from Snowflake within warehouse.{setting}="
                f"{getattr(self, setting)},"
                f" socket_timeout_seconds={self.socket_timeout_seconds})"
            )
        if "timeout" in str(err).lower():  # cancelled by the client or by Snowflake itself
            return f" (it ran longer than warehouse.{setting}={getattr(self, setting)})"
        return ""

    def export_query(
        self,
        sql: str,
        params: Sequence[Any],
        object_store: ObjectStore,
        folder: str,
        *,
        max_file_bytes: int,
        row_group_rows: int,
        tag: QueryTag,
    ) -> list[UPath]:
        destination = object_store.path(folder)
        one_statement(sql, f"{tag.pipeline} {tag.partition} ({tag.stage})")
        timeout = self.export_timeout_seconds
        with self.connect(tag, statement_timeout=timeout) as con:
            cur = con.cursor()
            try:
                self._use_warehouse(cur, self.export_warehouse, timeout)
                cur.execute(sql, list(params), num_statements=1, timeout=timeout)
                if self.export_via == "unload":
                    self._unload(cur, folder, max_file_bytes)
                    return sorted(destination.glob("*.parquet"), key=str)
                writer = RotatingParquetWriter(
                    destination, max_file_bytes=max_file_bytes, row_group_rows=row_group_rows
                )
                for batch in cur.fetch_arrow_batches():
                    writer.write(normalize_batch(batch))
                return writer.close()
            except _connector().errors.Error as err:
                raise WarehouseError(
                    f"feature query failed: {err}{self._timed_out(err, 'export_timeout_seconds')}"
                ) from err

    def _unload(self, cur: "SnowflakeCursor", folder: str, max_file_bytes: int) -> None:
        """Snowflake writes the files itself, through a stage whose URL is the store's root."""
        if not self.unload_stage:
            raise WarehouseError("export_via=unload needs warehouse.unload_stage")
        query_id = cur.sfqid
        columns = [d.name for d in cur.description or []]
        if query_id is None:
            raise WarehouseError("Snowflake returned no query id for the feature query")
        stage = self._qualified(self.unload_stage, "unload_stage")
        cur.execute(
            unload_sql(stage, folder, query_id, columns, max_file_bytes),
            timeout=self.export_timeout_seconds,
        )

    def _existing_columns(
        self, cur: "SnowflakeCursor", table: str, timeout: int | None = None
    ) -> list[str] | None:
        cur.execute(
            "SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS "
            "WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            [self.output_schema.upper(), table.upper()],
            timeout=timeout or self.network_timeout_seconds,
        )
        return [str(r[0]).lower() for r in cur.fetchall()] or None

    def _load_stage_table(
        self,
        session: "_PublishSession",
        stage_table: str,
        files: Sequence[str],
        object_store: ObjectStore,
        tag: QueryTag,
    ) -> None:
        names = [f.rsplit("/", 1)[-1] for f in files]
        if self.publish_via == "external_stage":
            folders = {object_store.relative(f).rsplit("/", 1)[0] for f in files}
            if len(folders) != 1:
                raise WarehouseError(f"scored files span several folders: {sorted(folders)}")
            stage = self._qualified(self.publish_stage, "publish_stage")
            session.execute(copy_into_sql(stage_table, stage, folders.pop(), names))
            return
        stage = self._qualified(self.publish_stage, "publish_stage")
        session.execute(f"CREATE STAGE IF NOT EXISTS {stage}")
        # A folder of this publication's own: one run publishes several tables at once
        # (predictions and shadow_predictions), and a retried step must not load the files
        # of an attempt that was killed. The trailing slash keeps names that start alike apart.
        folder = stage_path(tag.pipeline, tag.partition, tag.run_id, tag.stage, uuid.uuid4().hex)
        local = Path(tempfile.mkdtemp(prefix="bi-publish-"))
        try:
            for uri in files:
                source = object_store.open_path(uri)
                source.fs.get_file(source.path, str(local / source.name))
            session.owe(
                "files", f"REMOVE @{stage}/{folder}/", f"the staged files @{stage}/{folder}/"
            )
            session.execute(
                f"PUT 'file://{local}/*.parquet' @{stage}/{folder}/ "
                "AUTO_COMPRESS = FALSE OVERWRITE = TRUE"
            )
            # The folder holds exactly these files; PURGE deletes them once loaded (the scored
            # files in the object store stay the source of truth).
            session.execute(copy_into_sql(stage_table, stage, folder, None, purge=True))
            session.settle("files")
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def _drop_leftover_staging(self, session: "_PublishSession", request: PublishRequest) -> None:
        """Drop the staging tables that killed runs left for this table and day (and only
        those: other days may be publishing right now)."""
        schema = self.output_schema
        session.execute(
            "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES "
            "WHERE TABLE_SCHEMA = ? AND TABLE_NAME LIKE ?",
            [schema.upper(), _staging_prefix(request.table, request.partition_value) + "%"],
        )
        names = [str(row[0]) for row in session.cur.fetchall()]
        for name in leftover_staging_tables(names, request.table, request.partition_value):
            session.execute(f"DROP TABLE IF EXISTS {schema}.{name}")

    @contextlib.contextmanager
    def stage_publication(
        self, request: PublishRequest, object_store: ObjectStore
    ) -> Iterator[StagedPublication]:
        schema = validate_identifier(self.output_schema, "output_schema")
        table = f"{schema}.{validate_identifier(request.table, 'table')}"
        day = request.partition_value
        stage_table = f"{schema}.{staging_table_name(request.table, day)}"
        timeout = self.publish_timeout_seconds
        with self.connect(request.tag, statement_timeout=timeout) as con:
            session = _PublishSession(con.cursor(), self, table)
            try:
                self._use_warehouse(session.cur, self.publish_warehouse, timeout)
                existing = self._existing_columns(session.cur, request.table, timeout)
                if existing is not None and existing != request.contract.names:
                    raise WarehouseError(
                        f"table {table} exists with columns {existing}, but the spec declares "
                        f"{request.contract.names}; migrate or rename the table"
                    )
                session.execute(request.contract.create_table_sql(table, "snowflake"))
                self._drop_leftover_staging(session, request)
                session.owe(
                    "staging table",
                    f"DROP TABLE IF EXISTS {stage_table}",
                    f"the staging table {stage_table}, which the next publication of {table} "
                    f"for {day} drops",
                )
                session.execute(
                    request.contract.table_ddl(stage_table, "snowflake", "CREATE TRANSIENT TABLE")
                )
                self._load_stage_table(
                    session, stage_table, request.files, object_store, request.tag
                )
                stats = self._staged_stats(session, request, stage_table)
            except (_connector().errors.Error, OSError) as err:  # OSError: a lost file
                raise WarehouseError(session.failed(err)) from err
            except BaseException:
                session.clean_up()
                raise
            staged = _SnowflakeStaged(session, request, table, stage_table, stats)
            try:
                yield staged
            finally:
                staged.rollback()  # nothing to undo once committed
                if left := session.clean_up():  # the publication itself is decided by now
                    logger.warning("publishing to %s: left behind %s", table, "; ".join(left))

    @staticmethod
    def _staged_stats(
        session: "_PublishSession", request: PublishRequest, stage_table: str
    ) -> StagedStats:
        session.execute(
            request.staged_stats_sql(stage_table, "snowflake"), request.staged_stats_params()
        )
        row = session.cur.fetchone()
        assert row is not None
        return StagedStats(
            rows=int(row[0]),
            null_scores=int(row[1]),
            min_score=None if row[2] is None else float(row[2]),
            max_score=None if row[3] is None else float(row[3]),
            duplicate_ids=int(row[4]),
            other_partitions=int(row[5]),
            foreign_runs=int(row[6]),
            other_versions=int(row[7]),
        )

    def read_partition(self, table: str, partition_column: str, value: Any) -> pd.DataFrame:
        name = f"{self.output_schema}.{validate_identifier(table, 'table')}"
        part = validate_identifier(partition_column, "partition column")
        with self.connect() as con:
            cur = con.cursor()
            try:
                declared = self._declared_columns(cur, table)
                if not declared:
                    raise WarehouseError(f"cannot read {name}: no such table")
                cur.execute(f"SELECT * FROM {name} WHERE {part} = ?", [value])
                # Through dagster-snowflake's connection; the connector's Arrow-backed fetch.
                frame = cur.fetch_pandas_all()
            except _connector().errors.Error as err:
                raise WarehouseError(
                    f"reading {partition_column} = {value} from {name} failed: {err}"
                ) from err
        return with_declared_types(frame, declared)

    def _declared_columns(self, cur: "SnowflakeCursor", table: str) -> list[DeclaredColumn]:
        cur.execute(
            "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_SCALE, IS_NULLABLE "
            "FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? "
            "ORDER BY ORDINAL_POSITION",
            [self.output_schema.upper(), table.upper()],
        )
        return [
            DeclaredColumn(str(name).lower(), _declared_type(sql_type, scale), nullable == "YES")
            for name, sql_type, scale, nullable in cur.fetchall()
        ]

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        one_statement(sql, "query")
        with self.connect() as con:
            cur = con.cursor()
            cur.execute(sql, list(params), num_statements=1)
            return normalize_batch(cur.fetch_arrow_all() or pa.table({}))

    def published_table(self, table: str) -> str | None:
        validate_identifier(table, "output table")
        with self.connect() as con:
            exists = self._existing_columns(con.cursor(), table)
        return f"{self.output_schema}.{table}".upper() if exists else None


class _PublishSession:
    """One publication's statements on one session. Each runs within publish_timeout_seconds;
    the cleanup owed after a failure (ROLLBACK, REMOVE, DROP) within cleanup_timeout_seconds,
    and once one of those goes unanswered the rest are skipped: against a Snowflake that has
    stopped answering, each would cost another timeout and fail anyway."""

    def __init__(self, cur: "SnowflakeCursor", warehouse: SnowflakeWarehouse, table: str) -> None:
        self.cur, self.table = cur, table
        self._warehouse = warehouse
        self._lost: str | None = None
        self._owed: dict[str, tuple[str, str]] = {}  # key -> (statement, what it would leave)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        self.cur.execute(sql, params, timeout=self._warehouse.publish_timeout_seconds)

    def owe(self, key: str, sql: str, leaves: str) -> None:
        """`sql` runs at cleanup unless `settle(key)` comes first; `leaves` says what stays
        behind if it fails."""
        self._owed[key] = (sql, leaves)

    def settle(self, key: str) -> None:
        self._owed.pop(key, None)

    def undo(self, sql: str) -> str | None:
        """Run one cleanup statement: None once it returned, else why it did not."""
        if self._lost:
            return f"not tried: {self._lost}"
        try:
            self.cur.execute(sql, timeout=self._warehouse.cleanup_timeout_seconds)
        except _connector().errors.Error as err:
            if not _answered(err):
                self._lost = f"the {sql.split()[0]} before it got no answer"
            return str(err)
        return None

    def clean_up(self) -> list[str]:
        """Run what is owed, last owed first (the staged files before the staging table, which
        the next publication drops anyway); what was left behind, and why."""
        left = []
        while self._owed:
            sql, leaves = self._owed.popitem()[1]
            if (failed := self.undo(sql)) is not None:
                left.append(f"{leaves} ({failed})")
        return left

    def _cause(self, err: BaseException) -> str:
        return f"{err}{self._warehouse._timed_out(err, 'publish_timeout_seconds')}"

    @staticmethod
    def _left(left: list[str]) -> str:
        return f". Left behind: {'; '.join(left)}" if left else ""

    def failed(self, err: BaseException) -> str:
        """The message for a publication that failed before its transaction began: the
        staged rows are discarded (rolled back) once the staging table is dropped."""
        cause, left = self._cause(err), self.clean_up()
        if not left:
            return f"publishing to {self.table} failed, rolled back: {cause}"
        return (
            f"publishing to {self.table} failed, nothing was published: {cause}{self._left(left)}"
        )

    def failed_in_transaction(self, err: BaseException, statement: str) -> str:
        """The message for a failed swap: "rolled back" only if the ROLLBACK returned."""
        cause, rollback = self._cause(err), self.undo("ROLLBACK")
        left = self._left(self.clean_up())
        if statement == "COMMIT" and not _answered(err):
            after = "returned" if rollback is None else f"failed too ({rollback})"
            return (
                f"publishing to {self.table} failed: the COMMIT got no answer ({cause}), so "
                "whether the partition was replaced is unknown; either way it holds whole rows "
                f"(the old ones or this run's). The ROLLBACK sent after it {after}{left}"
            )
        if rollback is None:
            return f"publishing to {self.table} failed, rolled back: {cause}{left}"
        return (
            f"publishing to {self.table} failed: {cause}. The ROLLBACK failed too ({rollback}); "
            "nothing was committed: Snowflake discards the open transaction when the session "
            "ends (one whose session was lost is aborted once it blocks another writer for 5 "
            f"minutes, or after 4 hours){left}"
        )


class _SnowflakeStaged(StagedPublication):
    """The staged rows sit in a transient table; commit swaps them in in one transaction."""

    def __init__(
        self,
        session: _PublishSession,
        request: PublishRequest,
        table: str,
        stage_table: str,
        stats: StagedStats,
    ) -> None:
        super().__init__(table, stats)
        self._session, self._request, self._stage_table = session, request, stage_table

    def _commit(self) -> None:
        cols = self._request.column_list("snowflake")
        part = validate_identifier(self._request.partition_column)
        session, statement = self._session, "BEGIN"
        try:
            session.execute("BEGIN")
            if self._request.mode == "replace_partition":
                statement = "DELETE"
                session.execute(
                    f"DELETE FROM {self.table} WHERE {part} = ?", [self._request.partition_value]
                )
            statement = "INSERT"
            session.execute(
                f"INSERT INTO {self.table} ({cols}) SELECT {cols} FROM {self._stage_table}"
            )
            statement = "COMMIT"
            session.execute("COMMIT")
        except _connector().errors.Error as err:
            raise WarehouseError(session.failed_in_transaction(err, statement)) from err
        except BaseException:
            session.undo("ROLLBACK")
            raise

    def _rollback(self) -> None:
        """Nothing to undo: the transaction opens and closes inside `_commit`."""
