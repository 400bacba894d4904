"""The thin Dagster layer: one module per stage's assets and checks, over the pure stages."""
