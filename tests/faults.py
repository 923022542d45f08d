"""Faults injected into real runs by the tests (loaded as ``--trainer.callbacks+=faults.<Name>``)."""

from __future__ import annotations

import math
import os
import signal
import time

import lightning.pytorch as pl
import torch


class SignalAt(pl.Callback):
    """Send this process a real signal after optimizer step ``step`` (SIGKILL: no chance to clean up)."""

    def __init__(self, step: int, signum: int = int(signal.SIGKILL)) -> None:
        self.step = step
        self.signum = signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class PoisonAt(pl.Callback):
    """Turn one weight into NaN after optimizer step ``step``, as a diverging run would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(math.nan)


class RaiseAt(pl.Callback):
    """Raise an unexpected error (a bug, not bad input) after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"injected bug at step {self.step}")


class Slow(pl.Callback):
    """Sleep ``seconds`` after every training batch: a tiny run that lasts long enough to be stopped mid-epoch."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
