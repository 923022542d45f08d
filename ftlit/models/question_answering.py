"""Old module path of QuestionAnswering: see ``ftlit.tasks.qa``."""

from ftlit.tasks.qa import QuestionAnswering

__all__ = ["QuestionAnswering"]
