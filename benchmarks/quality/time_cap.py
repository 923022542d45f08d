"""The time guard of the quality benchmark's ftlit rows: stop a fit after ``seconds`` of training, like Lightning's
``Timer``, and say whether it did.

Not ``trainer.max_time``: with a ``Timer`` among the Trainer's callbacks and no ``max_epochs``/``max_steps``, Lightning
(2.6, ``loops/utilities._parse_loop_limits``) trains without an epoch limit instead of its default 1,000 epochs, so
the cap would change the very default the benchmark measures (and ftlit's linear schedule over infinitely many
steps fails; ftlit now refuses that in one line: "the run has no length"). This callback changes no loop limit.

    ftlit fit ... '--trainer.callbacks+={"class_path": "time_cap.TimeCap", "init_args": {"seconds": 300}}'

(``benchmarks/quality`` on ``PYTHONPATH``.)
"""

from __future__ import annotations

import time

from lightning.pytorch import Callback, LightningModule, Trainer


class TimeCap(Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.start: float | None = None
        self.hit = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.monotonic()

    def _check(self, trainer: Trainer) -> None:
        if self.start is None or trainer.sanity_checking:
            return
        up = time.monotonic() - self.start >= self.seconds
        up = bool(trainer.strategy.broadcast(up))  # every rank stops together
        if up and not trainer.should_stop:
            trainer.should_stop = True
            self.hit = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        self._check(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)
