"""The Redis online store: a published partition's rows as hashes behind one pointer key.

Key scheme, for `key: "churn:{customer_id}"` and `fields: [score, label]`:

- every load writes its own key space: one hash per row at `churn:42@<version>`, where
  `<version>` is `<partition>~<run tag>` (`2026-10-15~3f2a9c1d4e5b`: the partition, then the
  first 12 letters and digits of the run id), each with an EXPIRE of `ttl_hours`;
- then one Lua script switches the pointer `churn:current` (the key's text before its first
  field, then `:current`) to that version, unless the pointer already serves a later partition
  (partition keys compare byte by byte, which orders daily keys by day): a backfill never takes
  readers back in time, while another run of the same partition does switch them. Readers
  resolve the pointer and read the hash in one script (`read_row`), so they see the old day or
  the new one, never a half-loaded one;
- the version the pointer named before is then retired: its keys, found by SCAN MATCH, get
  an EXPIRE of `retire_after_seconds` (not DEL) so a reader that resolved the pointer just
  before the switch can still finish. Every key carries a TTL anyway, so keys a failed
  or unswitched load wrote go away on their own.

Field values are strings: floats as their shortest round-trip repr (`0.30000000000000004`),
integers in decimal, booleans `true`/`false`, dates and timestamps ISO 8601, and a null as the
empty string, so every hash holds every field and a rewrite replaces all of them.
"""

import math
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from batch_inference_assets.sinks import SinkError
from batch_inference_assets.spec import RedisSinkSpec

_FIELD = re.compile(r"\{([^{}]*)\}")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
RETIRE_AFTER_SECONDS = 300.0
SCAN_COUNT = 1_000

# KEYS[1] the pointer; ARGV[1] this load's version, ARGV[2] its partition.
# Returns {1 if switched else 0, the version the pointer named before ('' if none)}.
# Byte order, not Lua's `>`, which follows the server's LC_COLLATE.
_SWITCH = """
local function later(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
local current = redis.call('GET', KEYS[1])
if current then
  local served = string.match(current, '^(.*)~[^~]*$') or current
  if later(served, ARGV[2]) then return {0, current} end
end
redis.call('SET', KEYS[1], ARGV[1])
return {1, current or ''}
"""

# KEYS[1] the pointer; ARGV[1] the row's key without its version. One round trip, atomic with
# respect to the switch: the hash read belongs to the version the pointer named at that moment.
_READ = """
local version = redis.call('GET', KEYS[1])
if not version then return {} end
return redis.call('HGETALL', ARGV[1] .. '@' .. version)
"""


class RedisSinkError(SinkError):
    """Redis could not take (or switch to) a partition's rows: down, timed out, full, refused.

    `retryable` is False when another attempt would fail the same way (a wrong password)."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class RedisLoad:
    keys: int  # rows (hashes) written
    version: str  # the key space this load wrote
    pointer: str  # the pointer key readers resolve first
    previous: str | None  # the version the pointer named before this load
    switched: bool  # False when the pointer already serves a later partition
    retired: int = 0  # keys of `previous` set to expire within retire_after_seconds


def pointer_key(spec: RedisSinkSpec) -> str:
    """`churn:current` for `churn:{customer_id}`: never a row's key, which always holds '@'."""
    prefix = spec.key[: spec.key.index("{")].rstrip(":")
    return f"{prefix}:current" if prefix else "current"


def version_of(partition: str, run_id: str) -> str:
    tag = re.sub(r"[^A-Za-z0-9]", "", run_id)[:12]
    if not tag:
        raise ValueError(f"run id {run_id!r} has no letter or digit to tag a version with")
    return f"{partition}~{tag}"


def row_key(spec: RedisSinkSpec, key_values: Mapping[str, Any]) -> str:
    """A row's key without its version, e.g. `churn:42`; values formatted as they are stored."""
    parts = _FIELD.split(spec.key)
    return "".join(_scalar(key_values[part]) if i % 2 else part for i, part in enumerate(parts))


def load_partition(
    spec: RedisSinkSpec,
    url: str,
    batches: Iterable[pa.RecordBatch],
    *,
    pipeline: str,
    partition: str,
    run_id: str,
    connect_timeout: float = 10,
    socket_timeout: float = 60,
    retire_after_seconds: float = RETIRE_AFTER_SECONDS,
) -> RedisLoad:
    """Write `batches` as this run's version of `partition`, then switch the pointer to it.

    Streams: `spec.batch_rows` rows per pipelined round trip, one Arrow batch in memory.
    Re-running with the same run id rewrites the same keys and ends with the same pointer.
    A bad row (a missing column, a null key value) raises ValueError; Redis failures raise
    RedisSinkError. Either way the pointer is left as it was."""
    where = f"redis sink of pipeline {pipeline!r}, partition {partition}"
    version = version_of(partition, run_id)
    pointer = pointer_key(spec)
    safe_url, secrets = _redacted(url)
    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            # A blip is retried in place (HSET/EXPIRE are idempotent); an outage fails soon and
            # is left to the step's own retries.
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.25), retries=2),
        )
    except ValueError as err:
        raise ValueError(f"{where}: bad URL {safe_url}: {_scrub(str(err), secrets)}") from None
    stage = "writing the rows"
    try:
        keys = _write(client, spec, batches, version, where)
        stage = "switching the pointer"
        switched, previous = _switch(client, pointer, version, partition)
        retired = 0
        if switched and previous and previous != version:
            stage = f"retiring the previous version {previous} (readers already see {version})"
            retired = _retire(client, spec, previous, retire_after_seconds)
        return RedisLoad(keys, version, pointer, previous, switched, retired)
    except redis.RedisError as err:
        problem = _scrub(_describe(err, socket_timeout), secrets)
        if stage.startswith("retiring"):
            after = f"Its keys live until their TTL ({spec.ttl_hours:g} h)"
        elif stage.startswith("switching"):  # the script may have run before the reply was lost
            after = (
                f"The pointer {pointer} names the version readers saw before or already {version}; "
                "a retry of this run ends with it naming this run's version"
            )
        else:
            after = (
                f"The pointer {pointer} was not switched (readers still see the version they "
                f"saw before); a retry of this run rewrites its keys ({_glob(spec, version)})"
            )
        raise RedisSinkError(
            f"{where}, at {safe_url}: {problem}, while {stage}. {after}, and the warehouse "
            "table is untouched.",
            retryable=not isinstance(err, redis.AuthenticationError),
        ) from err
    finally:
        client.close()


def read_row(
    client: redis.Redis,
    spec: RedisSinkSpec,
    key_values: Mapping[str, Any],
    version: str | None = None,
) -> dict[str, str] | None:
    """A row as readers get it: through the pointer (or from one `version`), None if absent.

    Values are the stored strings ('' for a null)."""
    key = row_key(spec, key_values)
    if version is None:
        flat = client.register_script(_READ)(keys=[pointer_key(spec)], args=[key])
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
    else:
        raw = client.hgetall(f"{key}@{version}")
    if not raw:
        return None
    return {_text(k): _text(v) for k, v in raw.items()}


def _write(
    client: redis.Redis,
    spec: RedisSinkSpec,
    batches: Iterable[pa.RecordBatch],
    version: str,
    where: str,
) -> int:
    ttl = max(1, math.ceil(spec.ttl_hours * 3600))
    parts = _FIELD.split(spec.key)
    pipe = client.pipeline(transaction=False)
    queued = written = 0
    for batch in batches:
        missing = [c for c in (*spec.key_columns, *spec.fields) if c not in batch.schema.names]
        if missing:
            raise ValueError(f"{where}: the rows have no column {', '.join(missing)}")
        fields = [(f, _strings(batch.column(f))) for f in spec.fields]
        for i, key in enumerate(_keys(batch, parts, where)):
            name = f"{key}@{version}"
            pipe.hset(name, mapping={f: values[i] for f, values in fields})
            pipe.expire(name, ttl)
            queued += 1
            if queued == spec.batch_rows:
                pipe.execute()
                written, queued = written + queued, 0
    if queued:
        pipe.execute()
    return written + queued


def _keys(batch: pa.RecordBatch, parts: list[str], where: str) -> Iterator[str]:
    columns = {}
    for name in parts[1::2]:
        column = batch.column(name)
        if column.null_count:
            raise ValueError(f"{where}: the key column {name} has {column.null_count} nulls")
        columns[name] = _strings(column)
    for i in range(batch.num_rows):
        yield "".join(columns[p][i] if j % 2 else p for j, p in enumerate(parts))


def _switch(
    client: redis.Redis, pointer: str, version: str, partition: str
) -> tuple[bool, str | None]:
    switched, previous = client.register_script(_SWITCH)(keys=[pointer], args=[version, partition])
    return bool(switched), _text(previous) or None


def _retire(client: redis.Redis, spec: RedisSinkSpec, version: str, seconds: float) -> int:
    """EXPIRE the keys of `version` to `seconds`, found by SCAN (incremental, never blocking)."""
    grace = max(1, math.ceil(seconds))
    pipe = client.pipeline(transaction=False)
    queued = retired = 0
    for name in client.scan_iter(match=_glob(spec, version), count=SCAN_COUNT):
        pipe.expire(name, grace)
        queued += 1
        if queued == spec.batch_rows:
            retired += sum(map(bool, pipe.execute()))
            queued = 0
    if queued:
        retired += sum(map(bool, pipe.execute()))
    return retired


def _glob(spec: RedisSinkSpec, version: str) -> str:
    """The SCAN MATCH pattern of one version's keys: `churn:*@2026-10-15~3f2a9c1d4e5b`."""
    parts = _FIELD.split(spec.key)
    literal = "".join("*" if i % 2 else _escape(p) for i, p in enumerate(parts))
    return f"{literal}@{_escape(version)}"


def _escape(text: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _strings(column: pa.Array | pa.ChunkedArray) -> list[str]:
    """A column's values as stored: see the module docstring."""
    t = column.type
    if pa.types.is_floating(t) and t != pa.float64():
        # str of a numpy float32 is its own shortest repr ('0.1'), not the widened double's.
        nulls = column.is_null().to_pylist()
        values = column.to_numpy(zero_copy_only=False)
        return ["" if null else str(v) for null, v in zip(nulls, values, strict=True)]
    return ["" if v is None else _scalar(v) for v in column.to_pylist()]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if hasattr(value, "isoformat"):  # date, datetime, time, pandas.Timestamp
        return str(value.isoformat())
    return str(value)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _redacted(url: str) -> tuple[str, Sequence[str]]:
    """The URL with its password masked, and the forms of the password to scrub from text."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>", ()
    if not password:
        return url, ()
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl(), (password, urllib.parse.unquote(password))


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _describe(err: redis.RedisError, socket_timeout: float) -> str:
    first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, redis.AuthenticationError):
        return f"authentication failed, check the password in the URL ({first_line})"
    if isinstance(err, redis.TimeoutError):
        return f"no answer within {socket_timeout:g}s ({first_line})"
    if isinstance(err, redis.ConnectionError):
        return f"cannot reach Redis ({first_line})"
    # A pipeline's error names the command with its arguments (row data): keep the reply only.
    reply = first_line.split(" caused error: ")[-1][:300]
    if isinstance(err, redis.exceptions.OutOfMemoryError):
        return (
            f"Redis is out of memory ({reply}): free memory, raise maxmemory or shorten "
            "ttl_hours (a load holds two versions of the day until it switches)"
        )
    return f"Redis refused a command: {reply}"
