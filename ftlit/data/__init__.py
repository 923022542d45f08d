"""Task data modules: tokenization, caching and batching for each task family."""

from ftlit.data.base import TaskDataModule
from ftlit.data.classification import ClassificationDataModule
from ftlit.data.token_classification import TokenClassificationDataModule

__all__ = ["ClassificationDataModule", "TaskDataModule", "TokenClassificationDataModule"]
