"""The defs folder: one sub-folder per pipeline under pipelines/, each a defs.yaml + its SQL."""
