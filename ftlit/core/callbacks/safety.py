"""Stopping safely: on SIGTERM/SIGINT save a checkpoint and stop; at the end of a fit, its final state is saved."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from ftlit import upstream


class GracefulStop(Callback):
    """On SIGTERM (preemption, ``kill``) or SIGINT (Ctrl-C): finish the current step, write ``last.ckpt`` and stop.

    ``--ckpt_path last`` then resumes exactly there. A second signal stops at once, as usual. Lightning's own SIGTERM
    handling stops the loops but saves nothing unless ``ModelCheckpoint(save_on_exception=True)``, and exits with 0,
    so a scheduler cannot tell a preempted run from a finished one (ftlit exits with 128 + the signal).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self.stopped = False  # on every rank, also those that did not receive the signal themselves
        self.step = 0
        self._previous: dict[int, Any] = {}

    @property
    def signal(self) -> int:
        """The signal that stopped the run (SIGTERM when it reached another rank)."""
        return self.received or signal.SIGTERM

    def describe(self) -> str:
        """One line for the user: what stopped the run, where, and how to go on."""
        return (
            f"stopped by {signal.Signals(self.signal).name} at step {self.step}; last.ckpt is saved: "
            "resume with --ckpt_path last"
        )

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        for sig, handler in self._previous.items():  # a second signal gets the usual behaviour
            signal.signal(sig, handler)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received, self.stopped = None, False
        try:
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        except ValueError:  # not the main thread (e.g. a notebook worker): leave signals alone
            self._previous = {}

    @override
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
        self.stopped, self.step = True, trainer.global_step

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class FinalState(Callback):
    """The end of every fit is validated and in ``last.ckpt``, also when ``max_steps`` ends it mid-epoch.

    Lightning validates and checkpoints at epoch ends (or every ``val_check_interval``): a run that stops at
    ``max_steps`` in the middle of an epoch would end unvalidated (EarlyStopping then fails on the missing metric)
    and its last steps would be saved nowhere.
    """

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        epoch_loop = trainer.fit_loop.epoch_loop
        if 0 < trainer.max_steps <= trainer.global_step and not epoch_loop.batch_progress.is_last_batch:
            # A stop request makes the epoch loop validate now (when this epoch validates at all), and the
            # checkpoint callbacks save after that validation.
            trainer.should_stop = True

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # A fit stopped mid-epoch (max_steps, SIGTERM) has marked that epoch processed by the time it saves; saved as
        # is, a resumed fit would count the epoch as done and end one epoch early. Saved as any mid-epoch checkpoint.
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
        for tracker in (progress.get("total"), progress.get("current")):
            if isinstance(tracker, dict) and tracker.get("processed", 0) > tracker.get("completed", 0):
                tracker["processed"] = tracker["completed"]

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        if not isinstance(checkpoint, ModelCheckpoint) or not checkpoint.save_last or not checkpoint.dirpath:
            return
        last = os.path.join(checkpoint.dirpath, "last.ckpt")
        saved = trainer.global_step == upstream.last_step_saved(checkpoint) and os.path.isfile(last)
        if not saved and trainer.global_step > 0:
            trainer.save_checkpoint(last)
