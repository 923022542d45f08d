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

from ftlit.core.adversarial import DomainHead, DomainSchedule, reversal_scale
from ftlit.core.datamodule import META
from ftlit.core.labels import column_error, label_set, sort_names, unknown_labels, warn_near_duplicates
from ftlit.core.module import FineTuneModule
from ftlit.errors import ConfigError
from ftlit.tasks.text.data import DOMAIN, ROW, TargetEncoder, TextDataModule, label_text
from ftlit.tasks.text.evaluation import (
    CALIBRATION_BINS,
    Mistakes,
    classification_details,
    describe_classification,
    mistakes,
)
from ftlit.tasks.text.long_text import PooledWindows

# The label of a training row without one (a target-domain row): cross-entropy's default ignore_index.
IGNORE_INDEX = -100


class ClassificationDataModule(TextDataModule):
    """Text (or text-pair) classification, one label per row, from local files or a Hub dataset."""

    def __init__(
        self,
        label_column: str = "label",
        labels: list[str] | None = None,
        domain_column: str | None = None,
        target_domain: str | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            label_column: Column holding the label (string or integer).
            labels: Label names in id order; by default discovered from the train split, sorted.
            domain_column: Column naming each training row's domain (e.g. ``source``), for domain-adversarial
                training (``model.domain_weight``).
            target_domain: The domain (a value of ``domain_column``) to adapt to: its training rows are used
                without their labels (which may be empty), only to train the domain classifier; it is left out of a
                validation split carved from train.
            **kwargs: Text columns and shared data options: see ``TextDataModule`` and ``TaskDataModule``.
        """
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.check_target_columns("label_column", [label_column])
        if (domain_column is None) != (target_domain is None):
            missing = "target_domain" if target_domain is None else "domain_column"
            raise ConfigError(f"data.{missing}", "domain-adversarial data needs both domain_column and target_domain")
        if domain_column is not None:
            self.check_target_columns("domain_column", [domain_column])
            if domain_column == label_column:
                raise ConfigError("data.domain_column", f"'{domain_column}' is also data.label_column: name another")
            if self.train_windows:
                raise ConfigError(
                    "data.train_windows",
                    "domain-adversarial training reads one window per training row: drop train_windows (evaluation "
                    "still pools windows) or domain_column",
                )
        self.label_column = label_column
        self.given_labels = labels
        self.domain_column = domain_column
        self.target_domain = target_domain

    @cached_property
    def raw(self) -> dict[str, datasets.Dataset]:
        """The splits; with a ``domain_column``, the train split's rows get a domain (1 for ``target_domain``, whose
        labels are dropped), and a validation split carved from train keeps the source domains only."""
        splits = dict(super().raw)
        if self.domain_column is None or "train" not in splits:
            return splits
        column, target = self.domain_column, str(self.target_domain)
        train = splits["train"]
        if column not in train.column_names:
            raise column_error("data.domain_column", column, "train", train)
        domains = [str(v) for v in train[column]]
        if target not in domains:
            seen = ", ".join(sorted(set(domains))[:10])
            raise ConfigError(
                "data.target_domain", f"no train row has {column} '{target}': the train split's domains are {seen}"
            )
        if all(d == target for d in domains):
            raise ConfigError("data.target_domain", f"every train row is of '{target}': no labelled source rows")
        label = self.label_column
        splits["train"] = train.map(
            lambda row: {
                DOMAIN: int(str(row[column]) == target),
                label: None if str(row[column]) == target else row[label],
            },
            desc="Marking domains",
            keep_in_memory=True,
            load_from_cache_file=False,
        )
        carved = self.files["validation"] is None and self.dataset is None
        if carved and "validation" in splits:
            splits["validation"] = splits["validation"].filter(
                lambda row: str(row[column]) != target, keep_in_memory=True, load_from_cache_file=False
            )
        return splits

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
        if DOMAIN in ds.column_names:  # target-domain rows train without labels
            ds = ds.filter(lambda row: row[DOMAIN] == 0, keep_in_memory=True, load_from_cache_file=False)
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
        domains = {"domain": [self.domain_column, self.target_domain]} if self.domain_column else {}
        return {"label": self.label_column, "labels": self.label_names, **domains}

    def target_encoder(self, ds: datasets.Dataset) -> TargetEncoder:
        """Label ids; a target-domain training row (no label) gets -100, which the loss ignores."""
        label2id = {name: i for i, name in enumerate(self.label_names)}
        to_name, column = label_text(ds.features[self.label_column]), self.label_column
        return lambda batch: [IGNORE_INDEX if v is None else label2id[to_name(v)] for v in batch[column]]


class SequenceClassifier(PooledWindows, FineTuneModule):
    """Single-label classification of a text or text pair (SST-2, MRPC, MNLI, sentiment, topics)."""

    auto_class = AutoModelForSequenceClassification
    distill_kind = "softmax"
    data_class = ClassificationDataModule

    def __init__(
        self,
        *args: Any,
        label_smoothing: float = 0.0,
        class_weights: list[float] | Literal["balanced"] | None = None,
        domain_weight: float | None = None,
        domain_schedule: DomainSchedule = "dann",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            label_smoothing: Cross-entropy label smoothing (0 turns it off; 0.1 is common).
            class_weights: Loss weight per label (in label order), or ``balanced`` for ``n / (labels * count)``
                from the train split's label counts.
            domain_weight: Domain-adversarial training (DANN, Ganin et al. 2016) with this strength of the gradient
                reversal (1.0 as in the paper); needs ``data.domain_column`` and ``data.target_domain``. A domain
                classifier on the [CLS] representation learns to tell the target domain's rows from the source's,
                and the encoder is trained against it. ``null``: off.
            domain_schedule: How the reversal's strength grows: ``dann`` ramps it from 0 to ``domain_weight`` as
                ``2 / (1 + exp(-10 p)) - 1`` over training progress ``p``, as in the paper; ``constant`` holds it.
            *args: Shared model options: see ``FineTuneModule``.
            **kwargs: Shared model options: see ``FineTuneModule``.
        """
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError("model.label_smoothing", f"must be in [0, 1), got {label_smoothing}")
        if domain_weight is not None and not (domain_weight >= 0 and math.isfinite(domain_weight)):
            raise ConfigError(
                "model.domain_weight", f"must be >= 0 (1.0 as in the paper; null: off), got {domain_weight}"
            )
        if domain_schedule not in ("dann", "constant"):
            raise ConfigError("model.domain_schedule", f"must be dann or constant, got {domain_schedule!r}")
        super().__init__(*args, **kwargs)
        self.domain_head = None if domain_weight is None else DomainHead(self.model.config.hidden_size)
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
    def check_data(self, datamodule: Any) -> None:
        super().check_data(datamodule)
        if self.domain_head is not None and getattr(datamodule, "domain_column", None) is None:
            raise ConfigError(
                "model.domain_weight", "domain-adversarial training needs data.domain_column and data.target_domain"
            )

    @override
    def on_fit_start(self) -> None:
        super().on_fit_start()
        weights = self.hparams.class_weights
        if weights == "balanced":
            # n / (classes * count): the weighting scikit-learn calls "balanced".
            labels = torch.tensor(self.trainer.datamodule.datasets["train"]["labels"])
            counts = torch.bincount(labels[labels != IGNORE_INDEX], minlength=self.num_labels)  # labelled rows
            weights = (counts.sum() / (self.num_labels * counts.clamp(min=1))).tolist()
        if weights is not None:
            self.class_weight = torch.tensor(weights, dtype=torch.float32, device=self.device)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy over the rows with a label (a target-domain training row has none: -100); 0 for a batch
        with none, kept on the device (no host sync)."""
        labels = batch["labels"]
        per_row = F.cross_entropy(
            logits.float(),
            labels,
            weight=self.class_weight,
            label_smoothing=self.hparams.label_smoothing,
            ignore_index=IGNORE_INDEX,
            reduction="none",
        )
        # The mean cross-entropy takes: the sum over the weights of the labelled rows.
        labelled = labels != IGNORE_INDEX
        weights = labelled.float() if self.class_weight is None else self.class_weight[labels.clamp(min=0)] * labelled
        return per_row.sum() / weights.sum().clamp(min=torch.finfo(torch.float32).tiny)

    @override
    def training_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The classification loss, and with ``domain_weight`` the domain classifier's cross-entropy, whose
        gradient reaches the encoder reversed (``train/domain_loss``, ``train/domain_acc``, ``train/domain_scale``)."""
        if self.domain_head is None:
            return super().training_loss(batch)
        domains = batch[META][DOMAIN]  # on_fit_start checked that the data has them
        out = self.model(**self.model_inputs(batch), output_hidden_states=True)
        progress = self.global_step / max(1, self.trainer.estimated_stepping_batches)
        scale = reversal_scale(self.hparams.domain_weight, self.hparams.domain_schedule, progress)
        domain_logits = self.domain_head(out.hidden_states[-1][:, 0], scale)
        domain_loss = F.cross_entropy(domain_logits.float(), domains)
        n = domains.shape[0]
        self.log("train/domain_loss", domain_loss, batch_size=n)
        self.log("train/domain_acc", (domain_logits.argmax(-1) == domains).float().mean(), batch_size=n)
        self.log("train/domain_scale", scale, batch_size=n)
        return self.loss(out.logits, batch), domain_loss, out.logits

    @override
    def param_groups(self) -> list[dict[str, Any]]:
        """The backbone's and head's groups, and the domain classifier's (at the head's learning rate)."""
        groups = super().param_groups()
        if self.domain_head is not None:
            lr, decay = self.hparams.head_lr or self.hparams.learning_rate, self.hparams.weight_decay
            for key, plain in (("domain", False), ("domain/no_decay", True)):
                params = [p for n, p in self.domain_head.named_parameters() if n.endswith("bias") == plain]
                groups.append({"name": key, "params": params, "lr": lr, "weight_decay": 0.0 if plain else decay})
        return groups

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
