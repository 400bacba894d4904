"""PipelineSpec: one pipeline = a feature query + a model + an output table, validated at load."""

import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails

from batch_inference_assets.contracts import Column, ColumnType, Contract, validate_identifier
from batch_inference_assets.sql import SqlTemplate, check_one_select

PARTITION_COLUMN = "partition_date"
SCORE_COLUMN = "score"
LABEL_COLUMN = "label"

# Columns every scored row carries besides the ids, with the only type each may have.
SYSTEM_OUTPUT_COLUMNS: dict[str, ColumnType] = {
    SCORE_COLUMN: "float64",
    "model_version": "string",
    "scored_at": "timestamp",
    "run_id": "string",
    PARTITION_COLUMN: "date",
}
ModelKind = Literal["lightgbm_binary", "lightgbm_multiclass", "lightgbm_regression", "python"]
PROB_PREFIX = "prob_"
# The metrics a model's realized performance has: a python predict_fn's score is measured as
# a regression.
MetricKind = Literal["binary", "multiclass", "regression"]


def metric_kind(model_kind: str) -> MetricKind:
    if model_kind == "lightgbm_binary":
        return "binary"
    if model_kind == "lightgbm_multiclass":
        return "multiclass"
    return "regression"


# Each labels threshold: (the metric it bounds, the kind that has that metric, True when the
# metric must be at least the bound).
LABEL_THRESHOLDS: dict[str, tuple[str, MetricKind, bool]] = {
    "min_auc": ("auc", "binary", True),
    "max_log_loss": ("log_loss", "binary", False),
    "max_calibration_error": ("calibration_error", "binary", False),
    "min_accuracy": ("accuracy", "multiclass", True),
    "max_rmse": ("rmse", "regression", False),
    "max_mae": ("mae", "regression", False),
}
# The label column's type by kind; regression has none, a python model declares its own.
LABEL_TYPES: dict[str, ColumnType] = {
    "lightgbm_binary": "int64",
    "lightgbm_multiclass": "string",
}


def _at(loc: tuple[str | int, ...], message: str) -> InitErrorDetails:
    """A rule across fields, reported at the field it is about (so with that field's line)."""
    return InitErrorDetails(
        type="value_error", loc=loc, input=None, ctx={"error": ValueError(message)}
    )


class SpecError(ValueError):
    """A pipeline spec that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SqlSource(_Strict):
    """SQL in a file beside the YAML (`sql_file`, read when the pipeline loads) or inline."""

    sql_file: str | None = Field(
        default=None, description="A SQL file, relative to the YAML file (or give `sql`)."
    )
    sql: str = Field(default="", description="The SQL inline, instead of sql_file.")

    @field_validator("sql")
    @classmethod
    def _sql_is_one_select(cls, v: str) -> str:
        return _one_select(v)


def _one_select(sql: str) -> str:
    """Reported at the `sql` field (a sql_file's text is checked once read: resolve_sql_files);
    an empty one is left to the rule that asks for sql or sql_file."""
    if sql.strip():
        check_one_select(sql)
    return sql


class FeatureQuery(_SqlSource):
    """The feature SQL returns the id columns and the features; {schema} is the warehouse's
    feature schema; :partition_date, :partition_start, :partition_end and each ctx key are
    bound values."""

    id_columns: list[str] = Field(min_length=1, description="The key of a row: [customer_id].")
    ctx: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra bound values for the SQL, by name."
    )

    @field_validator("id_columns")
    @classmethod
    def _ids_are_identifiers(cls, v: list[str]) -> list[str]:
        for name in v:
            validate_identifier(name, "id column")
        return v

    @model_validator(mode="after")
    def _template_is_valid(self) -> "FeatureQuery":
        _one_of_sql_or_file(self.sql, self.sql_file)
        if self.sql:  # a sql_file is checked once it is read (resolve_sql_files)
            SqlTemplate.parse(self.sql).check_parameters(set(self.ctx))
        return self


def _one_of_sql_or_file(sql: str, sql_file: str | None) -> None:
    if bool(sql) == bool(sql_file):
        raise ValueError("give sql or sql_file")


MODEL_VERSION = re.compile(r"[0-9a-f]{16}")
_MODEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The same rules in the JSON schema, so `dg check yaml` and editors flag them too.
_NAME_SCHEMA: dict[str, Any] = {"pattern": f"^{_MODEL_NAME.pattern}$"}
_REF_SCHEMA: dict[str, Any] = {"pattern": f"^({MODEL_VERSION.pattern}|{_MODEL_NAME.pattern})$"}


def valid_model_name(value: str, what: str) -> str:
    """A model's name or alias: a plain identifier, as the model store makes it a file name."""
    if not _MODEL_NAME.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a plain identifier "
            "(letters, digits and underscores, not starting with a digit)"
        )
    return value


def valid_model_ref(value: str) -> str:
    """An alias or a version (16 hex digits)."""
    if MODEL_VERSION.fullmatch(value) or _MODEL_NAME.fullmatch(value):
        return value
    raise ValueError(
        f"model ref {value!r} is neither an alias (a plain identifier: letters, digits and "
        "underscores, not starting with a digit) nor a version (16 hex digits)"
    )


class ModelSpec(_Strict):
    name: str = Field(
        description="The model's name in the model store.", json_schema_extra=_NAME_SCHEMA
    )
    ref: str = Field(
        default="champion",
        description="An alias (e.g. champion) or a version.",
        json_schema_extra=_REF_SCHEMA,
    )
    kind: ModelKind = Field(
        default="lightgbm_binary",
        description="Must match the stored model's kind; python: a registered predict_fn.",
    )
    label_threshold: float = Field(default=0.5, gt=0, lt=1)
    predictor: Literal["auto", "compiled", "lightgbm"] = Field(
        default="auto",
        description="compiled: compile the model once (lleaves) and score with it; auto: use a "
        "compiled object when one is cached beside the model; lightgbm: never. A compiled "
        "predictor is always verified against LightGBM first.",
    )
    predict_threads: int = Field(default=0, ge=0, description="0: all cores.")

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, v: str) -> str:
        return valid_model_name(v, "model name")

    @field_validator("ref")
    @classmethod
    def _ref_is_alias_or_version(cls, v: str) -> str:
        return valid_model_ref(v)

    @model_validator(mode="after")
    def _compiled_fits_the_kind(self) -> "ModelSpec":
        if self.predictor == "compiled" and self.kind in ("lightgbm_multiclass", "python"):
            raise ValueError(f"predictor: compiled is not available for {self.kind} models")
        return self

    @property
    def is_classifier(self) -> bool:
        return self.kind in LABEL_TYPES


class OutputColumn(_Strict):
    name: str
    type: ColumnType
    nullable: bool = True
    description: str = ""


class OutputTable(_Strict):
    table: str
    passthrough: list[str] = Field(
        default_factory=list,
        description="Input columns of the feature query copied into the table beside the "
        "scores, each declared in `columns` with its type; every partition's export is held to "
        "those types before scoring (the blocking check features_match_model).",
    )
    mode: Literal["replace_partition", "append", "incremental"] = Field(
        default="replace_partition",
        description="replace_partition: the partition is replaced atomically; incremental: "
        "score only ids not yet in the table for the partition, then append them.",
    )
    columns: list[OutputColumn] = Field(min_length=1)

    @field_validator("table")
    @classmethod
    def _table_is_identifier(cls, v: str) -> str:
        return validate_identifier(v, "output table")


_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
_MEMORY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")


class StepResources(_Strict):
    """What one shard step needs, in Kubernetes quantities; executors that place steps on
    machines (pods) use it, the others ignore it. Memory is both the request and the limit."""

    cpu: str = Field(default="1", description="e.g. 1, 1.5 or 500m")
    memory: str = Field(default="1536Mi", description="e.g. 1536Mi or 2Gi")

    @field_validator("cpu")
    @classmethod
    def _cpu_is_a_quantity(cls, v: str) -> str:
        if not _CPU.match(v):
            raise ValueError(f"{v!r} is not a CPU quantity such as 1, 1.5 or 500m")
        return v

    @field_validator("memory")
    @classmethod
    def _memory_is_a_quantity(cls, v: str) -> str:
        if not _MEMORY.match(v):
            raise ValueError(f"{v!r} is not a memory quantity such as 1536Mi or 2Gi")
        return v


class Sharding(_Strict):
    target_rows: int | None = Field(default=500_000, gt=0)
    target_mb: float | None = Field(default=128.0, gt=0)
    max_parallel: int = Field(default=8, ge=1, le=1024)
    batch_rows: int = Field(default=65_536, ge=1024)
    batch_bytes: int = Field(
        default=64 * 2**20,
        ge=2**20,
        description="The most bytes one scoring batch may hold in memory (its id and feature "
        "columns as Arrow), besides batch_rows: wide rows or long strings make batches of fewer "
        "rows. A single row wider than this fails its shard, naming the row's size; raise it "
        "above that. Default 64 MiB (67108864).",
    )
    step_resources: StepResources = StepResources()

    @model_validator(mode="after")
    def _has_a_target(self) -> "Sharding":
        if self.target_rows is None and self.target_mb is None:
            raise ValueError("set target_rows, target_mb or both")
        return self


class Bounds(_Strict):
    min: float = 0.0
    max: float = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> "Bounds":
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class CheckThresholds(_Strict):
    max_null_rate: float = Field(
        default=0.5, ge=0, le=1, description="Warn above this share of missing (null or NaN)."
    )
    null_rate_overrides: dict[str, float] = Field(default_factory=dict)
    blocking_null_rate: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="A feature missing (null or NaN) in at least this share of the rows stops "
        "the run; 1.0: only a feature missing from every row.",
    )
    blocking_null_rate_overrides: dict[str, float] = Field(default_factory=dict)
    positive_rate: Bounds = Bounds(min=0.0, max=1.0)
    mean_confidence: Bounds = Bounds(min=0.5, max=1.0)
    mean_score: Bounds | None = Field(
        default=None, description="Bounds on the partition's mean score (any kind), warn only."
    )
    psi_warn: float = Field(default=0.1, gt=0)
    psi_error: float = Field(default=0.25, gt=0)

    @model_validator(mode="after")
    def _psi_ordered(self) -> "CheckThresholds":
        if self.psi_warn > self.psi_error:
            raise ValueError("psi_warn must not exceed psi_error")
        return self


class ScheduleSpec(_Strict):
    """Score `days_back` days before each tick (default: yesterday, at 02:00 UTC)."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    days_back: int = Field(default=1, ge=0)
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron_is_valid(cls, v: str) -> str:
        return valid_cron(v)


def valid_cron(v: str) -> str:
    import dagster as dg

    try:
        dg.ScheduleDefinition(name="validate", cron_schedule=v, job_name="validate")
    except Exception as err:  # Dagster raises its own invariant errors for bad crons
        raise ValueError(f"invalid cron {v!r}: {err}") from err
    return v


class RetrainSchedule(_Strict):
    """Retrain on a cron: each tick trains on the window ending on the tick's day."""

    cron: str = "0 4 * * 1"
    timezone: str = "UTC"
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron_is_valid(cls, v: str) -> str:
        return valid_cron(v)


class LandingSpec(_Strict):
    """When a day's source data has landed: `sql` returns its row count for :partition_date."""

    sql: str
    min_rows: int = Field(default=1, ge=1)
    lookback_days: int = Field(default=7, ge=1, le=366)
    interval_seconds: int = Field(default=300, ge=10)
    enabled: bool = True

    @field_validator("sql")
    @classmethod
    def _sql_is_one_select(cls, v: str) -> str:
        return _one_select(v)

    @model_validator(mode="after")
    def _template_is_valid(self) -> "LandingSpec":
        SqlTemplate.parse(self.sql).check_parameters(set())
        return self


class RetrySpec(_Strict):
    max_retries: int = Field(default=3, ge=0, le=20)
    delay_seconds: float = Field(default=5.0, ge=0)


class TimeoutSpec(_Strict):
    shard_seconds: float = Field(default=1800.0, gt=0)
    run_seconds: int = Field(default=6 * 3600, gt=0)


class LimitSpec(_Strict):
    max_rows: int | None = Field(default=None, gt=0, description="Fail before scoring above.")


class AlertSpec(_Strict):
    on_success: bool = Field(
        default=False,
        description="Also post a summary of each published partition (rows, model version, "
        "positive rate or mean score, mean confidence, duration, cost, link).",
    )


class ExplainSpec(_Strict):
    """Reason codes: each explained row's `top_k` largest feature contributions (LightGBM's own
    TreeSHAP, `pred_contrib=True`), as columns reason_<i> (the feature) and
    reason_<i>_contribution (its contribution to the raw score, in log-odds for binary models),
    plus reason_rest_contribution (the bias and every other feature): for each row the
    contributions sum to the model's raw margin."""

    top_k: int = Field(default=3, ge=1, le=20, description="Reasons per row.")
    rows: Literal["all", "top_k", "sample"] = Field(
        default="all",
        description="all: every row; top_k: the `row_count` highest-scoring rows of each shard "
        "(so every row of the partition's top `row_count`); sample: a deterministic sample of "
        "`sample_rate` of the rows (by id). Rows not explained have null reasons and pay nothing.",
    )
    row_count: int = Field(default=1_000, ge=1, description="For rows: top_k.")
    sample_rate: float = Field(default=0.01, gt=0, le=1, description="For rows: sample.")


class DriftSpec(_Strict):
    """Drift beyond PSI against training and the previous day: per segment, with a report."""

    segment_by: list[str] = Field(
        default_factory=list,
        description="Columns (each also in output.passthrough) whose values split every drift "
        "metric by segment, e.g. [region].",
    )
    max_segments: int = Field(
        default=50, ge=1, le=1000, description="Segments beyond this many are pooled as other."
    )
    report: bool = Field(
        default=True,
        description="Write each partition's HTML report (reference vs current histograms of "
        "the score and the most drifted features) to the object store, linked from the metadata.",
    )


class LabelsSpec(_SqlSource):
    """Late labels: the SQL returns the id columns, `label` and `label_date` (the partition the
    label belongs to) for :partition_date. `<p>/realized_performance` scores each partition's
    published predictions against them once `delay_days` have passed and they have landed."""

    delay_days: int = Field(default=30, ge=0, description="How long labels take to land.")
    min_rows: int = Field(
        default=1, ge=1, description="A day's labels have landed once this many exist."
    )
    lookback_days: int = Field(
        default=14,
        ge=1,
        le=366,
        description="The labels sensor looks at the lookback_days days ending delay_days ago.",
    )
    interval_seconds: int = Field(default=3600, ge=10)
    enabled: bool = True
    min_auc: float | None = Field(default=None, ge=0, le=1, description="Check: AUC at least.")
    max_log_loss: float | None = Field(default=None, gt=0)
    max_calibration_error: float | None = Field(default=None, gt=0, le=1)
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    max_rmse: float | None = Field(default=None, gt=0)
    max_mae: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _template_is_valid(self) -> "LabelsSpec":
        _one_of_sql_or_file(self.sql, self.sql_file)
        if self.sql:
            SqlTemplate.parse(self.sql).check_parameters(set())
        return self


_KEY_FIELD = re.compile(r"\{([^{}]*)\}")


class RedisSinkSpec(_Strict):
    """Each published partition's rows as Redis hashes, for online serving. Every load writes a
    new key space (its own version) and then switches one pointer key, so readers see the old
    day or the new one, never half of one."""

    url: str = Field(
        default="",
        description="redis://[:password@]host:port/db (or rediss://); or give url_env.",
    )
    url_env: str | None = Field(
        default=None,
        description="The environment variable holding the URL, read when the asset runs "
        "(keeps a password out of the YAML).",
    )
    key: str = Field(
        description='A row\'s key, a template over output columns: "churn:{customer_id}". '
        "Stored as <key>@<version>; the pointer `<key prefix>:current` names the version to read."
    )
    fields: list[str] = Field(min_length=1, description="Output columns stored in each hash.")
    ttl_hours: float = Field(default=48, gt=0, description="How long a loaded version's keys live.")
    batch_rows: int = Field(
        default=5_000, ge=1, le=1_000_000, description="Rows per pipelined round trip."
    )

    @model_validator(mode="after")
    def _one_url(self) -> "RedisSinkSpec":
        if bool(self.url) == bool(self.url_env):
            raise ValueError("give url or url_env")
        if not _KEY_FIELD.findall(self.key):
            raise ValueError(f"key {self.key!r} names no column: write e.g. 'churn:{{id}}'")
        return self

    @property
    def key_columns(self) -> list[str]:
        return _KEY_FIELD.findall(self.key)


class KafkaSinkSpec(_Strict):
    """Each published partition's rows produced to a Kafka topic (idempotent producer, keyed
    by id, headers carrying pipeline, partition, model version and run id)."""

    bootstrap_servers: str = Field(description="host:port[,host:port...]")
    topic: str
    key: str = Field(description="The output column whose value keys each message.")
    settings: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Further librdkafka producer settings (security.protocol, ...).",
    )
    settings_env: dict[str, str] = Field(
        default_factory=dict,
        description="Producer settings read from environment variables when the asset runs, "
        "by setting: {sasl.password: KAFKA_PASSWORD}.",
    )
    flush_seconds: float = Field(
        default=300, gt=0, description="How long to wait for the partition's deliveries."
    )

    @field_validator("topic")
    @classmethod
    def _topic_is_legal(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v):
            raise ValueError(f"topic {v!r}: letters, digits, '.', '_' and '-' only")
        return v


class SinkSpec(_Strict):
    """One destination of the published rows: give exactly one of redis or kafka."""

    redis: RedisSinkSpec | None = None
    kafka: KafkaSinkSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "SinkSpec":
        if (self.redis is None) == (self.kafka is None):
            raise ValueError("give exactly one of redis or kafka")
        return self

    @property
    def kind(self) -> Literal["redis", "kafka"]:
        return "redis" if self.redis is not None else "kafka"

    def columns(self) -> list[str]:
        """The output columns this sink reads."""
        if self.redis is not None:
            return [*self.redis.key_columns, *self.redis.fields]
        assert self.kafka is not None
        return [self.kafka.key]


class TrainingSpec(_SqlSource):
    """The candidate model: LightGBM trained on a labelled window, promoted by a gate. The SQL
    returns labelled rows (the model's features, `label` and a `date_column`) between
    :window_start and :window_end (dates, end exclusive)."""

    label: str = "label"
    date_column: str = "snapshot_date"
    window_days: int = Field(default=60, ge=2)
    holdout_days: int = Field(default=7, ge=1)
    num_boost_round: int = Field(default=100, ge=1)
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)
    metric: Literal["auc", "accuracy", "logloss", "rmse", "mae"] = Field(
        description="The holdout metric the promotion gate compares."
    )
    threshold: float = Field(
        description="The metric must be at least this (auc, accuracy) or at most (logloss, "
        "rmse, mae) to be promoted."
    )
    tolerance: float = Field(
        default=0.0, ge=0, description="How much worse than the champion, on the same holdout."
    )
    promote_alias: str = Field(default="champion", json_schema_extra=_NAME_SCHEMA)
    shadow_days: int = Field(
        default=0,
        ge=0,
        description="Promote a candidate only after it has been scored in the champion's "
        "shadow (challengers) on this many days with the same rows; until then the gate points "
        "challenger_alias at it. Training is deterministic, so the training run for the same "
        "window gives the same version and promotes it once it has the days.",
    )
    challenger_alias: str = Field(default="challenger", json_schema_extra=_NAME_SCHEMA)
    schedule: RetrainSchedule | None = None

    @field_validator("promote_alias")
    @classmethod
    def _alias_is_identifier(cls, v: str) -> str:
        return valid_model_name(v, "promote_alias")

    @field_validator("challenger_alias")
    @classmethod
    def _challenger_alias_is_identifier(cls, v: str) -> str:
        return valid_model_name(v, "challenger_alias")

    @model_validator(mode="after")
    def _template_is_valid(self) -> "TrainingSpec":
        _one_of_sql_or_file(self.sql, self.sql_file)
        params = SqlTemplate.parse(self.sql).params if self.sql else []
        unknown = set(params) - {"window_start", "window_end"}
        if unknown:
            raise ValueError(f"training sql: unknown parameters {sorted(unknown)}")
        if self.holdout_days >= self.window_days:
            raise ValueError("holdout_days must be less than window_days")
        return self


class TopK(_Strict):
    k: int = Field(gt=0)
    by: str = SCORE_COLUMN
    descending: bool = True


class ExportSpec(_Strict):
    """Files of each published partition beside the table, in the object store."""

    formats: list[Literal["parquet", "csv"]] = Field(default_factory=list)
    top_k: TopK | None = None


class PipelineSpec(_Strict):
    """One pipeline: a SQL feature query + a model + an output table, scored daily. The
    attributes of a BatchInferencePipeline's defs.yaml."""

    name: str = Field(description="Asset keys <name>/..., group <name>, job <name>_daily.")
    description: str = ""
    owner: str = ""
    start_date: date = Field(description="The first daily partition, YYYY-MM-DD (quoted).")
    end_date: date | None = Field(
        default=None,
        description="The last daily partition, inclusive (quoted); default: none, the "
        "partitions run up to yesterday. Set it when the source data stops.",
    )
    timezone: str = Field(default="UTC", description="Of the daily partitions.")
    features: FeatureQuery = Field(description="The feature query and the ids of a row.")
    model: ModelSpec = Field(description="Which model scores, by name and alias or version.")
    output: OutputTable = Field(description="The published table and its columns (its DDL).")
    sharding: Sharding = Field(default=Sharding(), description="How a day is cut into steps.")
    checks: CheckThresholds = Field(default=CheckThresholds(), description="Check thresholds.")
    schedule: ScheduleSpec = Field(default=ScheduleSpec(), description="The daily schedule.")
    landing: LandingSpec | None = Field(
        default=None, description="A sensor that requests a day once its source rows exist."
    )
    retries: RetrySpec = Field(default=RetrySpec(), description="Of each shard step.")
    timeouts: TimeoutSpec = Field(default=TimeoutSpec(), description="Per shard and per run.")
    limits: LimitSpec = Field(default=LimitSpec(), description="Refuse oversized partitions.")
    training: TrainingSpec | None = Field(
        default=None, description="Train candidates and promote them through a gate."
    )
    exports: ExportSpec = Field(default=ExportSpec(), description="Files beside the table.")
    alerts: AlertSpec = Field(default=AlertSpec(), description="Alerts beyond failures.")
    explain: ExplainSpec | None = Field(
        default=None, description="Reason codes per row (binary and regression LightGBM models)."
    )
    drift: DriftSpec = Field(default=DriftSpec(), description="Segments and the drift report.")
    labels: LabelsSpec | None = Field(
        default=None, description="Late labels: realized performance once they land."
    )
    challengers: list[str] = Field(
        default_factory=list,
        description="Models (aliases or versions of the same model name) scored on exactly the "
        "champion's rows by the same shard steps, published to <table>_shadow and compared in "
        "<name>/challenger_comparison.",
        json_schema_extra={"items": _REF_SCHEMA},
    )
    sinks: list[SinkSpec] = Field(
        default_factory=list,
        description="Where each published partition also goes: a Redis online store, a Kafka "
        "topic (asset <name>/redis_sink, <name>/kafka_sink; one of each at most).",
    )

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, v: str) -> str:
        return validate_identifier(v, "pipeline name")

    @model_validator(mode="after")
    def _end_after_start(self) -> "PipelineSpec":
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [_at(("end_date",), f"{self.end_date} is before start_date {self.start_date}")],
            )
        return self

    def past_end(self, day: date) -> bool:
        """Whether `day` is past the pipeline's last partition."""
        return self.end_date is not None and day > self.end_date

    @model_validator(mode="after")
    def _output_columns_are_complete(self) -> "PipelineSpec":
        kind = self.model.kind
        declared = {c.name: c for c in self.output.columns}
        problems: list[str] = []
        for name, typ in SYSTEM_OUTPUT_COLUMNS.items():
            if name not in declared:
                problems.append(f"missing column {name!r} ({typ})")
            elif declared[name].type != typ:
                problems.append(f"column {name!r} must be {typ}, not {declared[name].type}")
        for name in self.features.id_columns:
            if name not in declared:
                problems.append(f"missing id column {name!r}")
        for name, col in declared.items():
            if name in SYSTEM_OUTPUT_COLUMNS or name in self.features.id_columns:
                continue
            if name in self.output.passthrough:
                continue
            if kind == "python":
                continue  # produced by predict_fn, checked against it batch by batch
            if name == LABEL_COLUMN:
                if kind not in LABEL_TYPES:
                    problems.append(f"column {name!r}: {kind} models have no label")
                elif col.type != LABEL_TYPES[kind]:
                    problems.append(
                        f"column {name!r} must be {LABEL_TYPES[kind]} for {kind}, not {col.type}"
                    )
            elif name.startswith(PROB_PREFIX) and kind == "lightgbm_multiclass":
                if col.type != "float64":
                    problems.append(f"column {name!r} must be float64, not {col.type}")
            else:
                problems.append(f"column {name!r} is not produced by {kind} scoring")
        errors = [_at(("output", "columns"), "; ".join(problems))] if problems else []
        errors += self._passthrough_problems(declared)
        errors += self._sink_problems(declared)
        errors += self._section_problems()
        if self.exports.top_k and self.exports.top_k.by not in declared:
            by = self.exports.top_k.by
            errors.append(_at(("exports", "top_k", "by"), f"{by!r} is not an output column"))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def _passthrough_problems(self, declared: dict[str, OutputColumn]) -> list[InitErrorDetails]:
        errors = []
        seen: set[str] = set()
        for i, name in enumerate(self.output.passthrough):
            where = ("output", "passthrough", i)
            if name in seen:
                errors.append(_at(where, f"{name!r} is listed twice"))
            elif name in SYSTEM_OUTPUT_COLUMNS or name in self.features.id_columns:
                errors.append(_at(where, f"{name!r} is already in every row; list input columns"))
            elif name == LABEL_COLUMN or name.startswith(PROB_PREFIX):
                errors.append(_at(where, f"{name!r} is a model output's name"))
            elif name not in declared:
                errors.append(
                    _at(where, f"{name!r} is not declared in output.columns: give its type there")
                )
            seen.add(name)
        return errors

    def _section_problems(self) -> list[InitErrorDetails]:
        errors = []
        for i, name in enumerate(self.drift.segment_by):
            if name not in self.output.passthrough:
                errors.append(
                    _at(("drift", "segment_by", i), f"{name!r} is not in output.passthrough")
                )
        if self.explain is not None and self.model.kind not in (
            "lightgbm_binary",
            "lightgbm_regression",
        ):
            errors.append(_at(("explain",), f"not available for {self.model.kind} models"))
        for i, ref in enumerate(self.challengers):
            try:
                valid_model_ref(ref)
            except ValueError as err:
                errors.append(_at(("challengers", i), str(err)))
            if ref == self.model.ref:
                errors.append(_at(("challengers", i), f"{ref!r} is the model.ref itself"))
        if self.challengers and self.model.kind == "python":
            errors.append(_at(("challengers",), "not available for python models"))
        training = self.training
        if training and training.shadow_days and training.challenger_alias not in self.challengers:
            errors.append(
                _at(
                    ("training", "shadow_days"),
                    f"needs challengers to list {training.challenger_alias!r}, so the daily "
                    "runs score the candidate in the shadow",
                )
            )
        measured = metric_kind(self.model.kind)
        for name, (metric, kind, _) in LABEL_THRESHOLDS.items():
            if self.labels and getattr(self.labels, name) is not None and kind != measured:
                errors.append(
                    _at(
                        ("labels", name),
                        f"{self.model.kind} models have no {metric} to bound "
                        f"({name} is for {kind} models)",
                    )
                )
        if self.challengers and self.output.mode != "replace_partition":
            errors.append(
                _at(("challengers",), "need output.mode replace_partition (every row, each day)")
            )
        return errors

    def _sink_problems(self, declared: dict[str, OutputColumn]) -> list[InitErrorDetails]:
        errors = []
        kinds: list[str] = []
        for i, sink in enumerate(self.sinks):
            if sink.kind in kinds:
                errors.append(_at(("sinks", i), f"a second {sink.kind} sink: give one of each"))
            kinds.append(sink.kind)
            unknown = [c for c in sink.columns() if c not in declared]
            if unknown:
                errors.append(_at(("sinks", i, sink.kind), f"{unknown} are not output columns"))
        return errors

    @property
    def model_output_columns(self) -> list[str]:
        """Declared columns the model produces: score and the kind's own (label, prob_*)."""
        system = set(SYSTEM_OUTPUT_COLUMNS) - {SCORE_COLUMN}
        return [
            c.name
            for c in self.output.columns
            if c.name not in system
            and c.name not in self.features.id_columns
            and c.name not in self.output.passthrough
        ]

    @property
    def output_contract(self) -> Contract:
        """The table's columns: those declared in `output.columns`, then the reason columns
        when `explain` is set."""
        declared = [Column(c.name, c.type, c.nullable, c.description) for c in self.output.columns]
        return Contract.of([*declared, *self.reason_columns])

    @property
    def reason_columns(self) -> list[Column]:
        if self.explain is None:
            return []
        out = []
        for i in range(1, self.explain.top_k + 1):
            out += [
                Column(f"reason_{i}", "string", True, f"The feature with the no. {i} contribution"),
                Column(f"reason_{i}_contribution", "float64", True, f"reason_{i}'s contribution"),
            ]
        rest = "The bias and every other feature's contribution: the row's contributions sum to "
        return [*out, Column("reason_rest_contribution", "float64", True, rest + "its raw score")]


COMPONENT_TYPE = "batch_inference_assets.BatchInferencePipeline"
SQL_SECTIONS = ("features", "training", "labels")


def yaml_line(path: Path, field: Sequence[str | int]) -> int | None:
    """The 1-based line of `field` (a key path) in a YAML file: of its key, or of the deepest
    part of the path that exists."""
    try:
        node: Any = yaml.compose(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in field:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if k.value == part]
            if not found:
                break
            key, node = found[0]
            line = key.start_mark.line + 1
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _problem(source: Path | None, prefix: Sequence[str], loc: Sequence[str | int], msg: str) -> str:
    field = ".".join(str(p) for p in loc) or "(top level)"
    line = yaml_line(source, [*prefix, *loc]) if source is not None else None
    return f"  {field}: {msg}" + (f" (line {line})" if line else "")


def _format_validation_error(
    err: ValidationError, source: Path | None, prefix: Sequence[str]
) -> str:
    return "\n".join(_problem(source, prefix, e["loc"], e["msg"]) for e in err.errors())


def parse_spec(
    raw: dict[str, Any], source: str | Path = "<inline>", prefix: Sequence[str] = ()
) -> PipelineSpec:
    """Validate a raw mapping into a PipelineSpec; errors name `source`, the field and its line
    (`prefix` is where the mapping sits in the file, e.g. `attributes` in a defs.yaml)."""
    path = Path(source) if source != "<inline>" else None
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(
            f"invalid pipeline spec {source}:\n{_format_validation_error(err, path, prefix)}"
        ) from err


def resolve_sql_files(spec: PipelineSpec, source: Path, prefix: Sequence[str] = ()) -> PipelineSpec:
    """Read each `sql_file` (relative to the YAML file `source`) into `sql`, then validate the
    whole spec again so the SQL's parameters are checked like inline SQL."""
    raw = spec.model_dump(mode="json", exclude_unset=True)
    for section in SQL_SECTIONS:
        body = raw.get(section)
        if not isinstance(body, dict) or not body.get("sql_file"):
            continue
        sql_path = source.parent / str(body["sql_file"])
        try:
            raw[section] = {**body, "sql": sql_path.read_text(), "sql_file": None}
        except OSError as err:
            problem = _problem(
                source, prefix, [section, "sql_file"], f"cannot read {sql_path}: {err}"
            )
            raise SpecError(f"invalid pipeline spec {source}:\n{problem}") from err
    return parse_spec(raw, source, prefix)


def load_spec(path: str | Path) -> PipelineSpec:
    """Load one pipeline: a component's `defs.yaml` (its `attributes`) or a bare spec YAML.
    `sql_file`s are read relative to the YAML file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"cannot read pipeline spec {path}: {err}") from err
    if not isinstance(raw, dict):
        raise SpecError(f"invalid pipeline spec {path}: expected a mapping at the top level")
    prefix: tuple[str, ...] = ()
    if "attributes" in raw and "type" in raw:
        if raw["type"] != COMPONENT_TYPE:
            raise SpecError(f"invalid pipeline spec {path}: type must be {COMPONENT_TYPE}")
        raw, prefix = raw["attributes"], ("attributes",)
        if not isinstance(raw, dict):
            raise SpecError(f"invalid pipeline spec {path}: expected a mapping of attributes")
    return resolve_sql_files(parse_spec(raw, path, prefix), path, prefix)


def spec_files(folder: str | Path) -> list[Path]:
    """Every pipeline under a defs folder: `<folder>/**/defs.yaml` of our component type."""
    return [p for p in sorted(Path(folder).rglob("defs.yaml")) if COMPONENT_TYPE in p.read_text()]


def check_unique_names(specs: Sequence[PipelineSpec], where: str | Path) -> None:
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"pipeline names are not unique in {where}: {dupes}")


def load_specs(folder: str | Path) -> list[PipelineSpec]:
    specs = [load_spec(p) for p in spec_files(folder)]
    check_unique_names(specs, folder)
    return specs
