"""Old module path of PredictionWriter: see ``ftlit.core.callbacks``."""

from ftlit.core.callbacks import PredictionWriter

__all__ = ["PredictionWriter"]
