"""Arrow batch -> float64 feature matrix, the one encoding shared by training and scoring."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_inference_assets.records import FeatureInfo


def feature_matrix(data: pa.RecordBatch | pa.Table, features: list[FeatureInfo]) -> np.ndarray:
    """Numeric features as float64 (null -> NaN); categorical ones as their code (unknown -> NaN).

    The matrix is C-contiguous so LightGBM can predict on it without another copy.
    """
    out = np.empty((data.num_rows, len(features)), dtype=np.float64)
    for j, f in enumerate(features):
        col = data.column(f.name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if f.type == "string":
            col = pc.index_in(col, value_set=pa.array(f.categories, type=pa.string()))
        out[:, j] = pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    return out
