"""The forkserver's preload for this code location: the step preload, plus the definitions built
once (see executors.PreloadedDefinitions)."""

import dagster_defs.step_preload
from dagster_defs.definitions import LOCATION

LOCATION.preload()

PRELOADED = (dagster_defs.step_preload,)
