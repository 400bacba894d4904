"""Destinations of the published rows beyond the warehouse: a Redis online store, a Kafka topic.

Pure library code (no Dagster import): each takes the published partition as Arrow batches.
"""


class SinkError(RuntimeError):
    """A sink could not take a partition's rows; the warehouse table stays as published."""
