"""Callbacks ftlit adds to Lightning's."""

from ftlit.callbacks.predictions import PredictionWriter
from ftlit.callbacks.unfreezing import GradualUnfreezing

__all__ = ["GradualUnfreezing", "PredictionWriter"]
