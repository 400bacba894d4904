"""Opt-in compiled tree predictor (lleaves): compiled once per model version, cached beside the
model in the store with the sha256 of what was compiled, loaded only if its bytes match that hash,
then verified against LightGBM on a sample before use, else LightGBM is used."""

import hashlib
import os
import platform
import re
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
HASH_SUFFIX = ".sha256"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class UntrustedCompiledObject(ValueError):
    """A cached object that is not what we compiled: it is never loaded (it is machine code)."""


def _toolchain() -> str:
    import llvmlite

    return f"lleaves-{platform.machine()}-llvmlite{llvmlite.__version__}"


def cache_path(handle: ModelHandle) -> str:
    """Where the compiled object for `handle` lives: next to its model file."""
    return handle.uri.rsplit("/", 1)[0] + f"/compiled/{_toolchain()}.o"


def hash_path(cache: UPath) -> UPath:
    """The sidecar beside a compiled object: the sha256 of the bytes compiled for this model
    version (the object lives in the version's folder), in `sha256sum` format."""
    return cache.parent / (cache.name + HASH_SUFFIX)


def trusted_bytes(cache: UPath) -> bytes:
    """The cached object's bytes, read once, if they hash to what was recorded when it was
    compiled; raises UntrustedCompiledObject otherwise (no recorded hash included)."""
    sidecar = hash_path(cache)
    try:
        recorded = sidecar.read_text().split()[0] if sidecar.exists() else ""
    except (IndexError, UnicodeDecodeError):
        recorded = ""
    if not _SHA256.fullmatch(recorded):
        raise UntrustedCompiledObject(
            f"refusing compiled object {cache}: no hash was recorded when it was compiled "
            f"({sidecar} is missing or unreadable)"
        )
    data = cache.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != recorded:
        raise UntrustedCompiledObject(
            f"refusing compiled object {cache}: its sha256 is {actual}, not {recorded} as "
            "recorded when it was compiled"
        )
    return data


def _write(path: UPath, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.protocol in ("", "file", "local"):
        # Write beside the target, then rename: concurrent runs never see half a file.
        tmp = Path(path.path).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path.path)
    else:
        path.write_bytes(data)


def _local_copy(path: UPath, folder: Path) -> Path:
    local = folder / path.name
    if path.protocol in ("", "file", "local"):
        return Path(path.path)
    path.fs.get_file(path.path, str(local))
    return local


def ensure_compiled(model_file: UPath, cache: UPath) -> bool:
    """Compile `model_file` into `cache` and record its hash beside it, unless it is there
    already; True if it compiled now. Raises UntrustedCompiledObject for a cached object that
    does not match its recorded hash."""
    if cache.exists():
        trusted_bytes(cache)
        return False
    import lleaves

    work = Path(tempfile.mkdtemp(prefix="bi-compile-"))
    try:
        local_model = _local_copy(model_file, work)
        target = work / "model.o"
        lleaves.Model(model_file=str(local_model)).compile(cache=str(target))
        data = target.read_bytes()
        # The hash first: whoever sees the object also sees the hash it must match.
        digest = hashlib.sha256(data).hexdigest()
        _write(hash_path(cache), f"{digest}  {cache.name}\n".encode())
        _write(cache, data)
        return True
    finally:
        shutil.rmtree(work, ignore_errors=True)


class CompiledPredictor:
    """lleaves for speed: loads only an object matching the hash recorded when it was compiled
    (else raises UntrustedCompiledObject), and checks it against LightGBM on the first batch."""

    def __init__(
        self, model_file: UPath, cache: UPath, reference: LightGBMPredictor, threads: int = 0
    ) -> None:
        data = trusted_bytes(cache)
        import lleaves

        self._work = Path(tempfile.mkdtemp(prefix="bi-compiled-"))
        local_model = _local_copy(model_file, self._work)
        # lleaves loads the bytes that were hashed: a private copy, not the shared file.
        local_cache = self._work / cache.name
        local_cache.write_bytes(data)
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
