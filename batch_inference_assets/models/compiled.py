"""Opt-in compiled tree predictor (lleaves): compiled once per model version, cached beside the
model in the store, verified against LightGBM on a sample before use, else LightGBM is used."""

import os
import platform
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from upath import UPath

from batch_inference_assets.models.lightgbm_model import LightGBMPredictor
from batch_inference_assets.records import ModelHandle

TOLERANCE = 1e-9
VERIFY_ROWS = 2_000
KINDS = ("lightgbm_binary", "lightgbm_regression")  # one output per row


def _toolchain() -> str:
    import llvmlite

    return f"lleaves-{platform.machine()}-llvmlite{llvmlite.__version__}"


def cache_path(handle: ModelHandle) -> str:
    """Where the compiled object for `handle` lives: next to its model file."""
    return handle.uri.rsplit("/", 1)[0] + f"/compiled/{_toolchain()}.o"


def _local_copy(path: UPath, folder: Path) -> Path:
    local = folder / path.name
    if path.protocol in ("", "file", "local"):
        return Path(path.path)
    path.fs.get_file(path.path, str(local))
    return local


def ensure_compiled(model_file: UPath, cache: UPath) -> bool:
    """Compile `model_file` into `cache` unless it is there already; True if it compiled now."""
    if cache.exists():
        return False
    import lleaves

    work = Path(tempfile.mkdtemp(prefix="bi-compile-"))
    try:
        local_model = _local_copy(model_file, work)
        target = work / "model.o"
        lleaves.Model(model_file=str(local_model)).compile(cache=str(target))
        cache.parent.mkdir(parents=True, exist_ok=True)
        if cache.protocol in ("", "file", "local"):
            # Write beside the target, then rename: concurrent runs never see half a file.
            tmp = Path(cache.path).with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(target, tmp)
            os.replace(tmp, cache.path)
        else:
            cache.fs.put_file(str(target), cache.path)
        return True
    finally:
        shutil.rmtree(work, ignore_errors=True)


class CompiledPredictor:
    """lleaves for speed; checked against LightGBM on the first batch it sees."""

    def __init__(
        self, model_file: UPath, cache: UPath, reference: LightGBMPredictor, threads: int = 0
    ) -> None:
        import lleaves

        self._work = Path(tempfile.mkdtemp(prefix="bi-compiled-"))
        local_model = _local_copy(model_file, self._work)
        local_cache = _local_copy(cache, self._work)
        self.model = lleaves.Model(model_file=str(local_model))
        self.model.compile(cache=str(local_cache))
        self.reference = reference
        self.threads = threads or os.cpu_count() or 1
        self.verified: bool | None = None
        self.kind = "lleaves"

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.verified is None:
            self._verify(x[:VERIFY_ROWS])
        if not self.verified:
            return self.reference.predict(x)
        return np.asarray(self.model.predict(x, n_jobs=self.threads), dtype=np.float64)

    def _verify(self, sample: np.ndarray) -> None:
        ours = np.asarray(self.model.predict(sample, n_jobs=1), dtype=np.float64)
        theirs = self.reference.predict(sample)
        diff = float(np.max(np.abs(ours - theirs))) if len(sample) else 0.0
        self.verified = diff <= TOLERANCE
        self.max_difference = diff
        if not self.verified:
            self.kind = "lightgbm (compiled predictor rejected)"
            warnings.warn(
                f"compiled predictor differs from LightGBM by {diff:.3g} (> {TOLERANCE}) on "
                f"{len(sample)} rows; scoring with LightGBM instead",
                stacklevel=2,
            )
