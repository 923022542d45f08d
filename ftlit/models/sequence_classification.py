"""Old module path of SequenceClassifier: see ``ftlit.tasks.text``."""

from ftlit.tasks.text import SequenceClassifier

__all__ = ["SequenceClassifier"]
