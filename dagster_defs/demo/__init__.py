"""The demo: synthetic data and a model, generated locally and deterministically."""
