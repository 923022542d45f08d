"""Callbacks ftlit adds to Lightning's."""

from ftlit.callbacks.predictions import PredictionWriter

__all__ = ["PredictionWriter"]
