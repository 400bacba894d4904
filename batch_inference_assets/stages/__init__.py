"""Pure logic per stage, in flow order (features, shards, scoring, publish, drift, exports;
training beside them): no Dagster import, so tests and notebooks call them directly."""
