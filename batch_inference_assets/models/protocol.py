"""The predictor protocol scoring relies on: a float64 matrix in, one score per row out."""

from typing import Protocol

import numpy as np


class Predictor(Protocol):
    def predict(self, x: np.ndarray) -> np.ndarray: ...
