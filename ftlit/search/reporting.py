"""Inside a trial of ``ftlit tune``: report the monitored metric to the study after every validation, and stop a
trial the pruner gives up on.

``ftlit tune`` runs each trial as a plain ``ftlit fit`` in its own process and names the trial in the ``FTLIT_TRIAL``
environment variable (JSON: storage URL, study name, trial id and number, metric, pruner); the CLI then adds this
callback.
The trial's ``config.yaml`` stays the config a user reruns by hand. Under DDP every rank gets the variable (the ranks
re-run the same command), rank 0 alone talks to the study, and the pruning decision is broadcast so all ranks stop
together.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from ftlit.core.callbacks.safety import GracefulStop
from ftlit.search.space import make_pruner

ENV = "FTLIT_TRIAL"
PRUNED_AT = "pruned_at_step"  # the user attribute a pruned trial gets: the tune process reads it when the fit ends


def trial_from_env() -> dict[str, Any] | None:
    """The trial this process runs for ``ftlit tune``, or None for a plain fit."""
    text = os.environ.get(ENV)
    return json.loads(text) if text else None


class TrialReporter(Callback):
    """Reports ``metric`` (the value after each validation, at the global step) to an Optuna trial; when the pruner
    says so, the fit stops as after an early stop (its checkpoints are kept) and the trial is marked."""

    def __init__(
        self, storage: str, study: str, trial_id: int, number: int, metric: str, pruner: dict[str, Any]
    ) -> None:
        self.storage, self.study_name, self.trial_id, self.number = storage, study, trial_id, number
        self.metric, self.pruner = metric, pruner
        self._trial: Any = None
        self._reported: set[int] = set()

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero or self._trial is not None:
            return
        import optuna

        # The study's pruner is not in the storage: built from the search file's options, as the tune process does.
        study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=make_pruner(self.pruner))
        self._trial = optuna.trial.Trial(study, self.trial_id)
        # A resumed trial inherits the steps reported before the interruption: they are not reported twice.
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == self.number)
        self._reported = set(frozen.intermediate_values)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or any(isinstance(c, GracefulStop) and c.stopped for c in trainer.callbacks):
            # A fit stopped by a signal validates where it stops; the retry resumes from there and reports the
            # validations an uninterrupted run would.
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.metric)
            step = trainer.global_step
            if value is not None and step not in self._reported:
                self._trial.report(float(value), step)
                self._reported.add(step)
                prune = math.isfinite(float(value)) and self._trial.should_prune()
                if prune:
                    self._trial.set_user_attr(PRUNED_AT, step)
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
