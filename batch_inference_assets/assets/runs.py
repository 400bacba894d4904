"""`run_identity`: every run of a pipeline, however it was launched, carries the pipeline's
identity: its `pipeline` tag, its run timeout (`dagster/max_runtime`, enforced by run
monitoring) and, for runs executed in the CLI's own process, this code location as its origin,
so that the UI can re-execute them."""

from collections.abc import Mapping, Sequence

import dagster as dg
from dagster._core.definitions.repository_definition.valid_definitions import (
    SINGLETON_REPOSITORY_NAME,
)
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

from batch_inference_assets.assets.alerts import run_pipelines

MAX_RUNTIME = "dagster/max_runtime"


def identity_tags(run: dg.DagsterRun, pipeline: str, run_seconds: int) -> dict[str, str]:
    """The tags a run of `pipeline` lacks: the UI's asset runs (`__ASSET_JOB`) and the CLI's
    carry neither; our jobs' runs carry both, and a tag set at launch is kept."""
    wanted = {"pipeline": pipeline, MAX_RUNTIME: str(run_seconds)}
    return {k: v for k, v in wanted.items() if k not in run.tags}


def location_origin(run: dg.DagsterRun, location_name: str) -> RemoteJobOrigin:
    """This code location as the run's origin: what re-execution looks the job up by."""
    return RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin(location_name),
            repository_name=SINGLETON_REPOSITORY_NAME,
        ),
        job_name=run.job_name,
    )


def build_run_identity_sensor(
    run_seconds: Mapping[str, int], location_name: str
) -> dg.SensorDefinition:
    """`run_seconds`: each pipeline's `timeouts.run_seconds`.

    `dagster asset materialize` and `dg launch` execute in the CLI's process: their runs have
    no code-location origin, and the UI's re-execution needs one. Dagster's own
    `dagster run migrate-repository` rewrites a run's origin the same way (`replace_job_origin`).
    """

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.STARTED,
        name="run_identity",
        monitor_all_code_locations=True,
        minimum_interval_seconds=5,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Tags every started pipeline run with its pipeline and run timeout, and "
        "gives CLI runs this code location as their origin so the UI can re-execute them.",
    )
    def sensor(context: dg.RunStatusSensorContext) -> dg.SkipReason | None:
        run = context.dagster_run
        ours = run_pipelines(run, [], list(run_seconds))
        if len(ours) != 1:
            return dg.SkipReason(f"run {run.run_id} is not one of our pipelines' runs")
        instance = context.instance
        tags = identity_tags(run, ours[0], run_seconds[ours[0]])
        if tags:
            instance.add_run_tags(run.run_id, tags)
        repository = context.repository_def
        # Only a job this location has (`__ASSET_JOB`, `<p>_daily`): not `dg.materialize`'s
        # ephemeral job, which nothing could re-execute.
        if run.remote_job_origin is None and repository and repository.has_job(run.job_name):
            current = instance.get_run_by_id(run.run_id)  # with the tags just added
            if current is not None and current.remote_job_origin is None:
                instance.run_storage.replace_job_origin(
                    current, location_origin(current, location_name)
                )
        return None

    return sensor


def build_pool_sensor(pools: Sequence[str]) -> dg.SensorDefinition:
    """Registers each pipeline's pool at the instance's default limit before its first run.

    The run queue only limits pools it already knows: when several runs of a pool it has never
    seen are queued together (a first backfill), it registers the pool in that pass and
    dequeues them all. A limit set with `dagster instance concurrency set` is never changed."""

    @dg.sensor(
        name="pipeline_pools",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Registers each pipeline's concurrency pool so its run limit holds from "
        "the first run on.",
    )
    def sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        storage = context.instance.event_log_storage
        missing = sorted(set(pools) - storage.get_concurrency_keys())
        for name in missing:
            storage.initialize_concurrency_limit_to_default(name)
        return dg.SkipReason(f"registered {missing}" if missing else "every pool is registered")

    return sensor
