"""What every task model shares: the backbone, optimizer groups, the schedule and self-contained checkpoints."""

from __future__ import annotations

import contextvars
import importlib
import math
import tempfile
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, get_scheduler

from ftlit import backbone
from ftlit.errors import ConfigError

SchedulerName = Literal["linear", "cosine", "constant", "polynomial"]
# transformers' names for our schedules; all of them warm up linearly first.
_SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup", "polynomial": "polynomial"}

# Set while a model is rebuilt from a checkpoint: the backbone comes from the checkpoint's saved config,
# never from the Hub or the original folder (which may be gone).
_SAVED_BACKBONE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("ftlit_saved_backbone", default=None)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only``), with a clear error for missing or foreign files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("ckpt_path", f"checkpoint '{path}' does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError("ckpt_path", f"'{path}' is not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or "ftlit" not in ckpt:
        raise ConfigError("ckpt_path", f"'{path}' is not an ftlit checkpoint")
    return ckpt


def _optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    module, _, cls = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module or "torch.optim"), cls)
    except (ImportError, AttributeError):
        found = None
    if not (isinstance(found, type) and issubclass(found, torch.optim.Optimizer)):
        raise ConfigError("model.optimizer", f"'{name}' is not a torch optimizer class: e.g. AdamW or torch.optim.SGD")
    return found


class FineTuneModule(pl.LightningModule):
    """Shared base of the task models. A subclass names its ``auto_class`` and says how to fit the config."""

    auto_class: Any = None  # e.g. transformers.AutoModelForSequenceClassification

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
    ) -> None:
        """
        Args:
            backbone: Pretrained model: a Hub name (``bert-base-uncased``), a local folder, or
                ``package:<module>/<folder>`` for a model shipped inside an installed Python package.
            label_names: Label names in id order; the CLI links them from the data module.
            learning_rate: Peak learning rate, reached at the end of warmup.
            weight_decay: Decoupled weight decay; never applied to biases and LayerNorm weights.
            optimizer: ``torch.optim`` class name or full class path; AdamW is fused on CUDA.
            scheduler: Learning-rate decay after warmup, stepped every optimizer step.
            warmup_ratio: Share of all training steps spent warming up linearly from 0.
            warmup_steps: Warmup length in steps; overrides ``warmup_ratio`` when above 0.
            head_dropout: Dropout before the task head (default: the backbone's own).
        """
        super().__init__()
        self.save_hyperparameters()
        if learning_rate <= 0:
            raise ConfigError("model.learning_rate", f"must be positive, got {learning_rate}")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ConfigError("model.warmup_ratio", f"must be in [0, 1), got {warmup_ratio}")
        if warmup_steps < 0:
            raise ConfigError("model.warmup_steps", f"must be >= 0, got {warmup_steps}")
        _optimizer_class(optimizer)
        self.label_names = label_names
        self.model: PreTrainedModel = self._build_backbone()
        # from_pretrained returns eval mode, and Lightning keeps each module's mode: dropout would stay off.
        self.model.train()
        metrics = self.build_metrics()
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    # --- what a task supplies -------------------------------------------------------------------------------

    def configure_backbone(self, config: PretrainedConfig) -> PretrainedConfig:
        """Adapt the pretrained config to the task (number of labels, head dropout)."""
        return config

    def build_metrics(self) -> MetricCollection:
        """The task's metrics; cloned with ``val/`` and ``test/`` prefixes."""
        raise NotImplementedError

    # --- backbone -------------------------------------------------------------------------------------------

    def _build_backbone(self) -> PreTrainedModel:
        saved = _SAVED_BACKBONE.get()
        if saved is not None:
            with tempfile.TemporaryDirectory() as tmp:
                backbone.unpack(tmp, saved["config"], saved["tokenizer"])
                config = AutoConfig.from_pretrained(tmp)
            self._tokenizer_files = saved["tokenizer"]
            return self._sdpa(self.auto_class.from_config, config)
        source = backbone.resolve(self.hparams.backbone)
        config = self.configure_backbone(backbone.load_config(source))
        self._tokenizer_files = backbone.pack_tokenizer(backbone.load_tokenizer(source, "model.backbone"))
        return self._sdpa(self.auto_class.from_pretrained, source, config=config, dtype=torch.float32)

    @staticmethod
    def _sdpa(build, *args, **kwargs) -> PreTrainedModel:
        """Build with PyTorch's fused attention (SDPA) where the architecture supports it."""
        try:
            return build(*args, attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError):
            return build(*args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The backbone config and tokenizer travel inside every checkpoint, so it rebuilds with no network.
        checkpoint["ftlit"] = {"config": self.model.config.to_dict(), "tokenizer": self._tokenizer_files}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("label_names")
        if saved != self.label_names:
            raise ConfigError(
                "data.labels",
                f"the checkpoint was trained with labels {saved}, the data gives {self.label_names}: "
                "use the same labels (list them in data.labels)",
            )

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, map_location: Any = None, **kwargs: Any):  # type: ignore[override]
        """Rebuild a model from its checkpoint alone: no Hub access and no original model folder needed."""
        saved = read_checkpoint(checkpoint_path)["ftlit"]
        token = _SAVED_BACKBONE.set(saved)
        try:
            return super().load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)
        finally:
            _SAVED_BACKBONE.reset(token)

    # --- optimization ---------------------------------------------------------------------------------------

    def param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters split into weight-decay and no-decay (biases, LayerNorm) groups."""
        no_decay = {id(p) for m in self.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters(recurse=False)}
        decay, plain = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (plain if name.endswith("bias") or id(p) in no_decay else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.hparams.weight_decay}]
        if plain:
            groups.append({"params": plain, "weight_decay": 0.0})
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        cls = _optimizer_class(self.hparams.optimizer)
        kwargs: dict[str, Any] = {"lr": self.hparams.learning_rate}
        if cls is torch.optim.AdamW and self.device.type == "cuda":
            kwargs["fused"] = True
        optimizer = cls(self.param_groups(), **kwargs)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = self.hparams.warmup_steps or math.ceil(self.hparams.warmup_ratio * total)
        scheduler = get_scheduler(
            _SCHEDULERS[self.hparams.scheduler], optimizer, num_warmup_steps=warmup, num_training_steps=total
        )
        # transformers' schedules are per-step LambdaLRs: without interval="step" they would move once per epoch.
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
