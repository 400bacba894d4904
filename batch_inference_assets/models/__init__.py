"""Models: the feature matrix, LightGBM training and prediction, and the versioned model store."""
