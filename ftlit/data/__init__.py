"""Task data modules: tokenization, caching and batching for each task family."""

from ftlit.data.base import TaskDataModule
from ftlit.data.classification import ClassificationDataModule, TextDataModule
from ftlit.data.multi_label import MultiLabelDataModule
from ftlit.data.question_answering import QuestionAnsweringDataModule
from ftlit.data.regression import RegressionDataModule
from ftlit.data.token_classification import TokenClassificationDataModule

__all__ = [
    "ClassificationDataModule",
    "MultiLabelDataModule",
    "QuestionAnsweringDataModule",
    "RegressionDataModule",
    "TextDataModule",
    "TaskDataModule",
    "TokenClassificationDataModule",
]
