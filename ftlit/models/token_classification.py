"""Old module path of TokenClassifier: see ``ftlit.tasks.ner``."""

from ftlit.tasks.ner import TokenClassifier

__all__ = ["TokenClassifier"]
