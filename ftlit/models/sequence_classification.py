"""Sequence classification: a pretrained encoder with a classification head over the pooled output."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torchmetrics import Accuracy, F1Score, MatthewsCorrCoef, MetricCollection
from transformers import AutoModelForSequenceClassification, PretrainedConfig

from ftlit.errors import ConfigError
from ftlit.models.base import FineTuneModule


class SequenceClassifier(FineTuneModule):
    """Single-label classification of a text or text pair (SST-2, MRPC, MNLI, sentiment, topics)."""

    auto_class = AutoModelForSequenceClassification
    data_class = "ftlit.data.ClassificationDataModule"

    def __init__(
        self,
        *args: Any,
        label_smoothing: float = 0.0,
        class_weights: list[float] | Literal["balanced"] | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            label_smoothing: Cross-entropy label smoothing (0 turns it off; 0.1 is common).
            class_weights: Loss weight per label (in label order), or ``balanced`` for ``n / (labels * count)``
                from the train split's label counts.
            *args: Shared model options: see ``FineTuneModule``.
            **kwargs: Shared model options: see ``FineTuneModule``.
        """
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError("model.label_smoothing", f"must be in [0, 1), got {label_smoothing}")
        super().__init__(*args, **kwargs)
        if isinstance(class_weights, list) and len(class_weights) != self.num_labels:
            raise ConfigError("model.class_weights", f"{len(class_weights)} weights for {self.num_labels} labels")
        if isinstance(class_weights, list) and not all(w >= 0 and math.isfinite(w) for w in class_weights):
            raise ConfigError("model.class_weights", f"weights must be finite and >= 0, got {class_weights}")
        self.class_weight: torch.Tensor | None = None

    @property
    def num_labels(self) -> int:
        return self.model.config.num_labels

    def build_metrics(self) -> MetricCollection:
        n = self.model.config.num_labels
        common = {"task": "multiclass", "num_classes": n, "validate_args": False}
        metrics: dict[str, Any] = {"acc": Accuracy(**common), "f1": F1Score(average="macro", **common)}
        if n == 2:
            metrics["mcc"] = MatthewsCorrCoef(**common)
        return MetricCollection(metrics)

    def configure_backbone(self, config: PretrainedConfig) -> PretrainedConfig:
        config = self.configure_labels(super().configure_backbone(config))
        config.problem_type = "single_label_classification"
        return config

    def on_fit_start(self) -> None:
        super().on_fit_start()
        weights = self.hparams.class_weights
        if weights == "balanced":
            # n / (classes * count): the weighting scikit-learn calls "balanced".
            counts = torch.bincount(
                torch.tensor(self.trainer.datamodule.datasets["train"]["labels"]), minlength=self.num_labels
            )
            weights = (counts.sum() / (self.num_labels * counts.clamp(min=1))).tolist()
        if weights is not None:
            self.class_weight = torch.tensor(weights, dtype=torch.float32, device=self.device)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), batch["labels"], weight=self.class_weight, label_smoothing=self.hparams.label_smoothing
        )

    def update_metrics(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], metrics: MetricCollection) -> None:
        metrics.update(logits.argmax(-1), batch["labels"])

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[dict[str, Any]]:
        probs = self(batch).float().softmax(-1)
        score, ids = probs.max(-1)
        names = self.model.config.id2label
        return [
            {"label": names[i], "score": s, "probs": p}
            for i, s, p in zip(ids.tolist(), score.tolist(), probs.tolist(), strict=True)
        ]
