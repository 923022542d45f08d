"""How long a run took: Lightning's Timer without a limit, always on, written to ``timing.json`` in the run folder."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, Timer
from typing_extensions import override

from ftlit.core.results import TIMING, write_json


class RunClock(Callback):
    """The fit's and the test's wall-clock time, in ``<root>/timing.json`` for ``ftlit report`` and scripts.

    Lightning's ``Timer`` without a limit keeps the time, held rather than subclassed: Lightning drops every Trainer
    callback whose type a model callback subclasses, so a ``Timer`` subclass here removed the one ``trainer.max_time``
    adds, and the limit was silently ignored. The fit's time is in every checkpoint (under ``RunClock``, as before),
    so a resumed fit reports the time of all its parts, up to the last save before each interruption.
    """

    def __init__(self) -> None:
        self.timer = Timer(duration=None)

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds spent in ``stage`` (``train``, ``validate``, ``test``) so far, resumed parts included for train."""
        return self.timer.time_elapsed(stage)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.on_train_start(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.on_train_end(trainer, pl_module)
        self._write(trainer, "fit", self.time_elapsed("train"), steps=trainer.global_step, epochs=trainer.current_epoch)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.on_validation_start(trainer, pl_module)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.on_validation_end(trainer, pl_module)

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.on_test_start(trainer, pl_module)

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.on_test_end(trainer, pl_module)
        batches = sum(int(n) for n in trainer.num_test_batches)
        self._write(trainer, "test", self.time_elapsed("test"), batches_per_process=batches)

    @override
    def state_dict(self) -> dict[str, Any]:
        return self.timer.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.timer.load_state_dict(state_dict)

    def _write(self, trainer: pl.Trainer, stage: str, seconds: float, **counts: Any) -> None:
        """Add ``stage``'s entry to the run's timing file (rank 0), keeping the other stage's."""
        if not trainer.is_global_zero:
            return
        path = Path(trainer.default_root_dir) / TIMING
        try:
            timing = json.loads(path.read_text())
        except (OSError, ValueError):
            timing = {}
        if not isinstance(timing, dict):
            timing = {}
        finished = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        timing[stage] = {"seconds": seconds, **counts, "processes": trainer.world_size, "finished": finished}
        write_json(path, timing)
