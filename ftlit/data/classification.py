"""Old module path of ClassificationDataModule, TextDataModule: see ``ftlit.tasks.text``."""

from ftlit.tasks.text import ClassificationDataModule, TextDataModule

__all__ = ["ClassificationDataModule", "TextDataModule"]
