"""Failures that name the pipeline, the partition and the cause, as every failure here must."""

import dagster as dg


class PipelineFailure(dg.Failure):
    def __init__(self, pipeline: str, partition: str, stage: str, cause: str) -> None:
        self.pipeline = pipeline
        self.partition = partition
        self.cause = cause
        super().__init__(
            description=f"pipeline {pipeline!r}, partition {partition}, {stage}: {cause}",
            metadata={"pipeline": pipeline, "partition": partition, "stage": stage},
        )
