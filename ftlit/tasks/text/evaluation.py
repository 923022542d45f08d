"""What a text task's ``test`` records beyond its logged scores, for ``test-results.json`` and ``ftlit report``: the
confusion matrix and per-class table, ROC and precision-recall curves with their areas, the reliability diagram's
bins; for regression, predicted against gold. Every state is summed or concatenated, so the numbers under DDP equal
a single process's."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MulticlassPrecisionRecallCurve,
    MulticlassROC,
    MultilabelPrecisionRecallCurve,
    MultilabelROC,
    MultilabelStatScores,
)
from torchmetrics.utilities.data import dim_zero_cat
from typing_extensions import override

from ftlit.core.results import score_table, thin

# The reliability diagram's bins, as torchmetrics' calibration error counts them by default.
CALIBRATION_BINS = 15
# How many of the most confident mistakes a test records (with their text) for the report.
MISTAKES = 10
# At most this many (gold, predicted) points of a regression's scatter plot in the results file.
SCATTER_POINTS = 2000


class ReliabilityBins(Metric):
    """Per confidence bin of the predicted class: how many rows, their summed confidence and how many were right.

    The bins are torchmetrics' (``MulticlassCalibrationError``'s): ``(i/n, (i+1)/n]``, so the expected calibration
    error read from them equals torchmetrics' own.
    """

    full_state_update = False
    count: Tensor
    confidence: Tensor
    correct: Tensor

    def __init__(self, bins: int = CALIBRATION_BINS, **kwargs: Any) -> None:
        """
        Args:
            bins: Number of equal-width confidence bins in [0, 1].
            **kwargs: Passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        self.bins = bins
        for name in ("count", "confidence", "correct"):
            self.add_state(name, default=torch.zeros(bins, dtype=torch.float64), dist_reduce_fx="sum")

    @override
    def update(self, probs: Tensor, target: Tensor) -> None:
        """Add rows: ``probs`` ``[N, C]`` class probabilities, ``target`` ``[N]`` class ids."""
        confidence, predicted = probs.detach().max(-1)
        boundaries = torch.linspace(0, 1, self.bins + 1, device=probs.device, dtype=confidence.dtype)
        index = (torch.bucketize(confidence, boundaries, right=True) - 1).clamp(0, self.bins - 1)
        self.count.index_add_(0, index, torch.ones_like(confidence, dtype=torch.float64))
        self.confidence.index_add_(0, index, confidence.to(torch.float64))
        self.correct.index_add_(0, index, (predicted == target).to(torch.float64))

    @override
    def compute(self) -> dict[str, Tensor]:
        return {"count": self.count, "confidence": self.confidence, "correct": self.correct}


def calibration(bins: dict[str, Tensor]) -> dict[str, Any]:
    """The reliability diagram (mean confidence and accuracy per non-empty bin) and the expected calibration error."""
    count, confidence, correct = bins["count"], bins["confidence"], bins["correct"]
    seen = count > 0
    total = count.sum().clamp(min=1)
    ece = ((confidence - correct).abs().sum() / total).item()
    edges = torch.linspace(0, 1, len(count) + 1)
    return {
        "bins": len(count),
        "lower": edges[:-1][seen].tolist(),
        "upper": edges[1:][seen].tolist(),
        "count": count[seen].long().tolist(),
        "confidence": (confidence[seen] / count[seen]).tolist(),
        "accuracy": (correct[seen] / count[seen]).tolist(),
        "ece": ece,
    }


def curves(labels: list[str], roc: tuple, pr: tuple) -> dict[str, Any]:
    """Each class's ROC curve with its area and precision-recall curve with its average precision, thinned for the
    file; the areas are computed on the whole curves (they equal torchmetrics' AUROC and average precision)."""
    out: dict[str, Any] = {"roc": {}, "pr": {}}
    for i, name in enumerate(labels):
        fpr, tpr = roc[0][i].double(), roc[1][i].double()
        precision, recall = pr[0][i].double(), pr[1][i].double()
        fpr_t, tpr_t = thin(fpr.tolist(), tpr.tolist())
        out["roc"][name] = {"fpr": fpr_t, "tpr": tpr_t, "auc": torch.trapezoid(tpr, fpr).item()}
        # Average precision as torchmetrics and scikit-learn define it: sum over thresholds of dR * P.
        ap = -torch.sum((recall[1:] - recall[:-1]) * precision[:-1]).item()
        precision_t, recall_t = thin(precision.tolist(), recall.tolist())
        out["pr"][name] = {"precision": precision_t, "recall": recall_t, "ap": ap}
    return out


def classification_details(n: int) -> dict[str, Metric]:
    """The test details of single-label classification over ``n`` classes (updated with probabilities)."""
    common = {"num_classes": n, "validate_args": False}
    return {
        "confusion": MulticlassConfusionMatrix(**common),
        "roc": MulticlassROC(**common),
        "pr": MulticlassPrecisionRecallCurve(**common),
        "calibration": ReliabilityBins(),
    }


def describe_classification(labels: list[str], values: dict[str, Any]) -> dict[str, Any]:
    """The test details as plain data: ``confusion_matrix`` (rows gold, columns predicted, in label order),
    ``per_class``, ``roc``, ``pr`` and ``calibration``."""
    matrix = values["confusion"].long()
    tp = matrix.diag()
    return {
        "confusion_matrix": matrix.tolist(),
        "per_class": score_table(labels, tp.tolist(), (matrix.sum(0) - tp).tolist(), (matrix.sum(1) - tp).tolist()),
        **curves(labels, values["roc"], values["pr"]),
        "calibration": calibration(values["calibration"]),
    }


def multi_label_details(n: int, threshold: float) -> dict[str, Metric]:
    """The test details of multi-label classification over ``n`` labels (updated with probabilities)."""
    common = {"num_labels": n, "validate_args": False}
    return {
        "stats": MultilabelStatScores(average=None, threshold=threshold, **common),
        "roc": MultilabelROC(**common),
        "pr": MultilabelPrecisionRecallCurve(**common),
    }


def describe_multi_label(labels: list[str], values: dict[str, Any]) -> dict[str, Any]:
    """``per_class`` (each label's precision, recall, F1, support), ``roc`` and ``pr`` per label."""
    stats = values["stats"].long()  # [labels, (tp, fp, tn, fn, support)]
    return {
        "per_class": score_table(labels, stats[:, 0].tolist(), stats[:, 1].tolist(), stats[:, 3].tolist()),
        **curves(labels, values["roc"], values["pr"]),
    }


class Pairs(Metric):
    """Every (predicted, gold) pair, concatenated over processes: a regression's scatter plot."""

    full_state_update = False
    predicted: list[Tensor] | Tensor
    gold: list[Tensor] | Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("predicted", default=[], dist_reduce_fx="cat")
        self.add_state("gold", default=[], dist_reduce_fx="cat")

    @override
    def update(self, predicted: Tensor, gold: Tensor) -> None:
        self.predicted.append(predicted.detach().float())
        self.gold.append(gold.detach().float())

    @override
    def compute(self) -> dict[str, Tensor]:
        if isinstance(self.predicted, list) and not self.predicted:
            return {"predicted": torch.empty(0), "gold": torch.empty(0)}
        return {"predicted": dim_zero_cat(self.predicted), "gold": dim_zero_cat(self.gold)}


def describe_regression(values: dict[str, Any]) -> dict[str, Any]:
    """``scatter``: at most ``SCATTER_POINTS`` (gold, predicted) pairs, ordered by gold (a fixed, even sample of a
    larger split), and the residuals' mean and spread."""
    pairs = values["pairs"]
    gold, predicted = pairs["gold"].double(), pairs["predicted"].double()
    order = torch.argsort(gold, stable=True)
    gold_t, predicted_t = thin(gold[order].tolist(), predicted[order].tolist(), points=SCATTER_POINTS)
    residual = predicted - gold
    return {
        "scatter": {"gold": gold_t, "predicted": predicted_t},
        "residuals": {
            "mean": residual.mean().item() if len(residual) else None,
            "std": residual.std().item() if len(residual) > 1 else None,
            "max_abs": residual.abs().max().item() if len(residual) else None,
        },
    }


class Mistakes(Metric):
    """The ``n`` most confident wrong predictions (highest probability of the predicted class), over all processes.

    Each process keeps only its ``n`` best candidates, so memory stays bounded on any split; ties go to the lower
    row, so the result does not depend on how rows were spread over processes.
    """

    full_state_update = False
    confidence: list[Tensor] | Tensor
    predicted: list[Tensor] | Tensor
    gold: list[Tensor] | Tensor
    row: list[Tensor] | Tensor

    def __init__(self, n: int = MISTAKES, **kwargs: Any) -> None:
        """
        Args:
            n: How many mistakes to keep.
            **kwargs: Passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        self.n = n
        for name in ("confidence", "predicted", "gold", "row"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    @override
    def update(self, probs: Tensor, target: Tensor, rows: Tensor | None = None) -> None:
        """Add rows: ``probs`` ``[N, C]``, ``target`` ``[N]`` and ``rows``, each row's index in the split (without
        them, as from a cache written before they were kept, nothing is recorded)."""
        if rows is None:
            return
        confidence, predicted = probs.detach().float().max(-1)
        wrong = predicted != target
        for name, values in (("confidence", confidence), ("predicted", predicted), ("gold", target), ("row", rows)):
            getattr(self, name).append(values[wrong].detach())
        if len(self.row) > 8:  # compact now and then: the top n so far
            kept = self._top()
            for name in ("confidence", "predicted", "gold", "row"):
                setattr(self, name, [kept[name]])

    def _top(self) -> dict[str, Tensor]:
        columns = {name: dim_zero_cat(getattr(self, name)) for name in ("confidence", "predicted", "gold", "row")}
        # Highest confidence first, then the lower row: sort by row, then stably by confidence.
        order = torch.argsort(columns["row"], stable=True)
        order = order[torch.argsort(-columns["confidence"][order], stable=True)][: self.n]
        return {name: values[order] for name, values in columns.items()}

    @override
    def compute(self) -> dict[str, Tensor]:
        if isinstance(self.row, list) and not self.row:
            empty = torch.empty(0)
            return {"confidence": empty, "predicted": empty.long(), "gold": empty.long(), "row": empty.long()}
        return self._top()


def mistakes(labels: list[str], values: dict[str, Tensor], texts: Any) -> list[dict[str, Any]]:
    """The mistakes as rows ``{"row", "text", "text_pair", "gold", "predicted", "confidence"}``; ``texts(row)``
    gives an input's text and its pair's second text (or None)."""
    # torchmetrics squeezes a computed tensor of one element to a scalar: a test with one mistake gives 0-d values.
    values = {name: value.reshape(-1) for name, value in values.items()}
    return [
        {
            "row": row,
            **dict(zip(("text", "text_pair"), texts(row), strict=True)),
            "gold": labels[gold],
            "predicted": labels[predicted],
            "confidence": confidence,
        }
        for row, gold, predicted, confidence in zip(
            values["row"].tolist(),
            values["gold"].tolist(),
            values["predicted"].tolist(),
            values["confidence"].tolist(),
            strict=True,
        )
    ]
