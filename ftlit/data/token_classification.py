"""Old module path of TokenClassificationDataModule: see ``ftlit.tasks.ner``."""

from ftlit.tasks.ner import TokenClassificationDataModule

__all__ = ["TokenClassificationDataModule"]
