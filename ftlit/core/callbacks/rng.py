"""Random number generator states in checkpoints, per rank, so a resumed run draws the same dropout masks.

Lightning's Trainer checkpoints hold no RNG state (it collects them only to isolate a block or to hand them to
spawned processes), so a resumed run would draw other dropout masks than the run it continues.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


def collect() -> dict[str, Any]:
    """This process's torch, CUDA, numpy and Python RNG states, as plain types (checkpoints load with
    ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": list(random.getstate()),
    }


def restore(state: dict[str, Any]) -> None:
    """Set this process's RNG states from ``collect()``'s output."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


class RNGState(Callback):
    """Saves every rank's RNG states in each checkpoint and restores them on resume.

    Lightning 2.6 restores loop, optimizer and loader state but not the global RNGs, so a resumed run would
    draw different dropout masks from an uninterrupted one.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @override
    def state_dict(self) -> dict[str, Any]:
        # Every rank builds the checkpoint dict (only rank 0 writes it): gather all ranks' states here.
        states = [collect()]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, collect())
        return {"ranks": states}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Restored at the last moment before the first batch, after everything that draws random numbers at setup.
        if self._pending is not None:
            ranks = self._pending["ranks"]
            if len(ranks) == trainer.world_size:
                restore(ranks[trainer.global_rank])
            self._pending = None
