"""Callbacks ftlit adds to Lightning's: the ones a config names, and the ones every task model always has."""

from ftlit.core.callbacks.predictions import PredictionWriter
from ftlit.core.callbacks.pruning import MagnitudePruning
from ftlit.core.callbacks.unfreezing import GradualUnfreezing

__all__ = ["GradualUnfreezing", "MagnitudePruning", "PredictionWriter"]
