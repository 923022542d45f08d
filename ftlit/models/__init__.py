"""Task models: pick one in YAML by class path, e.g. ``model: class_path: ftlit.models.SequenceClassifier``."""

from ftlit.models.base import FineTuneModule
from ftlit.models.multi_label import MultiLabelClassifier
from ftlit.models.question_answering import QuestionAnswering
from ftlit.models.regression import SequenceRegressor
from ftlit.models.sequence_classification import SequenceClassifier
from ftlit.models.token_classification import TokenClassifier

__all__ = [
    "FineTuneModule",
    "MultiLabelClassifier",
    "QuestionAnswering",
    "SequenceRegressor",
    "SequenceClassifier",
    "TokenClassifier",
]
