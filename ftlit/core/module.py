"""What every task model shares: the backbone, optimizer groups, the schedule and self-contained checkpoints."""

from __future__ import annotations

import contextvars
import copy
import inspect
import math
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType, rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, get_scheduler
from typing_extensions import override

from ftlit import backbone, upstream
from ftlit import quiet as quiet_output
from ftlit.checkpoint_io import read_checkpoint, saved_backbone
from ftlit.classes import class_path, find_class
from ftlit.core import distillation, strategies, warm_start
from ftlit.core.anatomy import Anatomy, anatomy
from ftlit.core.attention import build_with_attention
from ftlit.core.callbacks.clock import RunClock
from ftlit.core.callbacks.rng import RNGState
from ftlit.core.callbacks.safety import FinalState, GracefulStop
from ftlit.core.datamodule import TaskDataModule, default_cache_dir
from ftlit.core.results import DIRECTIONS, write_json, write_results
from ftlit.core.samplers import upgrade_loader_state
from ftlit.errors import ConfigError, TrainingError, config_error_in

SchedulerName = Literal["linear", "cosine", "constant", "polynomial"]
# transformers' names for our schedules; all of them warm up linearly first.
_SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup", "polynomial": "polynomial"}

# Devices with torch's fused optimizer kernels (not XLA, for one).
_FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu", "hpu")

# Set while a model is rebuilt from a checkpoint: the backbone comes from the checkpoint's saved config,
# never from the Hub or the original folder (which may be gone).
_SAVED_BACKBONE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("ftlit_saved_backbone", default=None)


def _optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    found = find_class(name, default_module="torch.optim")
    if found is None or not issubclass(found, torch.optim.Optimizer):
        raise ConfigError("model.optimizer", f"'{name}' is not a torch optimizer class: e.g. AdamW or torch.optim.SGD")
    closure = inspect.signature(found.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        # LBFGS re-evaluates the loss several times a step: Lightning's automatic optimization cannot drive it.
        raise ConfigError("model.optimizer", f"{name} needs a loss closure each step: use AdamW, Adam or SGD")
    if found is torch.optim.SparseAdam:
        raise ConfigError("model.optimizer", "SparseAdam takes sparse gradients only, and a transformer's are dense")
    return found


class WeightedMean(MeanMetric):
    """A weighted mean with no per-batch NaN check: the check reads the value back to the host (a GPU sync every
    batch), and a NaN loss should show as NaN, not be dropped. torchmetrics' ``nan_strategy="disable"`` would skip
    the check but also drops the weights (torchmetrics 1.9; see ``ftlit.upstream.OVERRIDDEN``)."""

    @override
    def _cast_and_nan_check_input(self, x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.to(self.dtype), weight.to(self.dtype)


def accepted_inputs(model: PreTrainedModel, names: list[str]) -> tuple[str, ...]:
    """Which of a tokenizer's ``model_input_names`` the model's ``forward`` takes (DistilBERT takes no
    ``token_type_ids``, whatever its tokenizer makes); all of them when ``forward`` takes ``**kwargs``."""
    parameters = inspect.signature(type(model).forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return tuple(names)
    return tuple(name for name in names if name in parameters)


# The evaluation stages each Lightning stage runs.
EVALUATED: dict[str, tuple[Literal["val", "test"], ...]] = {"fit": ("val",), "validate": ("val",), "test": ("test",)}


class FineTuneModule(pl.LightningModule, ABC):
    """Shared base of the task models. A subclass names its ``auto_class`` and ``data_class``, fits the backbone's
    config to the task (:meth:`configure_backbone`) and supplies :meth:`build_metrics`, :meth:`loss` and
    :meth:`update_metrics`; the steps, the optimizer and checkpoints are the same for every task.

    A batch holds the backbone's inputs, the targets (``labels``, answer positions) and, under ``meta``, what else
    the task reads (offsets, ids, texts): :meth:`model_inputs` picks what the backbone takes.
    """

    auto_class: Any = None  # e.g. transformers.AutoModelForSequenceClassification
    # How a teacher's predictions are softened for distillation (softmax over labels, or a sigmoid per label);
    # None: the task cannot be distilled.
    distill_kind: distillation.Kind | None = None
    # The data module class this task trains on (checked by the CLI before anything is built).
    data_class: type[TaskDataModule] = TaskDataModule
    # The init arguments that shape predictions (not training): an export keeps them, so it predicts alike.
    predict_settings: tuple[str, ...] = ()

    def __init__(
        self,
        backbone: str,
        label_names: list[str] | None = None,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.01,
        optimizer: str = "AdamW",
        scheduler: SchedulerName = "linear",
        warmup_ratio: float = 0.0,
        warmup_steps: int = 0,
        head_dropout: float | None = None,
        freeze_backbone: bool = False,
        freeze_embeddings: bool = False,
        freeze_layers: int = 0,
        layer_lr_decay: float = 1.0,
        head_lr: float | None = None,
        reinit_layers: int = 0,
        reinit_pooler: bool = False,
        keep_layers: list[int] | None = None,
        prune_heads: dict[int, list[int]] | None = None,
        l2sp_alpha: float = 0.0,
        lora_rank: int = 0,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.05,
        lora_target_modules: list[str] | None = None,
        compile: bool = False,
        trust_remote_code: bool = False,
        init_from: str | None = None,
        teacher: str | None = None,
        distill_alpha: float = 0.5,
        distill_temperature: float = 2.0,
        distill_cache: bool = True,
    ) -> None:
        """
        Args:
            backbone: Pretrained model: a Hub name (``bert-base-uncased``), a local folder, or
                ``package:<module>/<folder>`` for a model shipped inside an installed Python package.
            label_names: Label names in id order; the CLI links them from the data module.
            learning_rate: Peak learning rate, reached at the end of warmup.
            weight_decay: Decoupled weight decay; never applied to biases and LayerNorm weights.
            optimizer: ``torch.optim`` class name or full class path; one with a fused kernel (AdamW, Adam, SGD,
                Adagrad) runs it, on the CPU and the GPU.
            scheduler: Learning-rate decay after warmup, stepped every optimizer step.
            warmup_ratio: Share of all training steps spent warming up linearly from 0.
            warmup_steps: Warmup length in steps; overrides ``warmup_ratio`` when above 0.
            head_dropout: Dropout before the task head (default: the backbone's own).
            freeze_backbone: Train the head only; the backbone's weights stay exactly as pretrained.
            freeze_embeddings: Keep the embeddings as pretrained.
            freeze_layers: Keep the bottom N encoder layers as pretrained.
            layer_lr_decay: Layer-wise learning-rate decay: each layer down from the top gets this factor more
                (0.9 is typical); 1.0 turns it off.
            head_lr: Learning rate of the task head (default: ``learning_rate``).
            reinit_layers: Re-initialise the top N encoder layers before training (few-sample fine-tuning).
            reinit_pooler: Re-initialise the pooler too.
            keep_layers: Keep only these encoder layers (indices, bottom first) and drop the rest, before anything
                else: a smaller, faster model ("Poor Man's BERT"), e.g. ``[0, 2, 4]`` (every other layer of 6) or
                ``[0, 1, 2]`` (the bottom 3). Its checkpoints and exports are of the smaller model.
            prune_heads: Remove these attention heads before training, ``{layer: [head, ...]}`` (0-based; layers
                counted after ``keep_layers``), e.g. ``{0: [0, 5], 3: [1]}``: the attention gets narrower, the model
                smaller and faster (Michel et al. 2019: many heads go at little cost). With ``init_from`` it prunes a
                fine-tuned model that then trains on. Checkpoints and ONNX exports hold the narrower layers; an
                exported folder holds the config's full width with the removed heads' weights zero, so plain
                transformers loads it and computes the same. BERT, RoBERTa, XLM-R, ELECTRA and DistilBERT.
            l2sp_alpha: L2-SP strength: adds ``alpha/2 * ||theta - theta_pretrained||^2`` over the backbone.
            lora_rank: LoRA rank; above 0 trains low-rank adapters (and the head) instead of the backbone.
                Needs the ``peft`` extra.
            lora_alpha: LoRA scaling numerator (the update is scaled by ``lora_alpha / lora_rank``).
            lora_dropout: Dropout on the LoRA path.
            lora_target_modules: Module names that get adapters (default: the attention's query and value
                projections: ``query`` and ``value``; DistilBERT ``q_lin`` and ``v_lin``; DeBERTa-v2 ``query_proj`` and
                ``value_proj``; ModernBERT its fused ``Wqkv``).
            compile: Compile the model's forward with ``torch.compile(dynamic=True)``, so batches of new lengths do
                not recompile; the first step, which pays for compilation, is reported on its own.
            trust_remote_code: Let a backbone that ships its own Python code (``auto_map`` in its config) run it.
                Off by default: such a model is an error until you have checked its source.
            init_from: Start from a model fine-tuned before (cascaded fine-tuning): an ftlit checkpoint or a folder
                written by ``ftlit export``, of ``backbone``'s architecture (whose tokenizer the data uses). Its
                backbone carries over, its head too when it is the same task over the same labels (in any order);
                LoRA adapters in it are merged first; L2-SP anchors to its weights.
            teacher: Knowledge distillation (Hinton et al. 2015) from this fine-tuned classifier (an ftlit checkpoint
                or an ``ftlit export`` folder) over the same labels, read with ``backbone``'s tokenizer: the loss is
                ``distill_alpha * CE + (1 - distill_alpha) * T^2 * KL(teacher_T || student_T)``, the KL logged as
                ``train/distill_loss``. The teacher is frozen and in no checkpoint. Sequence classifiers, and token
                classifiers (NER: the teacher a token classifier too; the KL per labelled token).
            distill_alpha: The weight of the labels' cross-entropy, in [0, 1]; 1 trains as without a teacher.
            distill_temperature: The temperature T that softens both predictions (above 0; 1 leaves them as
                they are).
            distill_cache: Keep the teacher's logits of each training row on disk (under ``data.cache_dir``, keyed
                by the teacher's weights and the row's tokens), so later epochs and runs skip the teacher's forward.
        """
        super().__init__()
        self.save_hyperparameters()
        if learning_rate <= 0:
            raise ConfigError("model.learning_rate", f"must be positive, got {learning_rate}")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ConfigError("model.warmup_ratio", f"must be in [0, 1), got {warmup_ratio}")
        if warmup_steps < 0:
            raise ConfigError("model.warmup_steps", f"must be >= 0, got {warmup_steps}")
        if weight_decay < 0:
            raise ConfigError("model.weight_decay", f"must be >= 0, got {weight_decay}")
        if head_lr is not None and not head_lr > 0:
            raise ConfigError("model.head_lr", f"must be positive, got {head_lr} (null: the learning_rate)")
        if head_dropout is not None and not 0.0 <= head_dropout < 1.0:
            raise ConfigError("model.head_dropout", f"must be in [0, 1), got {head_dropout}")
        _optimizer_class(optimizer)
        if not 0.0 <= distill_alpha <= 1.0:
            raise ConfigError("model.distill_alpha", f"must be in [0, 1], got {distill_alpha}")
        if not distill_temperature > 0:
            raise ConfigError("model.distill_temperature", f"must be above 0, got {distill_temperature}")
        if teacher is not None and self.distill_kind is None:
            raise ConfigError(
                "model.teacher", f"{type(self).__name__} cannot be distilled yet: sequence and token classifiers only"
            )
        self._check_strategies()
        self.label_names = label_names
        self.model: PreTrainedModel = self._build_backbone()
        # from_pretrained returns eval mode, and Lightning keeps each module's mode: dropout would stay off.
        self.model.train()
        self._apply_strategies(pretrained=_SAVED_BACKBONE.get() is None)
        # Needed to train only: a model rebuilt from its checkpoint (export, predict) loads no teacher.
        self.teacher = self._load_teacher() if teacher is not None and _SAVED_BACKBONE.get() is None else None
        # Each evaluation stage's metrics ("val", "test"), built by `evaluation_metrics` when first needed, and the
        # test's details (confusion matrix, curves) for test-results.json.
        self.metrics = nn.ModuleDict()
        self.details: MetricCollection | None = None
        # Losses averaged over rows, not over per-rank batch means: exact under DDP with uneven shards.
        self.val_loss, self.test_loss = WeightedMean(), WeightedMean()

    # --- what a task supplies -------------------------------------------------------------------------------

    def configure_backbone(self, config: PretrainedConfig) -> PretrainedConfig:
        """Adapt the pretrained config to the task; a subclass adds its labels to what the base sets here."""
        if self.hparams.head_dropout is not None:
            config.classifier_dropout = self.hparams.head_dropout
        return config

    def configure_labels(self, config: PretrainedConfig) -> PretrainedConfig:
        """Give ``config`` the task's label set: ``num_labels``, ``id2label`` and ``label2id``."""
        if not self.label_names or len(self.label_names) < 2:
            raise ConfigError("model.label_names", f"need at least 2 labels, got {self.label_names}: check the data")
        config.num_labels = len(self.label_names)
        config.id2label = dict(enumerate(self.label_names))
        config.label2id = {name: i for i, name in enumerate(self.label_names)}
        return config

    @abstractmethod
    def build_metrics(self, stage: Literal["val", "test"]) -> MetricCollection:
        """The task's metrics for an evaluation stage (``test`` may add per-class scores to ``val``'s); logged with
        a ``val/`` or ``test/`` prefix, computed once per epoch. A metric may compute a dict of scores.

        Updates should not read values back to the host (no per-batch GPU sync): torchmetrics' classification
        metrics need ``validate_args=False`` for that, which is safe as the data module checked the labels.
        """

    # --- fine-tuning strategies -----------------------------------------------------------------------------

    def _check_strategies(self) -> None:
        h = self.hparams
        if not 0.0 < h.layer_lr_decay <= 1.0:
            raise ConfigError("model.layer_lr_decay", f"must be in (0, 1], got {h.layer_lr_decay}")
        for key in ("freeze_layers", "reinit_layers", "lora_rank"):
            if h[key] < 0:
                raise ConfigError(f"model.{key}", f"must be >= 0, got {h[key]}")
        if h.l2sp_alpha < 0:
            raise ConfigError("model.l2sp_alpha", f"must be >= 0, got {h.l2sp_alpha}")
        if h.lora_rank and h.l2sp_alpha:
            raise ConfigError("model.l2sp_alpha", "LoRA freezes the backbone, so L2-SP has nothing to pull: use one")
        if h.lora_rank and (h.freeze_backbone or h.freeze_embeddings or h.freeze_layers):
            raise ConfigError("model.lora_rank", "LoRA already freezes the backbone: drop the freeze_* keys")
        if h.freeze_backbone and h.l2sp_alpha:
            raise ConfigError("model.l2sp_alpha", "the backbone is frozen, so L2-SP has nothing to pull: use one")

    def _apply_strategies(self, pretrained: bool) -> None:
        """Re-initialise, freeze, anchor L2-SP and add LoRA, in that order, on the freshly built backbone."""
        h = self.hparams
        parts = anatomy(self.model)
        if pretrained and h.get("keep_layers") is not None:
            # Rebuilt from a checkpoint, the model is already of the kept depth (its config says so).
            strategies.keep_layers(self.model, parts, h.keep_layers)
            parts = anatomy(self.model)
        if h.get("prune_heads"):
            # Rebuilt from a checkpoint too: its config says the full width, its weights are the narrower ones.
            before = sum(p.numel() for p in self.model.parameters())
            removed = strategies.prune_heads(self.model, parts, h.prune_heads)
            after = sum(p.numel() for p in self.model.parameters())
            if pretrained:
                rank_zero_info(f"ftlit: {removed} attention heads removed, {before:,} -> {after:,} parameters")
        # Layers that share their weights (ALBERT) have no per-layer strategies: one line, before anything changes.
        strategies.check_per_layer(parts, h.freeze_layers, h.reinit_layers, h.layer_lr_decay)
        n = len(parts.layers)
        for key in ("freeze_layers", "reinit_layers"):
            if h[key] > n:
                raise ConfigError(f"model.{key}", f"{h[key]} is more than the model's {n} layers")
        if h.reinit_pooler and not parts.pooler:
            raise ConfigError("model.reinit_pooler", f"{type(self.model).__name__} has no pooler: drop the key")
        if pretrained and (h.reinit_layers or h.reinit_pooler):
            strategies.reinit_top_layers(self.model, parts, h.reinit_layers, h.reinit_pooler)
        strategies.freeze(parts, h.freeze_backbone, h.freeze_embeddings, h.freeze_layers)
        self.l2sp: strategies.L2SP | None = None
        if h.l2sp_alpha and pretrained:
            # Re-initialised layers have no pretrained values to stay near.
            fresh = (
                {id(p) for m in parts.layers[n - h.reinit_layers :] for p in m.parameters()}
                if h.reinit_layers
                else set()
            )
            anchored = [p for m in parts.backbone for p in m.parameters() if p.requires_grad and id(p) not in fresh]
            self.l2sp = strategies.L2SP(anchored, h.l2sp_alpha)
        if h.lora_rank:
            self.model = strategies.apply_lora(
                self.model, parts, h.lora_rank, h.lora_alpha, h.lora_dropout, h.lora_target_modules
            )
            trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in self.model.parameters())
            rank_zero_info(f"LoRA: training {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)")

    def anatomy(self) -> Anatomy:
        """Embeddings, layers, other backbone modules and head of the task model."""
        return anatomy(self.model)

    def build_test_details(self) -> dict[str, Metric]:
        """What ``test`` records beyond single scores (confusion matrix, curves), updated like the metrics and
        written to ``test-results.json`` through :meth:`describe_test_details`; none by default."""
        return {}

    def describe_test_details(self, values: dict[str, Any]) -> dict[str, Any]:
        """The computed test details (name -> the metric's ``compute()``) as plain data for the results file."""
        return {}

    @abstractmethod
    def loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The task loss of a batch."""

    @abstractmethod
    def update_metrics(self, logits: torch.Tensor, batch: dict[str, Any], metrics: MetricCollection) -> None:
        """Feed one evaluation batch to the task's metrics (those of :meth:`build_metrics`)."""

    def loss_weight(self, batch: dict[str, torch.Tensor]) -> int | torch.Tensor:
        """How many terms the batch's mean loss averages (rows by default), so evaluation losses are exact means
        whatever the batch size or number of ranks."""
        return batch["input_ids"].shape[0]

    # --- steps ----------------------------------------------------------------------------------------------

    def distill_mask(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """Where the distillation loss is taken, for a task whose logits are per token; ``None``: every row."""
        return None

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The batch's tensors the backbone takes: its tokenizer's ``model_input_names`` that its ``forward``
        accepts. Targets (``labels``, answer positions) and the task's ``meta`` never reach it."""
        return {k: batch[k] for k in self.input_names if k in batch}

    @override
    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The backbone's logits for a batch."""
        return self.model(**self.model_inputs(batch)).logits

    def check_data(self, datamodule: Any) -> None:
        """Refuse data this model cannot train on, before any work: the CLI calls it before a fit starts (and
        ``on_fit_start`` again, for fits started from Python). A task that needs more than its data module's
        checks adds them here."""

    def attach_data(self, datamodule: TaskDataModule) -> None:
        """Take from the data module what predicting needs beyond the batches (a Trainer calls it from ``setup``;
        ``ftlit serve``, which runs no Trainer, directly). Nothing by default."""

    @override
    def on_fit_start(self) -> None:
        self.check_data(self.trainer.datamodule)
        if self.hparams.l2sp_alpha and self.l2sp is None:
            raise ConfigError("model.l2sp_alpha", "L2-SP needs the pretrained weights: train with model.backbone")
        self._directions_written = False
        if self.teacher is not None and self.hparams.distill_cache:
            datamodule = self.trainer.datamodule
            root = datamodule.cache_dir if isinstance(datamodule, TaskDataModule) else Path(default_cache_dir())
            fingerprint = self.teacher.fingerprint()
            self.teacher.cache = distillation.LogitCache(root / "teacher-logits", fingerprint, self.global_rank)

    @override
    def on_train_end(self) -> None:
        if self.teacher is not None and self.teacher.cache is not None:
            self.teacher.cache.save()

    @override
    def configure_model(self) -> None:
        if self.hparams.compile and not hasattr(self.model.forward, "_torchdynamo_orig_callable"):
            # Compiling the bound forward keeps parameter names (and so checkpoints) unchanged.
            self.model.forward = torch.compile(self.model.forward, dynamic=True)

    @override
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.hparams.compile and self.global_step == 0 and batch_idx == 0:
            self._first_step_start = time.perf_counter()

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.hparams.compile and getattr(self, "_first_step_start", None) is not None:
            seconds = time.perf_counter() - self._first_step_start
            self._first_step_start = None
            rank_zero_info(f"torch.compile: first step took {seconds:.1f} s (compilation included)")
            self.log("perf/first_step_seconds", seconds, rank_zero_only=True)

    @override
    def configure_callbacks(self) -> list[Callback]:
        # Always on, whatever the config says: exact resume, a clean stop on SIGTERM/SIGINT, a saved end, timing.
        return [RNGState(), GracefulStop(), FinalState(), RunClock()]

    def logged_metrics(self) -> set[str]:
        """Every metric a fit of this model logs, which ModelCheckpoint and EarlyStopping may monitor."""
        return {"train/loss", "val/loss", *self.evaluation_metrics("val").keys()}

    def evaluation_metrics(self, stage: Literal["val", "test"]) -> MetricCollection:
        """The metrics of an evaluation stage, built by :meth:`build_metrics` the first time (at the latest in
        :meth:`setup`, so they follow the model to its device)."""
        if stage not in self.metrics:
            self.metrics[stage] = self.build_metrics(stage).clone(prefix=f"{stage}/")
        return self.metrics[stage]

    @property
    def val_metrics(self) -> MetricCollection:
        return self.evaluation_metrics("val")

    @property
    def test_metrics(self) -> MetricCollection:
        return self.evaluation_metrics("test")

    @override
    def setup(self, stage: str) -> None:
        for evaluated in EVALUATED.get(stage, ()):
            self.evaluation_metrics(evaluated)

    def training_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The task loss of a training batch (logged as ``train/loss``), any term a strategy adds to what is
        minimised (logged by the task itself) or ``None``, and the logits (a teacher's target, when distilling)."""
        logits = self(batch)
        return self.loss(logits, batch), None, logits

    @override
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, extra, logits = self.training_loss(batch)
        objective = loss
        if self.teacher is not None:
            h = self.hparams
            teacher = self.teacher.logits(self.model_inputs(batch))
            distill = distillation.kd_loss(
                logits, teacher, h.distill_temperature, self.distill_kind, self.distill_mask(batch)
            )
            self.log("train/distill_loss", distill, batch_size=batch["input_ids"].shape[0])
            objective = h.distill_alpha * loss + (1 - h.distill_alpha) * distill
        total = objective if extra is None else objective + extra
        # Stop before a non-finite loss reaches the weights (and any checkpoint); every rank must agree.
        if not self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(total)), all=True):
            raise TrainingError(
                f"training loss is {total.item()} at step {self.global_step} (epoch {self.current_epoch}): "
                "lower model.learning_rate, set trainer.gradient_clip_val, or use 32-true precision; "
                "the checkpoints written so far are untouched"
            )
        n = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        if self.l2sp is not None:
            penalty = self.l2sp()
            self.log("train/l2sp", penalty, batch_size=n)
            total = total + penalty
        return total

    def _eval_step(self, batch: dict[str, Any], stage: Literal["val", "test"], loss: MeanMetric) -> None:
        logits = self(batch)
        loss.update(self.loss(logits, batch), weight=self.loss_weight(batch))
        self.log(f"{stage}/loss", loss)
        self.update_metrics(logits, batch, self.evaluation_metrics(stage))
        if stage == "test" and self.test_details() is not None:
            self.update_metrics(logits, batch, self.test_details())

    def test_details(self) -> MetricCollection | None:
        """The test's details (:meth:`build_test_details`), built the first time; ``None`` for a task without."""
        if self.details is None:
            built = self.build_test_details()
            # No compute groups: each detail is computed on its own, with its own states.
            self.details = MetricCollection(built, compute_groups=False) if built else None
        return self.details

    def _compute_metrics(self, stage: Literal["val", "test"]) -> tuple[dict[str, torch.Tensor], dict[str, bool | None]]:
        """Every score of the stage (a metric computing a dict gives one score per key, as MetricCollection names
        them), and whether higher is better for each: torchmetrics' ``higher_is_better`` of the metric that computes
        it (a wrapper's, of what it wraps), ``None`` where a metric does not say."""
        values: dict[str, torch.Tensor] = {}
        directions: dict[str, bool | None] = {f"{stage}/loss": False}
        for name, metric in self.evaluation_metrics(stage).items(keep_base=True, copy_state=False):
            better = getattr(metric, "higher_is_better", None)
            if better is None:
                better = getattr(getattr(metric, "metric", None), "higher_is_better", None)
            out = metric.compute()
            for key, value in out.items() if isinstance(out, dict) else [(name, out)]:
                values[f"{stage}/{key}"], directions[f"{stage}/{key}"] = value, better
        return values, directions

    def _log_metrics(self, stage: Literal["val", "test"]) -> tuple[dict[str, torch.Tensor], dict[str, bool | None]]:
        """Compute the stage's metrics once (one sync) and log every score, then start the next epoch afresh."""
        values: dict[str, torch.Tensor] = {}
        directions: dict[str, bool | None] = {}
        # Two sanity-check batches make no number worth computing (QA would score most questions 0 and warn).
        if not self.trainer.sanity_checking:
            values, directions = self._compute_metrics(stage)
            # Equal on every process already (the states were gathered); sync_dist only averages equal values.
            self.log_dict(values, prog_bar=stage == "val", sync_dist=True)
        self.evaluation_metrics(stage).reset()
        return values, directions

    def _write_directions(self, directions: dict[str, bool | None]) -> None:
        """``metric-directions.json`` in the run folder, once per fit: which way each logged metric is better, for
        ``ftlit plot`` and ``ftlit report`` (not guessed from its name)."""
        if getattr(self, "_directions_written", True) or not directions:
            return
        self._directions_written = True
        if self.trainer.is_global_zero:
            known = {"train/loss": False, "train/l2sp": False, **directions}
            write_json(Path(self.trainer.default_root_dir) / DIRECTIONS, known)

    def _write_test_results(self, values: dict[str, torch.Tensor], directions: dict[str, bool | None]) -> None:
        """``test-results.json`` in the run folder: every test score, the details, and what was tested on what."""
        details = self.test_details()
        computed = {}
        if details is not None:
            computed = {name: metric.compute() for name, metric in details.items(keep_base=True, copy_state=False)}
            details.reset()
        datamodule = self.trainer.datamodule
        scores = {"test/loss": self.test_loss.compute(), **values}
        results = {
            "task": class_path(type(self)),
            "ckpt_path": self.trainer.ckpt_path,
            "data": datamodule.describe_split("test") if isinstance(datamodule, TaskDataModule) else None,
            "labels": self.label_names,
            "metrics": {k: float(v) for k, v in scores.items()},
            "higher_is_better": {k: directions.get(k) for k in scores},
            **self.describe_test_details(computed),
        }
        if self.trainer.is_global_zero:
            write_results(self.trainer.default_root_dir, results)

    @override
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_loss)

    @override
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_loss)

    @override
    def on_validation_epoch_end(self) -> None:
        values, directions = self._log_metrics("val")
        if self.trainer.state.fn == "fit":
            self._write_directions(directions)

    @override
    def on_test_epoch_end(self) -> None:
        self._write_test_results(*self._log_metrics("test"))

    # --- backbone -------------------------------------------------------------------------------------------

    def _build_backbone(self) -> PreTrainedModel:
        saved, trusted = _SAVED_BACKBONE.get(), self.hparams.trust_remote_code
        if saved is not None:
            self._tokenizer_files, self._code_files = saved["tokenizer"], saved.get("code") or {}
            if not trusted and backbone.ships_code(saved["config"], self._tokenizer_files, self._code_files):
                # Trust is the caller's, given now: the checkpoint's own trust_remote_code is never read.
                raise ConfigError(
                    "trust_remote_code",
                    "the checkpoint's model ships its own Python code, which runs when it is rebuilt: pass "
                    "trust_remote_code=True (ftlit export --trust_remote_code) only if you trust its source",
                )
            where = saved.get("where", "the checkpoint")
            with tempfile.TemporaryDirectory() as tmp:
                backbone.unpack(tmp, saved["config"], saved["tokenizer"], self._code_files)
                with backbone.reading_packed("model config", where):
                    config = AutoConfig.from_pretrained(tmp, trust_remote_code=trusted)
                    # Built inside the folder: a model class from the model's own code is read from there.
                    model = build_with_attention(self.auto_class.from_config, config, trust_remote_code=trusted)
                with backbone.reading_packed("tokenizer", where):
                    tokenizer = backbone.load_tokenizer(tmp, "ckpt_path", trust_remote_code=trusted)
                self.input_names = accepted_inputs(model, tokenizer.model_input_names)
                return model
        source = backbone.resolve(self.hparams.backbone)
        config = backbone.load_config(source, trust_remote_code=trusted)
        tokenizer = backbone.load_tokenizer(source, "model.backbone", trust_remote_code=trusted)
        self._tokenizer_files = backbone.pack_tokenizer(tokenizer)
        self.input_names = tokenizer.model_input_names
        model, _ = self._load_weights(source, config, "model.backbone")
        init_from = self.hparams.get("init_from")
        if init_from is None:
            return model
        # Cascaded fine-tuning: init_from's weights over the backbone's (which fill what init_from lacks, e.g. the
        # pooler a masked-LM model has not), then its head kept, reordered or replaced.
        with warm_start.source_folder(init_from, trusted) as folder:
            start = backbone.load_config(str(folder), warm_start.FIELD, trust_remote_code=trusted)
            warm_start.check_architecture(init_from, start, self.hparams.backbone, config)
            weights, loading = self._load_weights(str(folder), copy.deepcopy(start), warm_start.FIELD, quiet=True)
        filled = warm_start.carry_over(model, weights, loading)
        head = warm_start.fit_head(model, start, self.label_names)
        rank_zero_info(f"ftlit: {head}" + (f"; {filled}" if filled else ""))
        self._init_from = warm_start.provenance(init_from, start, head)
        return model

    def _load_teacher(self) -> distillation.Teacher:
        trusted = self.hparams.trust_remote_code
        tokenizer = backbone.load_tokenizer(backbone.resolve(self.hparams.backbone), trust_remote_code=trusted)
        # Loading draws random numbers (the weights are initialised before they are read): not from the run's
        # stream, so dropout masks and the rest do not depend on whether a teacher is there.
        with torch.random.fork_rng(devices=[]):
            return self._read_teacher(tokenizer)

    def _read_teacher(self, tokenizer: Any) -> distillation.Teacher:
        return distillation.Teacher.load(
            self.hparams.teacher,
            list(self.label_names or []),
            tokenizer,
            sum(p.numel() for p in self.model.parameters()),
            list(self.input_names),
            trust_remote_code=self.hparams.trust_remote_code,
            auto_class=self.auto_class,
        )

    def _load_weights(
        self, source: str, config: PretrainedConfig, field: str, quiet: bool = False
    ) -> tuple[PreTrainedModel, dict[str, Any]]:
        """The task model with ``source``'s weights, its config fitted to the task (:meth:`configure_backbone`),
        and transformers' loading info (missing and mismatched keys)."""
        trusted = self.hparams.trust_remote_code
        # A backbone fine-tuned before (a 2-label classifier as the start of a 3-label one) keeps its encoder and
        # gets a new head: said in one line instead of transformers' size-mismatch traceback. transformers' load
        # report (a table of MISSING weights, which a newcomer reads as a fault) is said in ftlit's words below.
        with backbone.quiet() if quiet else quiet_output.load_report_hidden():
            model, loading = build_with_attention(
                self.auto_class.from_pretrained,
                source,
                config=self.configure_backbone(config),
                dtype=torch.float32,
                trust_remote_code=trusted,
                ignore_mismatched_sizes=True,
                output_loading_info=True,
            )
        if not quiet:
            report = backbone.describe_load(model, loading, source, field)
            for line in report.said:
                rank_zero_info(line)
            for line in report.problems:
                rank_zero_warn(line)
        self._code_files = backbone.pack_code(model, model.config)
        self.input_names = accepted_inputs(model, list(self.input_names))
        return model, loading

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The backbone config and tokenizer (and code, for a model with its own) travel inside every checkpoint,
        # so it rebuilds with no network and without the original folder.
        checkpoint["ftlit"] = {"config": self.model.config.to_dict(), "tokenizer": self._tokenizer_files}
        # Every row a checkpoint has trained on has its teacher logits on disk: a resumed run reads the same values.
        if getattr(self, "teacher", None) is not None and self.teacher.cache is not None:
            self.teacher.cache.save()
        if getattr(self, "_init_from", None):
            checkpoint["ftlit"]["init_from"] = self._init_from
        if self._code_files:
            checkpoint["ftlit"]["code"] = self._code_files

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        upgrade_loader_state(checkpoint)
        self._init_from = checkpoint.get("ftlit", {}).get("init_from", getattr(self, "_init_from", None))
        saved = checkpoint.get("hyper_parameters", {}).get("label_names")
        if saved != self.label_names:
            raise ConfigError(
                "data.labels",
                f"the checkpoint was trained with labels {saved}, the data gives {self.label_names}: "
                "use the same labels (list them in data.labels)",
            )

    @override
    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, map_location: Any = None, trust_remote_code: bool = False, **kwargs: Any
    ):
        """Rebuild a model from its checkpoint alone: no Hub access and no original model folder needed. Called on
        ``FineTuneModule`` itself, it rebuilds the task class the checkpoint names.

        Args:
            checkpoint_path: An ftlit checkpoint.
            map_location: Where to load the tensors (as ``torch.load``).
            trust_remote_code: Let a model that ships its own Python code run it. The checkpoint's saved value is
                never used: a file cannot grant itself the right to run code.
            **kwargs: Hyperparameters to override.
        """
        ckpt = read_checkpoint(checkpoint_path)
        if inspect.isabstract(cls):
            # FineTuneModule.load_from_checkpoint(path): the task class the checkpoint was trained as.
            name = ckpt.get("hyper_parameters", {}).get("_class_path")
            found = find_class(name, imported_only=True) if isinstance(name, str) else None
            if found is None or not issubclass(found, cls) or inspect.isabstract(found):
                raise ConfigError(
                    "ckpt_path",
                    f"'{checkpoint_path}' names no ftlit task model ({name!r}): call load_from_checkpoint on the "
                    "task's class, e.g. ftlit.tasks.text.SequenceClassifier",
                )
            return found.load_from_checkpoint(
                checkpoint_path, map_location=map_location, trust_remote_code=trust_remote_code, **kwargs
            )
        where = f"'{checkpoint_path}'"
        # Where it came from rides along, for errors that name the checkpoint.
        token = _SAVED_BACKBONE.set({**saved_backbone(ckpt, where), "where": where})
        try:
            with upstream.own_hyperparameters():
                return super().load_from_checkpoint(
                    checkpoint_path, map_location=map_location, trust_remote_code=trust_remote_code, **kwargs
                )
        except ValueError as err:
            # jsonargparse wraps errors raised while it rebuilds the model: surface ftlit's own.
            raise (config_error_in(err) or err) from None
        finally:
            _SAVED_BACKBONE.reset(token)

    # --- optimization ---------------------------------------------------------------------------------------

    def param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters grouped by depth (for layer-wise learning rates) and by weight decay.

        Biases and LayerNorm weights get no weight decay. Parameters frozen by a ``freeze_*`` key are left out;
        parameters a callback thaws later are in from the start, so their groups and schedule are fixed.
        """
        parts = self.anatomy()
        no_decay = {id(p) for m in self.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters(recurse=False)}
        return strategies.layerwise_groups(
            ((n, p) for n, p in self.model.named_parameters() if p.requires_grad),
            parts.depth_of_parameters(),
            len(parts.layers),
            lr=self.hparams.learning_rate,
            decay=self.hparams.layer_lr_decay,
            head_lr=self.hparams.head_lr,
            weight_decay=self.hparams.weight_decay,
            no_decay=no_decay,
        )

    @property
    def _scaled_clip(self) -> bool:
        """Whether gradients are clipped under a loss scaler (16-mixed): a fused optimizer would unscale them only
        inside its step, after the clip, so the plain loop is used then."""
        plugin = self._trainer.precision_plugin if self._trainer is not None else None
        scaler = getattr(plugin, "scaler", None) if isinstance(plugin, MixedPrecision) else None
        return scaler is not None and bool(self.trainer.gradient_clip_val)

    @override
    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        plugin = self.trainer.precision_plugin
        if gradient_clip_val and isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            # bf16 autocast has no loss scaler, so the gradients are already true ones and clipping them is exact;
            # Lightning refuses any clipping with a fused optimizer under mixed precision, which would make every
            # bf16 run with the default clip fail at its first step.
            algorithm = GradClipAlgorithmType(gradient_clip_algorithm or GradClipAlgorithmType.NORM)
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    @override
    def configure_optimizers(self) -> dict[str, Any]:
        cls = _optimizer_class(self.hparams.optimizer)
        kwargs: dict[str, Any] = {"lr": self.hparams.learning_rate}
        if (
            "fused" in inspect.signature(cls).parameters
            and self.device.type in _FUSED_DEVICES
            and not self._scaled_clip
        ):
            # One kernel over all parameters instead of a loop over tensors (MiniLM on a CPU: 8.5 ms a step
            # against 73 ms); the Trainer's default optimizer is the fused AdamW too.
            kwargs["fused"] = True
        optimizer = cls(self.param_groups(), **kwargs)
        total = int(self.trainer.estimated_stepping_batches)
        # Estimating builds the train loader before a checkpoint's loop state is restored, and Lightning then
        # never hands that loader its saved position: a resumed epoch would replay from its first batch.
        # Dropping it makes the fit loop build it again after the restore, with the position loaded.
        upstream.drop_train_loader(self.trainer)
        warmup = self.hparams.warmup_steps or math.ceil(self.hparams.warmup_ratio * total)
        if self.hparams.warmup_steps > total:
            raise ConfigError(
                "model.warmup_steps",
                f"{self.hparams.warmup_steps} is more than the run's {total} optimizer steps: the learning rate would "
                "never reach its peak; lower it or use warmup_ratio",
            )
        scheduler = get_scheduler(
            _SCHEDULERS[self.hparams.scheduler], optimizer, num_warmup_steps=warmup, num_training_steps=total
        )
        # transformers' schedules are per-step LambdaLRs: without interval="step" they would move once per epoch.
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
