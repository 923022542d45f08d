"""Multi-label classification: a pretrained encoder with an independent yes/no output per label."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelExactMatch, MultilabelF1Score
from transformers import AutoModelForSequenceClassification, PretrainedConfig

from ftlit.errors import ConfigError
from ftlit.models.base import FineTuneModule


class LabelF1(MultilabelF1Score):
    """F1 of one label, as a scalar Lightning can log (``MultilabelF1Score(average=None)`` computes a vector)."""

    def __init__(self, num_labels: int, index: int, threshold: float) -> None:
        """
        Args:
            num_labels: How many labels the model predicts.
            index: Which label this metric scores.
            threshold: Probability above which a label counts as predicted.
        """
        super().__init__(num_labels=num_labels, threshold=threshold, average=None, validate_args=False)
        self.index = index

    def compute(self) -> torch.Tensor:
        return super().compute()[self.index]


class MultiLabelClassifier(FineTuneModule):
    """Any number of labels per text or text pair (topics, emotions, toxicity types): a sigmoid per label."""

    auto_class = AutoModelForSequenceClassification
    data_class = "ftlit.data.MultiLabelDataModule"

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
        # Validation reports the averages (what checkpointing monitors); test adds every label's F1.
        self.val_metrics = self.build_metrics(per_label=False).clone(prefix="val/")

    def configure_backbone(self, config: PretrainedConfig) -> PretrainedConfig:
        config = self.configure_labels(super().configure_backbone(config))
        # transformers' text-classification pipeline then applies a sigmoid per label, as this model does.
        config.problem_type = "multi_label_classification"
        return config

    def build_metrics(self, per_label: bool = True) -> MetricCollection:
        """Micro and macro F1 and exact-match (subset) accuracy, plus ``f1_<label>`` per label unless told not to."""
        n, threshold = len(self.label_names), self.hparams.threshold
        common = {"num_labels": n, "threshold": threshold, "validate_args": False}
        metrics: dict[str, Any] = {
            "f1_micro": MultilabelF1Score(average="micro", **common),
            "f1_macro": MultilabelF1Score(average="macro", **common),
            "exact_match": MultilabelExactMatch(**common),
        }
        if per_label:
            metrics |= {f"f1_{name}": LabelF1(n, i, threshold) for i, name in enumerate(self.label_names)}
        return MetricCollection(metrics)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), batch["labels"].float(), pos_weight=self.pos_weight)

    def update_metrics(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], metrics: MetricCollection) -> None:
        metrics.update(logits.float().sigmoid(), batch["labels"].long())

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[dict[str, Any]]:
        """Each row's predicted labels (probability at least ``threshold``) and every label's probability."""
        names, threshold = self.label_names, self.hparams.threshold
        rows = [dict(zip(names, probs, strict=True)) for probs in self(batch).float().sigmoid().tolist()]
        return [{"labels": [n for n, p in row.items() if p >= threshold], "probs": row} for row in rows]
