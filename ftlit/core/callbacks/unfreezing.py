"""Gradual layer unfreezing (ULMFiT, Howard & Ruder 2018): the head first, then one encoder layer at a time,
top down, the embeddings last."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim import Optimizer
from typing_extensions import override

from ftlit import upstream
from ftlit.core import strategies
from ftlit.errors import ConfigError


class GradualUnfreezing(BaseFinetuning):
    """Thaw one more encoder layer, top down, every ``every_n_epochs`` epochs or at each of ``step_milestones``.

    Unlike Lightning's ``BaseFinetuning`` recipe, the thawed state is a pure function of training progress and
    every parameter sits in the optimizer from the start (frozen ones have no gradient, so the optimizer skips
    them): a resumed run has exactly the layers trainable, the param groups and the learning rates it had before
    the stop (Lightning re-freezes on resume, #21901), layer-wise learning rates apply to thawed layers as if they
    had trained from the start, and every DDP rank computes the same state.
    """

    def __init__(
        self,
        initial_layers: int = 0,
        every_n_epochs: int = 1,
        step_milestones: list[int] | None = None,
        thaw_warmup_steps: int = 0,
    ) -> None:
        """
        Args:
            initial_layers: Encoder layers trainable from the start, counted from the top (the head always is).
            every_n_epochs: Thaw the next layer every this many epochs (ignored with ``step_milestones``).
            step_milestones: Optimizer steps at which the next layer thaws, e.g. ``[100, 200, 300]``.
            thaw_warmup_steps: Ramp a newly thawed layer's learning rate up from 0 over this many steps, so fresh
                Adam statistics do not meet a full-size step.
        """
        super().__init__()
        if initial_layers < 0 or every_n_epochs < 1 or thaw_warmup_steps < 0:
            raise ConfigError("GradualUnfreezing", "initial_layers, thaw_warmup_steps >= 0 and every_n_epochs >= 1")
        if step_milestones is not None and sorted(step_milestones) != step_milestones:
            raise ConfigError("GradualUnfreezing.step_milestones", f"must be increasing, got {step_milestones}")
        self.initial_layers = initial_layers
        self.every_n_epochs = every_n_epochs
        self.step_milestones = step_milestones
        self.thaw_warmup_steps = thaw_warmup_steps
        self.stage = -1  # not applied yet
        self.thawed_at: dict[str, int] = {}  # part name -> global step it thawed at

    # --- the schedule ---------------------------------------------------------------------------------------

    def stage_for(self, epoch: int, step: int) -> int:
        """How many thawing steps have happened by ``epoch``/``step``."""
        if self.step_milestones is not None:
            return sum(1 for m in self.step_milestones if step >= m)
        return epoch // self.every_n_epochs

    @staticmethod
    def trainable_parts(n_layers: int, initial_layers: int, stage: int) -> list[str]:
        """Backbone parts trainable at ``stage``: the top ``initial_layers + stage`` layers, then the embeddings."""
        thawed = min(n_layers, initial_layers + stage)
        parts = [f"layer.{i}" for i in range(n_layers - thawed, n_layers)]
        return parts + (["embeddings"] if initial_layers + stage > n_layers else [])

    @override
    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self._apply(pl_module, 0, step=0)

    @override
    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        self._apply(pl_module, self.stage_for(epoch, pl_module.trainer.global_step), pl_module.trainer.global_step)

    def _apply(self, pl_module: pl.LightningModule, stage: int, step: int) -> None:
        if stage == self.stage:
            return
        parts = pl_module.anatomy()
        modules = {"embeddings": parts.embeddings, **{f"layer.{i}": m for i, m in enumerate(parts.layers)}}
        trainable = set(self.trainable_parts(len(parts.layers), self.initial_layers, stage))
        for name, module in modules.items():
            if name in trainable:
                self.make_trainable(module)
                if stage > 0 and name not in self.thawed_at:
                    self.thawed_at[name] = step
            else:
                self.freeze(module, train_bn=True)
        self.stage = stage

    # --- Lightning hooks ------------------------------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Not BaseFinetuning.setup: freezing there happens before a checkpoint's state is loaded.
        h = pl_module.hparams
        if h.get("lora_rank") or h.get("freeze_backbone") or h.get("freeze_embeddings") or h.get("freeze_layers"):
            raise ConfigError("GradualUnfreezing", "cannot thaw what model.freeze_* or LoRA keep frozen: use one")
        ddp = isinstance(trainer.strategy, DDPStrategy) and trainer.world_size > 1
        if ddp and not upstream.ddp_finds_unused_parameters(trainer.strategy):
            raise ConfigError(
                "trainer.strategy",
                "frozen layers get no gradients under DDP: use strategy ddp_find_unused_parameters_true",
            )
        parts = pl_module.anatomy()
        strategies.refuse_shared_layers(parts, "GradualUnfreezing")  # ALBERT: one set of weights for all layers
        n_layers = len(parts.layers)
        planned = len(self.step_milestones) if self.step_milestones is not None else None
        needed = n_layers - self.initial_layers + 1
        if planned is not None and planned > needed:
            rank_zero_warn(f"GradualUnfreezing: {planned} milestones, but all is thawed after {needed}")

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not BaseFinetuning.on_fit_start: the param groups never change, so there is nothing to rebuild.
        return

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After a checkpoint has restored the loops: re-apply the stage the run had reached.
        self.stage = -1
        self._apply(pl_module, self.stage_for(trainer.current_epoch, trainer.global_step), trainer.global_step)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.finetune_function(pl_module, trainer.current_epoch, trainer.optimizers[0])

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.step_milestones is not None:
            self.finetune_function(pl_module, trainer.current_epoch, trainer.optimizers[0])

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        if not self.thaw_warmup_steps:
            return
        # The scheduler sets every group's lr after each step, so scaling here lasts for this step only.
        for group in optimizer.param_groups:
            since = self.thawed_at.get(group.get("name", "").split("/")[0])
            if since is not None and trainer.global_step - since < self.thaw_warmup_steps:
                group["lr"] *= (trainer.global_step - since + 1) / (self.thaw_warmup_steps + 1)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "thawed_at": dict(self.thawed_at)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.thawed_at = dict(state_dict.get("thawed_at", {}))
