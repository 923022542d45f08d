"""Stopping safely: on SIGTERM/SIGINT save a checkpoint and stop; on a non-finite loss stop before it spreads."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info


class GracefulStop(Callback):
    """On SIGTERM (preemption, ``kill``) or SIGINT (Ctrl-C): finish the current step, write ``last.ckpt`` and stop.

    ``--ckpt_path last`` then resumes exactly there. A second signal stops at once, as usual.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        for sig, handler in self._previous.items():  # a second signal gets the usual behaviour
            signal.signal(sig, handler)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received = None
        try:
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        except ValueError:  # not the main thread (e.g. a notebook worker): leave signals alone
            self._previous = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        # Every rank must agree to stop, or the others would wait forever in the next all-reduce.
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        checkpoint = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
        folder = checkpoint.dirpath if checkpoint and checkpoint.dirpath else trainer.default_root_dir
        path = os.path.join(folder, "last.ckpt")
        trainer.save_checkpoint(path)
        name = signal.Signals(self.received).name if self.received else "a signal on another rank"
        rank_zero_info(
            f"ftlit: received {name} at step {trainer.global_step}: saved {path}; resume with --ckpt_path last"
        )
        trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
