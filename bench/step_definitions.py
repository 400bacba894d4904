"""The forkserver's preload for the benchmark: the step preload and the bench definitions."""

import dagster_defs.step_preload
from bench.defs import BENCH

BENCH.preload()

PRELOADED = (dagster_defs.step_preload,)
