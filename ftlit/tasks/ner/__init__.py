"""Named-entity recognition (token classification): CoNLL/word-list data, a tag per token, entity-level F1."""

from ftlit.tasks.ner.data import TokenClassificationDataModule
from ftlit.tasks.ner.metric import SpanF1
from ftlit.tasks.ner.model import TokenClassifier

__all__ = ["SpanF1", "TokenClassificationDataModule", "TokenClassifier"]
