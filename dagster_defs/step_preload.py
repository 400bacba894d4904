"""What the forkserver imports once, so that each step process it forks starts warm.

The multiprocess executor forks every step from one server process per run. Whatever that server
has imported, a step gets for free; whatever it has not, every step imports again. Besides the
code location itself, a step opens the Dagster instance from its ref: with SQLite storage that
imports SQLAlchemy, Alembic and the storage classes (about 0.7 s of a step's 0.8 s start-up when
they were not preloaded), and sqlglot's dialects that the specs are checked in (~0.2 s).
Postgres storage (production) is preloaded too. What only some steps need stays out, since the
first step waits for this server: lleaves (the compiled predictor, ~0.6 s, imported by the shard
steps that use it) and the Snowflake connector (~0.45 s; `executors.multiprocess` adds it for
the Snowflake deployment).

Last, gc.freeze(): a forked process shares the server's memory until it writes to a page, and
the garbage collector's first pass would write to every object's page (its reference counts and
links), copying them all. Frozen, the preloaded objects are never collected: a step starts in
~0.2 s instead of ~0.35 s.
"""

import gc

import alembic.runtime.migration
import alembic.script
import dagster._core.instance.factory
import dagster._core.storage.event_log.sqlite
import dagster._core.storage.local_compute_log_manager
import dagster._core.storage.runs.sqlite
import dagster._core.storage.schedules.sqlite
import dagster._core.storage.sqlite_storage
import dagster_postgres
import dotenv
import sqlglot.dialects.duckdb
import sqlglot.dialects.snowflake

import batch_inference_assets

MODULES = (
    alembic.runtime.migration,
    alembic.script,
    dagster._core.instance.factory,
    dagster._core.storage.event_log.sqlite,
    dagster._core.storage.local_compute_log_manager,
    dagster._core.storage.runs.sqlite,
    dagster._core.storage.schedules.sqlite,
    dagster._core.storage.sqlite_storage,
    dagster_postgres,
    dotenv,
    sqlglot.dialects.duckdb,
    sqlglot.dialects.snowflake,
    batch_inference_assets,
)

gc.freeze()
