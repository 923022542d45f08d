"""Text in, one target out: single-label classification, multi-label classification and regression of a text or a
text pair. Pick a pair in YAML, e.g. ``model: class_path: ftlit.tasks.text.SequenceClassifier`` with
``data: class_path: ftlit.tasks.text.ClassificationDataModule``."""

from ftlit.tasks.text.classification import ClassificationDataModule, SequenceClassifier
from ftlit.tasks.text.data import TextDataModule
from ftlit.tasks.text.multi_label import MultiLabelClassifier, MultiLabelDataModule
from ftlit.tasks.text.regression import RegressionDataModule, SequenceRegressor

__all__ = [
    "ClassificationDataModule",
    "MultiLabelClassifier",
    "MultiLabelDataModule",
    "RegressionDataModule",
    "SequenceClassifier",
    "SequenceRegressor",
    "TextDataModule",
]
