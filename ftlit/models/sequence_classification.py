"""Sequence classification: a pretrained encoder with a classification head over the pooled output."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Accuracy, F1Score, MatthewsCorrCoef, MetricCollection
from transformers import AutoModelForSequenceClassification, PretrainedConfig

from ftlit.errors import ConfigError
from ftlit.models.base import FineTuneModule


class SequenceClassifier(FineTuneModule):
    """Single-label classification of a text or text pair (SST-2, MRPC, MNLI, sentiment, topics)."""

    auto_class = AutoModelForSequenceClassification

    def build_metrics(self) -> MetricCollection:
        n = self.model.config.num_labels
        metrics: dict[str, Any] = {
            "acc": Accuracy(task="multiclass", num_classes=n),
            "f1": F1Score(task="multiclass", num_classes=n, average="macro"),
        }
        if n == 2:
            metrics["mcc"] = MatthewsCorrCoef(task="multiclass", num_classes=n)
        return MetricCollection(metrics)

    def configure_backbone(self, config: PretrainedConfig) -> PretrainedConfig:
        if not self.label_names or len(self.label_names) < 2:
            raise ConfigError("model.label_names", f"need at least 2 labels, got {self.label_names}: check the data")
        config.num_labels = len(self.label_names)
        config.id2label = dict(enumerate(self.label_names))
        config.label2id = {name: i for i, name in enumerate(self.label_names)}
        config.problem_type = "single_label_classification"
        if self.hparams.head_dropout is not None:
            config.classifier_dropout = self.hparams.head_dropout
        return config

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return self.model(**inputs).logits

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["labels"].shape[0])
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str, metrics: MetricCollection) -> None:
        logits = self(batch)
        labels = batch["labels"]
        self.log(f"{stage}/loss", self.loss(logits, labels), batch_size=labels.shape[0], sync_dist=True)
        metrics.update(logits.argmax(-1), labels)
        self.log_dict(metrics, prog_bar=stage == "val")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[dict[str, Any]]:
        probs = self(batch).float().softmax(-1)
        score, ids = probs.max(-1)
        names = self.model.config.id2label
        return [
            {"label": names[i], "score": s, "probs": p}
            for i, s, p in zip(ids.tolist(), score.tolist(), probs.tolist(), strict=True)
        ]
