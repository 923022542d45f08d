"""Task models: pick one in YAML by class path, e.g. ``model: class_path: ftlit.models.SequenceClassifier``."""

from ftlit.models.base import FineTuneModule
from ftlit.models.sequence_classification import SequenceClassifier
from ftlit.models.token_classification import TokenClassifier

__all__ = ["FineTuneModule", "SequenceClassifier", "TokenClassifier"]
