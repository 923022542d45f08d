"""A Lightning callback for the NER benchmark: how long ``fit``'s loop took and how many optimizer steps it made.

Added to ``ftlit fit`` with ``--trainer.callbacks+=ner_timing.FitTiming`` (``benchmarks/ner`` on ``PYTHONPATH``);
writes ``{"train_s", "steps", "epochs"}`` to ``$NER_BENCH_TIMING``. ``train_s`` spans ``on_train_start`` to
``on_train_end``, validation after each epoch included, like the Trainer's ``train_runtime``.
"""

from __future__ import annotations

import json
import os
import time

from lightning.pytorch import Callback, LightningModule, Trainer


class FitTiming(Callback):
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = os.environ.get("NER_BENCH_TIMING")
        if path and trainer.is_global_zero:
            seconds = time.perf_counter() - self.start
            record = {"train_s": seconds, "steps": trainer.global_step, "epochs": trainer.current_epoch}
            with open(path, "w") as f:
                json.dump(record, f)
