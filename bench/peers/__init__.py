"""Other engines doing bench/baseline.py's job (Parquet -> LightGBM -> Parquet), for `make bench`.

Each is run as `python -m bench.peers.<name> --input DIR --model model.txt --output DIR`, prints
`{"rows": ..., "seconds": ...}` as its last stdout line, and exits 3 when its engine is not
installed (`make bench-peers` installs them).
"""

import argparse
from pathlib import Path


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--input", type=Path, required=True, help="a folder of *.parquet")
    p.add_argument("--model", type=Path, required=True, help="a LightGBM model.txt")
    p.add_argument("--output", type=Path, required=True, help="the folder to write")
    return p.parse_args()


def feature_names(model: Path) -> list[str]:
    """The model's feature names from model.txt's header, without loading the booster."""
    with model.open() as f:
        for line in f:
            if line.startswith("feature_names="):
                return line.split("=", 1)[1].split()
    raise ValueError(f"{model} has no feature_names line")
