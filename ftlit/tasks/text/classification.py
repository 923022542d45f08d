"""Single-label classification of a text or a text pair: its data (one label per row) and its model (a
classification head over the pooled output)."""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, Literal

import datasets
import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassCalibrationError,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.wrappers import ClasswiseWrapper
from transformers import AutoModelForSequenceClassification, PretrainedConfig
from typing_extensions import override

from ftlit.core.datamodule import META
from ftlit.core.labels import column_error, label_set, sort_names, unknown_labels, warn_near_duplicates
from ftlit.core.module import FineTuneModule
from ftlit.errors import ConfigError
from ftlit.tasks.text.data import ROW, TargetEncoder, TextDataModule, label_text
from ftlit.tasks.text.evaluation import (
    CALIBRATION_BINS,
    Mistakes,
    classification_details,
    describe_classification,
    mistakes,
)


class ClassificationDataModule(TextDataModule):
    """Text (or text-pair) classification, one label per row, from local files or a Hub dataset."""

    def __init__(self, label_column: str = "label", labels: list[str] | None = None, **kwargs: Any) -> None:
        """
        Args:
            label_column: Column holding the label (string or integer).
            labels: Label names in id order; by default discovered from the train split, sorted.
            **kwargs: Text columns and shared data options: see ``TextDataModule`` and ``TaskDataModule``.
        """
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.check_target_columns("label_column", [label_column])
        self.label_column = label_column
        self.given_labels = labels

    @cached_property
    def label_names(self) -> list[str]:
        """Label names in id order: given, or every label seen in train, sorted."""

        def discover(train: datasets.Dataset) -> list[str]:
            self._check_label_values("train", train)
            to_name = label_text(train.features[self.label_column])
            names = sort_names(n for n in map(to_name, train[self.label_column]) if n is not None)
            warn_near_duplicates("data.label_column", names)
            return names

        names, field = label_set(self.given_labels, self.raw, discover, "data.label_column")
        if len(names) < 2:
            raise ConfigError(field, f"only one label ({names}): a classifier needs at least two")
        return names

    def _check_label_values(self, split: str, ds: datasets.Dataset) -> None:
        """The label column holds one class per row: text or whole numbers, not lists or fractions."""
        if self.label_column not in ds.column_names:
            raise column_error("data.label_column", self.label_column, split, ds)
        feature = ds.features[self.label_column]
        if getattr(feature, "feature", None) is not None:
            raise ConfigError(
                "data.label_column",
                f"column '{self.label_column}' of the {split} split holds lists of labels, but this task takes one "
                "per row: for several use ftlit.tasks.text.MultiLabelDataModule (with "
                "ftlit.tasks.text.MultiLabelClassifier)",
            )
        if not isinstance(feature, datasets.Value | datasets.ClassLabel):
            raise ConfigError(
                "data.label_column", f"column '{self.label_column}' of the {split} split holds {feature}, not one label"
            )
        if feature.dtype.startswith("float"):
            values = ds[self.label_column]
            bad = [row for row, v in enumerate(values) if v is not None and not math.isnan(v) and not v.is_integer()]
            if bad:
                raise ConfigError(
                    "data.label_column",
                    f"row {bad[0]} of the {split} split has label {values[bad[0]]!r} ({len(bad)} of {len(values)} rows "
                    "are fractions): a class is text or a whole number; for a numeric target use "
                    "ftlit.tasks.text.RegressionDataModule (with ftlit.tasks.text.SequenceRegressor)",
                )

    def check_targets(self, split: str, ds: datasets.Dataset) -> None:
        self._check_label_values(split, ds)
        to_name = label_text(ds.features[self.label_column])
        names = [to_name(v) for v in ds[self.label_column]]
        if None in names:
            row = names.index(None)
            raise ConfigError("data.label_column", f"row {row} of the {split} split has no label: fill or drop it")
        error = unknown_labels(split, names, self.label_names, self.given_labels is not None)
        if error is not None:
            raise error

    def target_fields(self) -> dict[str, Any]:
        return {"label": self.label_column, "labels": self.label_names}

    def target_encoder(self, ds: datasets.Dataset) -> TargetEncoder:
        label2id = {name: i for i, name in enumerate(self.label_names)}
        to_name, column = label_text(ds.features[self.label_column]), self.label_column
        return lambda batch: [label2id[to_name(v)] for v in batch[column]]


class SequenceClassifier(FineTuneModule):
    """Single-label classification of a text or text pair (SST-2, MRPC, MNLI, sentiment, topics)."""

    auto_class = AutoModelForSequenceClassification
    data_class = ClassificationDataModule

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

    def build_metrics(self, stage: Literal["val", "test"]) -> MetricCollection:
        """Accuracy; precision, recall and F1, macro (``f1``, ``precision``, ``recall``) and micro (``*_micro``); MCC;
        AUROC and average precision (one-vs-rest, macro: the binary ones for two labels). Test adds the weighted
        averages (``*_weighted``), the expected calibration error (``ece``) and every label's precision, recall and
        F1 (``f1_<label>``, ...)."""
        n, names = self.num_labels, [str(name) for name in self.model.config.id2label.values()]
        common = {"num_classes": n, "validate_args": False}
        averages = ("macro", "micro", "weighted") if stage == "test" else ("macro", "micro")
        metrics: dict[str, Any] = {
            "acc": MulticlassAccuracy(average="micro", **common),
            "mcc": MulticlassMatthewsCorrCoef(**common),
            "auroc": MulticlassAUROC(average="macro", **common),
            "ap": MulticlassAveragePrecision(average="macro", **common),
        }
        for average in averages:
            suffix = "" if average == "macro" else f"_{average}"
            metrics |= {
                f"precision{suffix}": MulticlassPrecision(average=average, **common),
                f"recall{suffix}": MulticlassRecall(average=average, **common),
                f"f1{suffix}": MulticlassF1Score(average=average, **common),
            }
        if stage == "test":
            metrics["ece"] = MulticlassCalibrationError(n_bins=CALIBRATION_BINS, **common)
            for score, cls in (
                ("precision", MulticlassPrecision),
                ("recall", MulticlassRecall),
                ("f1", MulticlassF1Score),
            ):
                metrics[f"{score}_per_label"] = ClasswiseWrapper(cls(average=None, **common), names, prefix=f"{score}_")
        return MetricCollection(metrics)

    @override
    def build_test_details(self) -> dict[str, Metric]:
        return {**classification_details(self.num_labels), "mistakes": Mistakes()}

    @override
    def describe_test_details(self, values: dict[str, Any]) -> dict[str, Any]:
        labels = [str(n) for n in self.model.config.id2label.values()]
        described = describe_classification(labels, values)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if isinstance(datamodule, TextDataModule) and "test" in datamodule.raw:
            described["mistakes"] = mistakes(labels, values["mistakes"], datamodule.row_text("test"))
        return described

    def configure_backbone(self, config: PretrainedConfig) -> PretrainedConfig:
        config = self.configure_labels(super().configure_backbone(config))
        config.problem_type = "single_label_classification"
        return config

    @override
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
        # Probabilities, not the argmax: AUROC, average precision and calibration need them. Test rows' indices go to
        # the metrics that take them (the mistakes; torchmetrics passes each metric only what its update accepts).
        rows = batch.get(META, {}).get(ROW)
        metrics.update(logits.float().softmax(-1), batch["labels"], **({"rows": rows} if rows is not None else {}))

    @override
    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[dict[str, Any]]:
        probs = self(batch).float().softmax(-1)
        score, ids = probs.max(-1)
        names = self.model.config.id2label
        return [
            {"label": names[i], "score": s, "probs": p}
            for i, s, p in zip(ids.tolist(), score.tolist(), probs.tolist(), strict=True)
        ]
