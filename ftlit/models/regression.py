"""Regression: a pretrained encoder with one linear output over the pooled text (STS-B, ratings)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MeanSquaredError, MetricCollection, PearsonCorrCoef, SpearmanCorrCoef
from transformers import AutoModelForSequenceClassification, PretrainedConfig

from ftlit.models.base import FineTuneModule


class SequenceRegressor(FineTuneModule):
    """One real-valued score per text or text pair, trained with mean squared error (GLUE's STS-B)."""

    auto_class = AutoModelForSequenceClassification
    data_class = "ftlit.data.RegressionDataModule"

    def configure_backbone(self, config: PretrainedConfig) -> PretrainedConfig:
        config = super().configure_backbone(config)
        # One output, and transformers' pipelines then return it as is (no softmax or sigmoid).
        config.num_labels = 1
        config.problem_type = "regression"
        return config

    def build_metrics(self) -> MetricCollection:
        # Pearson and Spearman are GLUE's STS-B scores; MSE is the training objective.
        return MetricCollection(
            {"pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef(), "mse": MeanSquaredError()}
        )

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(logits.float().squeeze(-1), batch["labels"].float())

    def update_metrics(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], metrics: MetricCollection) -> None:
        metrics.update(logits.float().squeeze(-1), batch["labels"].float())

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[dict[str, Any]]:
        return [{"value": v} for v in self(batch).float().squeeze(-1).tolist()]
