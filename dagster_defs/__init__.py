"""Wiring only: resources per deployment, the pipelines declared in YAML, jobs."""
