"""Models and pipelines as config, through the real graph: promotion, every model kind,
incremental runs, exports and the notebook API."""

from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from batch_inference_assets import PipelineSpec, api, build_pipeline, load_spec
from batch_inference_assets.assets.alerts import Alerter, build_check_alert_sensor
from batch_inference_assets.assets.training import training_run_config
from batch_inference_assets.errors import PipelineFailure
from batch_inference_assets.models.lightgbm_model import train_lightgbm
from batch_inference_assets.models.store import ModelStore
from batch_inference_assets.spec import parse_spec
from dagster_defs.definitions import PIPELINES_DIR
from dagster_defs.demo.seed import FEATURES
from dagster_defs.deployments import DEMO_FEATURE_SCHEMA, DEMO_OUTPUT_SCHEMA
from tests.conftest import DAY, SEED_CUSTOMERS, check_results, failure_message, read_table
from tests.servers import webhook_recorder

pytestmark = pytest.mark.slow


def table(resources: dict[str, Any], name: str) -> pa.Table:
    return resources["warehouse"].query(f"SELECT * FROM {DEMO_OUTPUT_SCHEMA}.{name} ORDER BY ALL")


def exists(resources: dict[str, Any], name: str) -> bool:
    return resources["warehouse"].published_table(name) is not None


def with_training(spec: PipelineSpec, **changes: Any) -> PipelineSpec:
    assert spec.training is not None
    return spec.model_copy(update={"training": spec.training.model_copy(update=changes)})


def train(
    spec: PipelineSpec, resources: dict[str, Any], instance: dg.DagsterInstance | None = None
) -> dg.ExecuteInProcessResult:
    config = training_run_config(spec.name, date.fromisoformat(DAY))
    return dg.materialize(
        build_pipeline(spec).training_assets, resources=resources, run_config=config,
        instance=instance, raise_on_error=False,
    )  # fmt: skip


# --- training and promotion -------------------------------------------------------------------


def test_an_accepted_candidate_becomes_champion_and_every_row_records_it(
    churn_spec: PipelineSpec, resources: dict[str, Any], materialize: Any
) -> None:
    store: ModelStore = resources["model_store"]
    seeded = store.resolve("churn", "champion")
    spec = with_training(churn_spec, num_boost_round=60, tolerance=1.0)
    done = train(spec, resources)
    assert done.success, failure_message(done)
    assert check_results(done)[("candidate_model", "promotion_gate")]
    candidate = done.output_for_node("churn_training__candidate_model")
    assert candidate.version != seeded and candidate.champion_version == seeded
    assert store.resolve("churn", "champion") == candidate.version
    meta = store.read_meta("churn", candidate.version)
    assert meta["training_window"] == {
        "start": "2026-10-01", "holdout_start": "2026-10-11", "end": DAY,
    }  # fmt: skip
    assert meta["metrics"]["holdout_auc"] == pytest.approx(candidate.value)

    scored = materialize(DAY, spec)
    assert scored.success, failure_message(scored)
    model = scored.output_for_node("churn__model")
    assert model.version == candidate.version  # the alias, resolved at run start
    rows = read_table(resources)
    assert set(rows.column("model_version").to_pylist()) == {candidate.version}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"threshold": 0.99, "num_boost_round": 60}, "needs at least 0.99"),  # under the bar
        ({"num_boost_round": 2, "tolerance": 0.0, "threshold": 0.5}, "champion"),  # worse
    ],
)
def test_a_rejected_candidate_leaves_the_champion_and_alerts(
    churn_spec: PipelineSpec,
    resources: dict[str, Any],
    tmp_path: Path,
    changes: dict[str, Any],
    reason: str,
) -> None:
    store: ModelStore = resources["model_store"]
    seeded = store.resolve("churn", "champion")
    spec = with_training(churn_spec, **changes)
    sensor = build_check_alert_sensor([build_pipeline(spec)])
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        watching = dg.build_sensor_context(instance=instance, resources={"alerter": Alerter()})
        sensor(watching)  # the alert sensor is on before the training run
        done = train(spec, resources, instance)
        assert not done.success
        assert check_results(done)[("candidate_model", "promotion_gate")] is False
        gate = next(
            e.event_specific_data for e in done.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        )  # fmt: skip
        assert gate.severity == dg.AssetCheckSeverity.ERROR
        assert "reject" in gate.description and reason in gate.description
        assert store.resolve("churn", "champion") == seeded
        assert store.resolve("churn", "candidate") != seeded  # kept, for a look
        materialized = {
            e.asset_key.path[-1]
            for e in done.all_events
            if e.event_type_value == "ASSET_MATERIALIZATION"
        }
        assert materialized == {"candidate_model"}

        with webhook_recorder() as (url, received):
            ctx = dg.build_sensor_context(
                instance=instance, cursor=watching.cursor,
                resources={"alerter": Alerter(webhook_url=url)},
            )  # fmt: skip
            sensor(ctx)
    assert [a["check"] for a in received] == ["promotion_gate"]
    assert received[0]["severity"] == "ERROR"


# --- model kinds --------------------------------------------------------------------------------


def day_features(resources: dict[str, Any], day: str) -> pa.Table:
    return resources["warehouse"].query(
        f"SELECT * FROM {DEMO_FEATURE_SCHEMA}.customer_features WHERE snapshot_date = ?", [day]
    )


def kind_spec(churn_spec: PipelineSpec, model: dict[str, Any], table_name: str,
              extra_columns: list[dict[str, Any]], **rest: Any) -> PipelineSpec:  # fmt: skip
    # Without the demo's sections that are about a binary champion (challenger, reasons, labels).
    raw = churn_spec.model_dump(
        mode="json", exclude={"training", "exports", "explain", "challengers", "labels"}
    )
    raw["name"] = table_name.removesuffix("_predictions")
    raw["model"] = {**raw["model"], **model}
    raw["output"]["table"] = table_name
    raw["output"]["columns"] = [
        c for c in raw["output"]["columns"] if c["name"] not in ("label",)
    ] + extra_columns
    raw.update(rest)
    return parse_spec(raw)


CONTRACTS = ["month_to_month", "one_year", "two_year"]


def test_multiclass_writes_a_probability_per_class_and_the_argmax(
    churn_spec: PipelineSpec, resources: dict[str, Any], materialize: Any
) -> None:
    history = resources["warehouse"].query(
        f"SELECT * FROM {DEMO_FEATURE_SCHEMA}.customer_features WHERE snapshot_date < ?",
        [date(2026, 10, 6)],
    )
    features = [f for f in FEATURES if f != "contract"]
    trained = train_lightgbm(
        "lightgbm_multiclass", history, day_features(resources, "2026-10-06"), features,
        "contract", 40,
    )  # fmt: skip
    version = resources["model_store"].save("plan", trained)
    columns = [
        {"name": "label", "type": "string"},
        *({"name": f"prob_{c}", "type": "float64", "nullable": False} for c in CONTRACTS),
    ]
    spec = kind_spec(
        churn_spec, {"name": "plan", "kind": "lightgbm_multiclass"}, "plan_predictions", columns
    )
    done = materialize(DAY, spec)
    assert done.success, failure_message(done)
    checks = check_results(done)
    assert checks[("predictions", "scores_in_unit_interval")]
    assert ("predictions", "positive_rate_within_bounds") not in checks  # binary only
    out = table(resources, "plan_predictions")
    assert out.num_rows == SEED_CUSTOMERS
    probs = np.column_stack([out.column(f"prob_{c}").to_numpy() for c in CONTRACTS])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(out.column("score").to_numpy(), probs.max(axis=1))
    assert out.column("label").to_pylist() == [CONTRACTS[i] for i in probs.argmax(axis=1)]
    assert set(out.column("model_version").to_pylist()) == {version}

    # A declared class the model does not have: the model step says so, nothing is published.
    wrong = kind_spec(
        churn_spec, {"name": "plan", "kind": "lightgbm_multiclass"}, "plan2_predictions",
        [*columns, {"name": "prob_three_year", "type": "float64"}],
    )  # fmt: skip
    failed = materialize(DAY, wrong)
    assert not failed.success
    message = failure_message(failed)
    assert "'plan2'" in message and DAY in message and "prob_three_year" in message
    assert not exists(resources, "plan2_predictions")


def test_a_model_of_another_kind_is_refused(
    churn_spec: PipelineSpec, resources: dict[str, Any], materialize: Any
) -> None:
    spec = kind_spec(churn_spec, {"kind": "lightgbm_regression"}, "reg_predictions", [])
    failed = materialize(DAY, spec)
    assert not failed.success
    assert "declares a lightgbm_regression model but churn version" in failure_message(failed)
    assert not exists(resources, "reg_predictions")


def test_a_python_predict_fn_scores_like_calling_it(
    churn_spec: PipelineSpec, resources: dict[str, Any], materialize: Any
) -> None:
    from tests.predict_fns import churn_rule

    used = ["contract", "num_support_tickets"]
    sample = day_features(resources, "2026-10-14")
    version = resources["model_store"].register_python(
        "rule", "tests.predict_fns:churn_rule", sample, used
    )
    spec = kind_spec(
        churn_spec, {"name": "rule", "kind": "python"}, "rule_predictions",
        [{"name": "segment", "type": "string", "nullable": False}],
        checks={"mean_score": {"min": 0.0, "max": 1.0}},
    )  # fmt: skip
    done = materialize(DAY, spec)
    assert done.success, failure_message(done)
    out = table(resources, "rule_predictions").sort_by("customer_id")
    source = day_features(resources, DAY).sort_by("customer_id")
    expected = churn_rule(source.select(used).to_pandas())
    np.testing.assert_allclose(out.column("score").to_numpy(), expected["score"].to_numpy())
    assert out.column("segment").to_pylist() == expected["segment"].tolist()
    assert set(out.column("model_version").to_pylist()) == {version}
    assert ("predictions", "scores_in_unit_interval") not in check_results(done)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        ("undeclared_column", "undeclared ['extra']"),
        ("text_score", "column 'score' is object, declared double"),
        ("one_row_short", "rows for"),
    ],
)
def test_a_predict_fn_with_the_wrong_output_fails_clearly_and_publishes_nothing(
    churn_spec: PipelineSpec, resources: dict[str, Any], materialize: Any, fn: str, message: str
) -> None:
    store: ModelStore = resources["model_store"]
    # Registered with a good function first, then pointed at the bad one.
    store.register_python(
        "bad", "tests.predict_fns:churn_rule", day_features(resources, "2026-10-14"),
        ["contract", "num_support_tickets"],
    )  # fmt: skip
    from batch_inference_assets.models import kinds
    from batch_inference_assets.models.lightgbm_model import TrainedModel

    good = store.load("bad", "champion")
    text = kinds.python_model_text(f"tests.predict_fns:{fn}")
    store.save(
        "bad", TrainedModel(text, good.features, good.reference, {}, kind="python"),
    )  # fmt: skip
    spec = kind_spec(
        churn_spec, {"name": "bad", "kind": "python"}, "bad_predictions",
        [{"name": "segment", "type": "string"}],
    )  # fmt: skip
    failed = materialize(DAY, spec)
    assert not failed.success
    got = failure_message(failed)
    assert f"predict_fn tests.predict_fns:{fn}" in got and message in got
    assert "'bad'" in got and DAY in got
    assert not exists(resources, "bad_predictions")
    assert len([e for e in failed.all_events if e.is_step_failure]) >= 1


# --- the second demo pipeline (regression), exports and top K ---------------------------------


def test_the_demand_pipeline_runs_from_its_yaml_alone(resources: dict[str, Any]) -> None:
    spec = load_spec(PIPELINES_DIR / "demand" / "defs.yaml")
    pipeline = build_pipeline(spec)
    trained = dg.materialize(
        pipeline.training_assets, resources=resources, raise_on_error=False,
        run_config=training_run_config("demand", date.fromisoformat(DAY)),
    )  # fmt: skip
    assert trained.success, failure_message(trained)
    version = resources["model_store"].resolve("demand", "champion")
    assert trained.output_for_node("demand_training__candidate_model").version == version

    done = dg.materialize(
        pipeline.assets, partition_key=DAY, resources=resources, raise_on_error=False
    )
    assert done.success, failure_message(done)
    checks = check_results(done)
    assert checks[("predictions", "mean_score_within_bounds")]
    assert ("predictions", "scores_in_unit_interval") not in checks  # a regression
    out = table(resources, "demand_predictions")
    assert out.num_rows == 60 * 50
    assert set(out.column("model_version").to_pylist()) == {version}

    root = Path(resources["object_store"].root) / "demand"
    parquet = pa.concat_tables(
        pq.read_table(p) for p in sorted((root / "exports" / DAY / "parquet").glob("*.parquet"))
    )
    csv = pa.concat_tables(
        pacsv.read_csv(p) for p in sorted((root / "exports" / DAY / "csv").glob("*.csv"))
    )
    key = ["store_id", "item_id"]
    assert parquet.sort_by([(k, "ascending") for k in key]).equals(
        out.sort_by([(k, "ascending") for k in key]).cast(parquet.schema)
    )
    assert csv.num_rows == out.num_rows
    np.testing.assert_allclose(
        csv.sort_by([(k, "ascending") for k in key]).column("score").to_numpy(),
        out.sort_by([(k, "ascending") for k in key]).column("score").to_numpy(),
    )
    top = pq.read_table(next((root / "top_k" / DAY / "parquet").glob("*.parquet")))
    expected = out.sort_by([("score", "descending"), ("store_id", "ascending")]).slice(0, 100)
    assert top.num_rows == 100
    assert top.column("score").to_pylist() == expected.column("score").to_pylist()
    assert (
        pc.min(top.column("score")).as_py()
        >= pc.max(
            out.filter(pc.invert(pc.is_in(out.column("score"), top.column("score")))).column(
                "score"
            )
        ).as_py()
    )


# --- incremental mode ---------------------------------------------------------------------------


def test_incremental_scores_only_new_ids_and_reruns_are_idempotent(
    churn_spec: PipelineSpec, resources: dict[str, Any], materialize: Any
) -> None:
    spec = churn_spec.model_copy(  # challengers need every row each day: not incremental
        update={
            "output": churn_spec.output.model_copy(update={"mode": "incremental"}),
            "challengers": [],
        }
    )
    warehouse = resources["warehouse"]
    late = f"{DEMO_FEATURE_SCHEMA}.late_rows"
    with warehouse.connect() as con:  # 1,000 customers of the day land late
        con.execute(
            f"CREATE TABLE {late} AS SELECT * FROM {DEMO_FEATURE_SCHEMA}.customer_features "
            "WHERE snapshot_date = ? AND customer_id % 8 = 0", [DAY],
        )  # fmt: skip
        con.execute(
            f"DELETE FROM {DEMO_FEATURE_SCHEMA}.customer_features "
            "WHERE snapshot_date = ? AND customer_id % 8 = 0", [DAY],
        )  # fmt: skip
    first = materialize(DAY, spec)
    assert first.success, failure_message(first)
    before = read_table(resources)
    assert before.num_rows == SEED_CUSTOMERS - 1_000

    with warehouse.connect() as con:
        con.execute(f"INSERT INTO {DEMO_FEATURE_SCHEMA}.customer_features SELECT * FROM {late}")
    second = materialize(DAY, spec)
    assert second.success, failure_message(second)
    assert second.output_for_node("churn__source_features").rows == 1_000
    after = read_table(resources)
    assert after.num_rows == SEED_CUSTOMERS
    assert len(set(after.column("customer_id").to_pylist())) == SEED_CUSTOMERS
    old = after.filter(pc.is_in(after.column("customer_id"), before.column("customer_id")))
    assert old.equals(before)  # what was published stays exactly as it was
    assert set(after.column("run_id").to_pylist()) == {first.run_id, second.run_id}

    third = materialize(DAY, spec)  # nothing new: a no-op that succeeds
    assert third.success, failure_message(third)
    assert check_results(third)[("source_features", "partition_is_not_empty")]
    assert read_table(resources).equals(after)


# --- notebook API -------------------------------------------------------------------------------


def test_run_partition_is_recorded_where_the_ui_looks_and_raises_on_failure(
    churn_spec: PipelineSpec,
    resources: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    done = api.run_partition(churn_spec, DAY, resources)
    printed = capfd.readouterr()
    assert done.success
    assert len((printed.out + printed.err).splitlines()) < 30  # not Dagster's DEBUG events
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(done.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["pipeline"] == "churn" and run.tags["dagster/partition"] == DAY
    assert set(read_table(resources, "WHERE partition_date = ?", (DAY,))["run_id"].to_pylist()) == {
        done.run_id
    }

    with pytest.raises(PipelineFailure, match="pipeline 'churn', partition 2026-10-20"):
        api.run_partition(churn_spec, "2026-10-20", resources)  # a day without source rows


def test_the_notebook_api_scores_like_the_pipeline(
    churn_spec: PipelineSpec, resources: dict[str, Any], tmp_path: Path
) -> None:
    done = api.run_partition(churn_spec, DAY, resources)
    assert done.success
    published = read_table(resources).sort_by("customer_id")

    frame = day_features(resources, DAY).to_pandas()
    scored = api.score_frame(churn_spec, frame, resources["model_store"])
    scored = scored.sort_values("customer_id")
    assert list(scored.columns) == ["customer_id", "score", "label", "model_version"]
    np.testing.assert_allclose(scored["score"].to_numpy(), published.column("score").to_numpy())
    assert scored["label"].tolist() == published.column("label").to_pylist()

    source = tmp_path / "features.parquet"
    pq.write_table(day_features(resources, DAY), source, row_group_size=1_000)
    out = api.score_parquet(
        PIPELINES_DIR / "churn" / "defs.yaml",
        source,
        resources["model_store"],
        output=tmp_path / "s.pq",
    )
    written = pq.read_table(out).sort_by("customer_id")
    np.testing.assert_allclose(
        written.column("score").to_numpy(), published.column("score").to_numpy()
    )

    with pytest.raises(ValueError, match=r"pipeline 'churn'.*missing column 'tenure'"):
        api.score_frame(churn_spec, frame.drop(columns=["tenure"]), resources["model_store"])

    # The result is checked against the output contract with dagster-pandas: customer_id is
    # declared not null, so rows without one cannot come back looking scored.
    no_id = frame.astype({"customer_id": "float64"})
    no_id.loc[no_id.index[0], "customer_id"] = None
    with pytest.raises(
        ValueError,
        match=r"pipeline 'churn', model churn@\w+, scored frame: column 'customer_id' has nulls, "
        r"declared not null",
    ):
        api.score_frame(churn_spec, no_id, resources["model_store"])
    text_id = frame.astype({"customer_id": "str"})
    with pytest.raises(ValueError, match=r"column 'customer_id' is object, declared int64"):
        api.score_frame(churn_spec, text_id, resources["model_store"])
