"""Failures that name the pipeline, the partition and the cause, as every failure here must."""

import dagster as dg


class PipelineFailure(dg.Failure):
    """Not retried by default: bad input or a bad model fails the same way every time."""

    def __init__(
        self, pipeline: str, partition: str, stage: str, cause: str, retryable: bool = False
    ) -> None:
        self.pipeline = pipeline
        self.partition = partition
        self.cause = cause
        super().__init__(
            description=f"pipeline {pipeline!r}, partition {partition}, {stage}: {cause}",
            metadata={"pipeline": pipeline, "partition": partition, "stage": stage},
            allow_retries=retryable,
        )
