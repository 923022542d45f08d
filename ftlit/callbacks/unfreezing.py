"""Old module path of GradualUnfreezing: see ``ftlit.core.callbacks``."""

from ftlit.core.callbacks import GradualUnfreezing

__all__ = ["GradualUnfreezing"]
