"""Typed records passed between assets: small JSON documents that point at Parquet files."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from batch_inference_assets.contracts import Column, Contract


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureInfo(Record):
    """One model input: numeric (float64) or categorical (string, coded by `categories`)."""

    name: str
    type: Literal["float64", "string"]
    categories: list[str] = Field(default_factory=list)


class Histogram(Record):
    """Counts over `edges` (len(edges)+1 buckets) plus a final bucket for missing values."""

    edges: list[float]
    counts: list[int]


class ModelHandle(Record):
    """The exact model a partition was scored with, as resolved from the model store."""

    name: str
    version: str
    kind: str
    uri: str
    features: list[FeatureInfo]
    reference: dict[str, Histogram] = Field(
        description="Training distribution per feature and for the score ('__score__')."
    )
    label_threshold: float = 0.5
    classes: list[str] = Field(default_factory=list, description="Multiclass: in output order.")
    metrics: dict[str, float] = Field(default_factory=dict)
    challengers: list["ModelHandle"] = Field(
        default_factory=list,
        description="The spec's challengers, resolved for the same run (not part of the version).",
    )
    ref: str = Field(default="", description="The alias or version it was resolved from.")

    def feature_contract(self) -> Contract:
        return Contract.of(Column(f.name, f.type) for f in self.features)


class RowGroup(Record):
    index: int
    rows: int
    bytes: int


class ExportedFile(Record):
    path: str
    rows: int
    bytes: int
    row_groups: list[RowGroup]


class FeatureExport(Record):
    pipeline: str
    partition: str
    files: list[ExportedFile]
    rows: int
    bytes: int
    columns: dict[str, str]
    query_seconds: float


class ShardPart(Record):
    path: str
    row_groups: list[int]


class Shard(Record):
    index: int
    parts: list[ShardPart]
    rows: int
    bytes: int
    partition_rows: int = Field(default=0, description="All shards' rows, for progress.")
    rows_by_shard: list[int] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return f"shard_{self.index:05d}"


class ShardManifest(Record):
    pipeline: str
    partition: str
    shards: list[Shard]
    rows: int
    bytes: int
    export_seconds: float = 0.0


class ChallengerScore(Record):
    """One challenger's scores of a shard: the same rows as the champion's file."""

    version: str
    ref: str
    path: str
    rows: int
    score_histogram: Histogram  # over the champion's reference score edges
    positives: int = 0
    score_sum: float = 0.0


class ShardScore(Record):
    index: int
    path: str
    run_id: str = ""  # the run that scored it: every row of the file carries it
    rows: int
    seconds: float
    peak_rss_bytes: int
    positives: int
    confidence_sum: float
    score_sum: float = 0.0
    histograms: dict[str, Histogram]
    challengers: list[ChallengerScore] = Field(default_factory=list)


class ScoredShards(Record):
    pipeline: str
    partition: str
    model_version: str
    source_rows: int
    shards: list[ShardScore]
    export_seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def paths(self) -> list[str]:
        return [s.path for s in sorted(self.shards, key=lambda s: s.index)]

    @property
    def run_ids(self) -> tuple[str, ...]:
        """The runs that scored the shards (one, or two after a re-execution from failure)."""
        return tuple(sorted({s.run_id for s in self.shards if s.run_id}))

    @property
    def challenger_versions(self) -> dict[str, str]:
        """The challengers' versions and the refs they were resolved from, in spec order."""
        first = min(self.shards, key=lambda s: s.index, default=None)
        return {c.version: c.ref for c in first.challengers} if first else {}

    def challenger_paths(self) -> list[str]:
        return [c.path for s in sorted(self.shards, key=lambda s: s.index) for c in s.challengers]


class PublishedPartition(Record):
    pipeline: str
    partition: str
    table: str
    rows: int
    mode: str


class CandidateModel(Record):
    """A trained candidate and what the promotion gate compares."""

    pipeline: str
    model: str
    version: str
    kind: str
    metric: str
    value: float
    higher_is_better: bool
    threshold: float
    tolerance: float
    champion_version: str | None
    champion_value: float | None
    window_start: str
    window_end: str
    train_rows: int
    holdout_rows: int
    seconds: float


class Promotion(Record):
    model: str
    alias: str
    version: str
    previous: str | None


class ExportedPredictions(Record):
    pipeline: str
    partition: str
    files: dict[str, list[str]] = Field(description="format -> files in the object store")
    rows: int
