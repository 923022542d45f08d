"""The task models under their old class paths (``ftlit.models.SequenceClassifier``): they live in ``ftlit.tasks``.

Kept so that the class paths of older configs and code keep working;
ftlit itself never imports it.
"""

from ftlit.core.module import FineTuneModule
from ftlit.tasks.ner import TokenClassifier
from ftlit.tasks.qa import QuestionAnswering
from ftlit.tasks.text import MultiLabelClassifier, SequenceClassifier, SequenceRegressor

__all__ = [
    "FineTuneModule",
    "MultiLabelClassifier",
    "QuestionAnswering",
    "SequenceClassifier",
    "SequenceRegressor",
    "TokenClassifier",
]
