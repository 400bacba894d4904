from pathlib import Path

import pytest
import yaml

from batch_inference_assets import SpecError, load_spec, load_specs
from dagster_defs.definitions import PIPELINES_DIR
from tests.conftest import churn_yaml, write_pipeline


def _write(tmp_path: Path, raw: dict, sql: str | None = None) -> Path:
    if sql is not None:
        (tmp_path / "q.sql").write_text(sql)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def raw_churn() -> dict:
    return churn_yaml()


def test_the_demo_pipelines_load() -> None:
    specs = {s.name: s for s in load_specs(PIPELINES_DIR)}
    assert specs["churn"].model.kind == "lightgbm_binary"
    assert specs["demand"].model.kind == "lightgbm_regression"
    assert specs["demand"].features.id_columns == ["store_id", "item_id"]
    training = specs["demand"].training
    assert training is not None and ":window_start" in training.sql and not training.sql_file
    spec = specs["churn"]
    assert spec.features.id_columns == ["customer_id"]
    assert ":partition_date" in spec.features.sql
    assert spec.output_contract.names[:3] == ["customer_id", "score", "label"]
    assert "CREATE TABLE IF NOT EXISTS" in spec.output_contract.create_table_sql("t", "duckdb")


def test_wrong_output_column_type_names_file_and_field(tmp_path: Path, raw_churn: dict) -> None:
    raw_churn["output"]["columns"][1]["type"] = "string"
    path = _write(tmp_path, raw_churn)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert "output" in str(err.value) and "'score' must be float64" in str(err.value)


def test_unknown_sql_parameter_fails_at_load(tmp_path: Path, raw_churn: dict) -> None:
    path = _write(
        tmp_path,
        {**raw_churn, "features": {**raw_churn["features"], "sql_file": "q.sql"}},
        sql="SELECT * FROM {schema}.t WHERE d = :partition_dte",
    )
    with pytest.raises(SpecError, match=r"features: .*:partition_dte"):
        load_spec(path)


def test_missing_sql_file_fails_at_load(tmp_path: Path, raw_churn: dict) -> None:
    raw_churn["features"]["sql_file"] = "nope.sql"
    with pytest.raises(SpecError, match=r"features.sql_file: cannot read"):
        load_spec(_write(tmp_path, raw_churn))


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"name": "churn-v2"}, "name"),
        ({"output": {"table": "x; drop", "columns": []}}, "output"),
        ({"sharding": {"target_rows": None, "target_mb": None}}, "sharding"),
        ({"checks": {"psi_warn": 0.5, "psi_error": 0.2}}, "checks"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, raw_churn: dict, patch: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec(_write(tmp_path, {**raw_churn, **patch}))
    assert f"  {field}" in str(err.value)


def test_undeclared_output_column_is_rejected(tmp_path: Path, raw_churn: dict) -> None:
    raw_churn["output"]["columns"].append({"name": "tenure", "type": "int64"})
    with pytest.raises(SpecError, match="'tenure' is not produced by lightgbm_binary scoring"):
        load_spec(_write(tmp_path, raw_churn))


def test_a_defs_yaml_error_names_file_field_and_line(tmp_path: Path, raw_churn: dict) -> None:
    raw_churn["output"]["columns"][1]["type"] = "string"
    raw_churn["sharding"]["max_parallel"] = 0
    path = write_pipeline(tmp_path, raw_churn)
    lines = path.read_text().splitlines()
    max_parallel = next(i for i, s in enumerate(lines, 1) if "max_parallel:" in s)
    output = next(i for i, s in enumerate(lines, 1) if s.strip() == "output:")
    columns = next(i for i, s in enumerate(lines, 1) if s.strip() == "columns:" and i > output)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message
    assert (
        f"  sharding.max_parallel: Input should be greater than or equal to 1 (line {max_parallel})"
        in message
    )
    # A rule across fields (the columns must fit the model's kind) points at the columns.
    raw_churn["sharding"]["max_parallel"] = 2
    with pytest.raises(
        SpecError, match=rf"  output.columns: .*'score' must be float64.*\(line {columns}\)"
    ):
        load_spec(write_pipeline(tmp_path, raw_churn))


def test_an_end_date_before_the_start_is_named(tmp_path: Path, raw_churn: dict) -> None:
    raw_churn["end_date"] = "2026-09-30"
    path = write_pipeline(tmp_path, raw_churn)
    line = next(i for i, s in enumerate(path.read_text().splitlines(), 1) if "end_date:" in s)
    with pytest.raises(
        SpecError, match=rf"  end_date: .*before start_date 2026-10-01 \(line {line}\)"
    ):
        load_spec(path)


REDIS = {"url": "redis://127.0.0.1:6379/0", "key": "churn:{customer_id}", "fields": ["score"]}
KAFKA = {"bootstrap_servers": "127.0.0.1:9092", "topic": "churn", "key": "customer_id"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"output": {"passthrough": ["tenure"]}},
            "output.passthrough.0: Value error, 'tenure' is not declared in output.columns",
        ),
        ({"output": {"passthrough": ["score"]}}, "'score' is already in every row"),
        ({"sinks": [{"redis": {**REDIS, "fields": ["nope"]}}]}, "['nope'] are not output columns"),
        ({"sinks": [{"redis": {**REDIS, "key": "churn"}}]}, "names no column"),
        ({"sinks": [{"redis": {**REDIS, "url_env": "REDIS_URL"}}]}, "give url or url_env"),
        ({"sinks": [{"redis": REDIS, "kafka": KAFKA}]}, "give exactly one of redis or kafka"),
        ({"sinks": [{"kafka": KAFKA}, {"kafka": KAFKA}]}, "sinks.1: Value error, a second kafka"),
        ({"sinks": [{"kafka": {**KAFKA, "topic": "a b"}}]}, "topic 'a b'"),
    ],
)
def test_passthrough_and_sinks_are_checked_at_load(
    tmp_path: Path, raw_churn: dict, patch: dict, message: str
) -> None:
    for section, value in patch.items():
        if isinstance(value, dict):
            raw_churn[section] = {**raw_churn[section], **value}
        else:
            raw_churn[section] = value
    with pytest.raises(SpecError) as err:
        load_spec(_write(tmp_path, raw_churn))
    assert message in str(err.value)


def test_declared_passthrough_columns_and_sinks_load(tmp_path: Path, raw_churn: dict) -> None:
    raw_churn["output"]["columns"].append({"name": "tenure", "type": "float64"})
    raw_churn["output"]["passthrough"] = ["region", "tenure"]
    raw_churn["sinks"] = [{"redis": {**REDIS, "fields": ["score", "tenure"]}}, {"kafka": KAFKA}]
    spec = load_spec(_write(tmp_path, raw_churn))
    assert "tenure" in spec.output_contract.names
    assert "tenure" not in spec.model_output_columns
    assert [s.kind for s in spec.sinks] == ["redis", "kafka"]


@pytest.mark.parametrize("threshold", ["max_rmse", "min_accuracy"])
def test_a_labels_threshold_the_models_kind_is_not_measured_by_fails_at_load(
    tmp_path: Path, raw_churn: dict, threshold: str
) -> None:
    """A binary model's realized performance has no RMSE or accuracy: such a bound could only
    ever read "n/a", weeks later, once the labels land."""
    raw_churn["labels"][threshold] = 0.5
    path = _write(tmp_path, raw_churn)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert f"labels.{threshold}" in str(err.value)
    assert f"lightgbm_binary models have no {threshold[4:]} to bound" in str(err.value)


def test_the_labels_thresholds_of_the_models_kind_load(tmp_path: Path, raw_churn: dict) -> None:
    raw_churn["labels"].update(min_auc=0.7, max_log_loss=0.5, max_calibration_error=0.1)
    labels = load_spec(_write(tmp_path, raw_churn)).labels
    assert labels is not None and (labels.min_auc, labels.max_log_loss) == (0.7, 0.5)
