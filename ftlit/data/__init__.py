"""Task data modules: tokenization, caching and batching for each task family."""

from ftlit.data.base import TaskDataModule
from ftlit.data.classification import ClassificationDataModule

__all__ = ["ClassificationDataModule", "TaskDataModule"]
