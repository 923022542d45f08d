"""Metrics torchmetrics lacks: entity-level span F1 (NER) and SQuAD exact match / F1 (QA), both DDP-correct."""

from ftlit.metrics.span_f1 import SpanF1
from ftlit.metrics.squad import SquadMetric

__all__ = ["SpanF1", "SquadMetric"]
