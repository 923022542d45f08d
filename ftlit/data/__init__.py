"""The task data modules under their old class paths (``ftlit.data.ClassificationDataModule``): they live in
``ftlit.tasks``.
Kept so that the class paths of older configs and code keep working;
ftlit itself never imports it.
"""

from ftlit.core.datamodule import TaskDataModule
from ftlit.tasks.ner import TokenClassificationDataModule
from ftlit.tasks.qa import QuestionAnsweringDataModule
from ftlit.tasks.text import ClassificationDataModule, MultiLabelDataModule, RegressionDataModule, TextDataModule

__all__ = [
    "ClassificationDataModule",
    "MultiLabelDataModule",
    "QuestionAnsweringDataModule",
    "RegressionDataModule",
    "TaskDataModule",
    "TextDataModule",
    "TokenClassificationDataModule",
]
