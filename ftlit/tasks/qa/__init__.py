"""Extractive question answering (SQuAD v1.1 / v2.0): windows over long contexts, a start/end head, SQuAD scores."""

from ftlit.tasks.qa.data import QuestionAnsweringDataModule
from ftlit.tasks.qa.metric import SquadMetric
from ftlit.tasks.qa.model import QuestionAnswering

__all__ = ["QuestionAnswering", "QuestionAnsweringDataModule", "SquadMetric"]
