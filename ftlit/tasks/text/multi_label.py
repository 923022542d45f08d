"""Multi-label classification data: one text or a text pair per row, any number of labels.

Labels come either as one column holding each row's label list (``["sports", "politics"]``; a string is split at
``label_separator``, so CSV files work too), or as several 0/1 columns, one per label (``label_columns``), the layout
of GoEmotions or the Jigsaw toxic-comment data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property
from typing import Any, Literal

import datasets
import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MultilabelAUROC,
    MultilabelAveragePrecision,
    MultilabelExactMatch,
    MultilabelF1Score,
)
from torchmetrics.wrappers import ClasswiseWrapper
from transformers import AutoModelForSequenceClassification, PretrainedConfig
from typing_extensions import override

from ftlit.core.labels import column_error, label_set, sort_names, unknown_labels, warn_near_duplicates
from ftlit.core.module import FineTuneModule
from ftlit.errors import ConfigError
from ftlit.tasks.text.data import TargetEncoder, TextDataModule
from ftlit.tasks.text.evaluation import describe_multi_label, multi_label_details
from ftlit.tasks.text.long_text import PooledWindows


def _label_lists(feature: Any, separator: str) -> Callable[[Any], list[str] | None]:
    """A function from a cell of the label column to its label names (``None`` when the cell is no label list).

    Text cells are split at ``separator``, and an empty one (a blank CSV cell reads as ``None``) means no label;
    ``Sequence(ClassLabel)`` ids become their names.
    """
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return lambda value: [name.strip() for name in (value or "").split(separator) if name.strip()]
    inner = getattr(feature, "feature", None)
    # A Hub list of ClassLabel ids (GoEmotions): the ids' names are the labels.
    name = inner.int2str if isinstance(inner, datasets.ClassLabel) else str
    return lambda value: [name(v) for v in value] if isinstance(value, list) else None


class MultiLabelDataModule(TextDataModule):
    """Text (or text-pair) tagging with any number of labels per row (topics, emotions, toxicity types)."""

    def __init__(
        self,
        label_column: str = "labels",
        label_columns: list[str] | None = None,
        labels: list[str] | None = None,
        label_separator: str = ",",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            label_column: Column holding each row's labels: a list of names, or one string split at
                ``label_separator``; an empty list means no label applies.
            label_columns: Instead of ``label_column``: one 0/1 column per label, named after the label.
            labels: Label names in id order; by default ``label_columns``, or every label seen in train, sorted.
            label_separator: Separator of labels written in one string (``sports,politics``).
            **kwargs: Text columns and shared data options: see ``TextDataModule`` and ``TaskDataModule``.
        """
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if label_columns is not None and labels is not None and list(labels) != list(label_columns):
            raise ConfigError("data.labels", "with label_columns the labels are the column names: drop data.labels")
        if label_columns is not None and len(set(label_columns)) != len(label_columns):
            raise ConfigError("data.label_columns", f"columns listed twice: {label_columns}")
        if label_columns is not None:
            self.check_target_columns("label_columns", list(label_columns))
        else:
            self.check_target_columns("label_column", [label_column])
        self.label_column = label_column
        self.label_columns = label_columns
        self.given_labels = labels
        self.label_separator = label_separator

    @cached_property
    def label_names(self) -> list[str]:
        """Label names in id order: given, the 0/1 column names, a ClassLabel's names, or every label seen in train,
        sorted."""
        if self.label_columns is not None:
            return list(self.label_columns)

        def discover(train: datasets.Dataset) -> list[str]:
            if self.label_column not in train.column_names:
                raise column_error("data.label_column", self.label_column, "train", train)
            inner = getattr(train.features[self.label_column], "feature", None)
            if isinstance(inner, datasets.ClassLabel):
                return list(inner.names)  # the dataset's own id order, as its card documents it
            to_names = _label_lists(train.features[self.label_column], self.label_separator)
            names = sort_names(n for v in train[self.label_column] for n in to_names(v) or [])
            warn_near_duplicates("data.label_column", names)
            return names

        return label_set(self.given_labels, self.raw, discover, "data.label_column")[0]

    def check_targets(self, split: str, ds: datasets.Dataset) -> None:
        if self.label_columns is not None:
            for column in self.label_columns:
                if column not in ds.column_names:
                    raise column_error("data.label_columns", column, split, ds)
                bad = next((i for i, v in enumerate(ds[column]) if v not in (0, 1)), None)
                if bad is not None:
                    raise ConfigError(
                        "data.label_columns",
                        f"row {bad} of the {split} split has {ds[column][bad]!r} in '{column}': give 0 or 1",
                    )
            return
        if self.label_column not in ds.column_names:
            raise column_error("data.label_column", self.label_column, split, ds)
        to_names = _label_lists(ds.features[self.label_column], self.label_separator)
        for row, value in enumerate(ds[self.label_column]):
            names = to_names(value)
            if names is None:
                raise ConfigError(
                    "data.label_column", f"row {row} of the {split} split has {value!r}: give a list of labels"
                )
            error = unknown_labels(split, names, self.label_names, self.given_labels is not None, row=row)
            if error is not None:
                raise error

    def target_fields(self) -> dict[str, Any]:
        return {
            "label": self.label_column,
            "columns": self.label_columns,
            "labels": self.label_names,
            "separator": self.label_separator,
        }

    def target_encoder(self, ds: datasets.Dataset) -> TargetEncoder:
        # Multi-hot float vectors: what BCE-with-logits (and transformers' multi-label head) expects.
        names, columns, column = self.label_names, self.label_columns, self.label_column
        if columns is not None:
            return lambda batch: [[float(v) for v in row] for row in zip(*(batch[c] for c in columns), strict=True)]
        index = {name: i for i, name in enumerate(names)}
        to_names = _label_lists(ds.features[column], self.label_separator)

        def encode(batch: dict[str, list]) -> list[list[float]]:
            rows = []
            for value in batch[column]:
                hot = [0.0] * len(names)
                for name in to_names(value):
                    hot[index[name]] = 1.0
                rows.append(hot)
            return rows

        return encode


class MultiLabelClassifier(PooledWindows, FineTuneModule):
    """Any number of labels per text or text pair (topics, emotions, toxicity types): a sigmoid per label."""

    auto_class = AutoModelForSequenceClassification
    distill_kind = "sigmoid"
    data_class = MultiLabelDataModule
    predict_settings = ("threshold",)

    def __init__(self, *args: Any, threshold: float = 0.5, pos_weight: list[float] | None = None, **kwargs: Any):
        """
        Args:
            threshold: A label is predicted when its probability is at least this (metrics and predictions).
            pos_weight: Weight of the positive examples of each label in the loss (in label order); above 1 favours
                recall on rare labels, as ``BCEWithLogitsLoss(pos_weight=...)``.
            *args: Shared model options: see ``FineTuneModule``.
            **kwargs: Shared model options: see ``FineTuneModule``.
        """
        if not 0.0 < threshold < 1.0:
            raise ConfigError("model.threshold", f"must be in (0, 1), got {threshold}")
        super().__init__(*args, **kwargs)
        if pos_weight is not None and len(pos_weight) != len(self.label_names):
            raise ConfigError("model.pos_weight", f"{len(pos_weight)} weights for {len(self.label_names)} labels")
        if pos_weight is not None and not all(w > 0 and math.isfinite(w) for w in pos_weight):
            raise ConfigError("model.pos_weight", f"weights must be finite and > 0, got {pos_weight}")
        self.register_buffer("pos_weight", None if pos_weight is None else torch.tensor(pos_weight), persistent=False)

    def configure_backbone(self, config: PretrainedConfig) -> PretrainedConfig:
        config = self.configure_labels(super().configure_backbone(config))
        # transformers' text-classification pipeline then applies a sigmoid per label, as this model does.
        config.problem_type = "multi_label_classification"
        return config

    def build_metrics(self, stage: Literal["val", "test"]) -> MetricCollection:
        """Micro and macro F1 and exact-match (subset) accuracy; test adds ``f1_<label>`` per label (validation
        reports the averages, which checkpointing monitors)."""
        per_label = stage == "test"
        n, threshold = len(self.label_names), self.hparams.threshold
        common = {"num_labels": n, "threshold": threshold, "validate_args": False}
        curves = {"num_labels": n, "validate_args": False}
        metrics: dict[str, Any] = {
            "f1_micro": MultilabelF1Score(average="micro", **common),
            "f1_macro": MultilabelF1Score(average="macro", **common),
            "exact_match": MultilabelExactMatch(**common),
            "auroc": MultilabelAUROC(average="macro", **curves),
            "ap": MultilabelAveragePrecision(average="macro", **curves),
        }
        if per_label:
            names = list(self.label_names)
            metrics |= {
                "f1_per_label": ClasswiseWrapper(MultilabelF1Score(average=None, **common), names, prefix="f1_"),
                "auroc_per_label": ClasswiseWrapper(MultilabelAUROC(average=None, **curves), names, prefix="auroc_"),
                "ap_per_label": ClasswiseWrapper(
                    MultilabelAveragePrecision(average=None, **curves), names, prefix="ap_"
                ),
            }
        return MetricCollection(metrics)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), batch["labels"].float(), pos_weight=self.pos_weight)

    def update_metrics(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], metrics: MetricCollection) -> None:
        metrics.update(logits.float().sigmoid(), batch["labels"].long())

    @override
    def build_test_details(self) -> dict[str, Metric]:
        return multi_label_details(len(self.label_names), self.hparams.threshold)

    @override
    def describe_test_details(self, values: dict[str, Any]) -> dict[str, Any]:
        return describe_multi_label(list(self.label_names), values)

    @override
    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[dict[str, Any]]:
        """Each row's predicted labels (probability at least ``threshold``) and every label's probability."""
        names, threshold = self.label_names, self.hparams.threshold
        rows = [dict(zip(names, probs, strict=True)) for probs in self(batch).float().sigmoid().tolist()]
        return [{"labels": [n for n, p in row.items() if p >= threshold], "probs": row} for row in rows]
