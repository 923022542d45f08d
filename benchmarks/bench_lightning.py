"""A Lightning callback that times ftlit's training steps with the shared ``StepTimer``.

Added to a real ``ftlit fit`` run with ``--trainer.callbacks+=bench_lightning.StepTiming`` and ``benchmarks/`` on
``PYTHONPATH``. Assumes ``accumulate_grad_batches: 1`` (one batch per optimizer step), as every profile does.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from bench_timing import StepTimer, cuda_sync
from lightning.pytorch.callbacks import Callback


class StepTiming(Callback):
    """Records epoch and step boundaries and the non-padding tokens of every training batch."""

    def __init__(self, warmup_steps: int = 1) -> None:
        """
        Args:
            warmup_steps: Leading steps reported apart from the steady-state rates.
        """
        self.warmup_steps = warmup_steps
        self.timer = StepTimer(warmup_steps=warmup_steps)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer = StepTimer(cuda_sync(pl_module.device.type), self.warmup_steps)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.epoch_start()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # The batch is already on the device: sum the mask there and read it at the end (no per-step sync).
        ids = batch["input_ids"]
        self.timer.step_end(int(ids.shape[0]), batch["attention_mask"].sum(), ids.numel())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.epoch_end()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.train_end()
