"""Old module path of RegressionDataModule: see ``ftlit.tasks.text``."""

from ftlit.tasks.text import RegressionDataModule

__all__ = ["RegressionDataModule"]
