"""Old module path of SequenceRegressor: see ``ftlit.tasks.text``."""

from ftlit.tasks.text import SequenceRegressor

__all__ = ["SequenceRegressor"]
