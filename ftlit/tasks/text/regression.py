"""Regression data (STS-B style): one text or a text pair per row and one real-valued target."""

from __future__ import annotations

import math
from typing import Any, Literal

import datasets
import torch
import torch.nn.functional as F
from torchmetrics import MeanSquaredError, Metric, MetricCollection, PearsonCorrCoef, SpearmanCorrCoef
from transformers import AutoModelForSequenceClassification, PretrainedConfig
from typing_extensions import override

from ftlit.core.labels import column_error
from ftlit.core.module import FineTuneModule
from ftlit.errors import ConfigError
from ftlit.tasks.text.data import TargetEncoder, TextDataModule
from ftlit.tasks.text.evaluation import Pairs, describe_regression
from ftlit.tasks.text.long_text import PooledWindows


def _to_float(value: Any) -> float | None:
    """The target as a finite float (numbers written as text count: one stray word makes a CSV column text)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class RegressionDataModule(TextDataModule):
    """Text (or text-pair) regression: a score per row, e.g. STS-B similarity or review ratings."""

    def __init__(self, label_column: str = "label", **kwargs: Any) -> None:
        """
        Args:
            label_column: Column holding the numeric target.
            **kwargs: Text columns and shared data options: see ``TextDataModule`` and ``TaskDataModule``.
        """
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.check_target_columns("label_column", [label_column])
        self.label_column = label_column

    def check_targets(self, split: str, ds: datasets.Dataset) -> None:
        if self.label_column not in ds.column_names:
            raise column_error("data.label_column", self.label_column, split, ds)
        for row, value in enumerate(ds[self.label_column]):
            if _to_float(value) is None:
                raise ConfigError(
                    "data.label_column",
                    f"row {row} of the {split} split has target {value!r}: regression needs a finite number",
                )

    def target_fields(self) -> dict[str, Any]:
        return {"label": self.label_column}

    def target_encoder(self, ds: datasets.Dataset) -> TargetEncoder:
        column = self.label_column
        return lambda batch: [_to_float(v) for v in batch[column]]


class SequenceRegressor(PooledWindows, FineTuneModule):
    """One real-valued score per text or text pair, trained with mean squared error (GLUE's STS-B)."""

    auto_class = AutoModelForSequenceClassification
    data_class = RegressionDataModule

    def configure_backbone(self, config: PretrainedConfig) -> PretrainedConfig:
        config = super().configure_backbone(config)
        # One output, and transformers' pipelines then return it as is (no softmax or sigmoid).
        config.num_labels = 1
        config.problem_type = "regression"
        return config

    def build_metrics(self, stage: Literal["val", "test"]) -> MetricCollection:
        """Pearson, Spearman and MSE."""
        # Pearson and Spearman are GLUE's STS-B scores; MSE is the training objective.
        return MetricCollection(
            {"pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef(), "mse": MeanSquaredError()}
        )

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(logits.float().squeeze(-1), batch["labels"].float())

    def update_metrics(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], metrics: MetricCollection) -> None:
        metrics.update(logits.float().squeeze(-1), batch["labels"].float())

    @override
    def build_test_details(self) -> dict[str, Metric]:
        return {"pairs": Pairs()}

    @override
    def describe_test_details(self, values: dict[str, Any]) -> dict[str, Any]:
        return describe_regression(values)

    @override
    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[dict[str, Any]]:
        return [{"value": v} for v in self(batch).float().squeeze(-1).tolist()]
