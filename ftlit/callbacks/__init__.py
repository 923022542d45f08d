"""ftlit's callbacks under their old class paths (``ftlit.callbacks.GradualUnfreezing``): they live in
``ftlit.core.callbacks``.
Kept so that the class paths of older configs and code keep working;
ftlit itself never imports it.
"""

from ftlit.core.callbacks import GradualUnfreezing, PredictionWriter

__all__ = ["GradualUnfreezing", "PredictionWriter"]
