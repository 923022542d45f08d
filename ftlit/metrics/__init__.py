"""The task metrics under their old paths (``ftlit.metrics.SpanF1``): they live in their task's folder.
Kept so that the class paths of older configs and code keep working;
ftlit itself never imports it.
"""

from ftlit.tasks.ner import SpanF1
from ftlit.tasks.qa import SquadMetric

__all__ = ["SpanF1", "SquadMetric"]
