"""Old module path of QuestionAnsweringDataModule: see ``ftlit.tasks.qa``."""

from ftlit.tasks.qa import QuestionAnsweringDataModule

__all__ = ["QuestionAnsweringDataModule"]
