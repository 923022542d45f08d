"""Magnitude pruning during fine-tuning, on Lightning's ``ModelPruning`` (``torch.nn.utils.prune``).

The encoder's linear weights are pruned by L1 magnitude toward a target sparsity on Zhu & Gupta's (2017) cubic
schedule, every few optimizer steps: ``s(t) = s * (1 - (1 - (t - start) / (end - start))^3)``, fast at first, slower
as fewer weights are left. A pruned weight is masked (zero in every forward pass, no gradient) and stays zero.

Checkpoints hold the weights with their zeros in place and no masks (``ModelPruning`` makes pruning permanent in
each saved state dict, so an export loads in plain transformers). A resumed run puts the masks back from the zeros
before its first step: a pruned weight is exactly zero, and a weight that was not pruned is not (it would have to
land on 0.0 exactly), so the resumed run masks what the interrupted one did.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelPruning
from torch import nn
from torch.nn.utils import prune
from typing_extensions import override

from ftlit.core.anatomy import anatomy
from ftlit.errors import ConfigError

FIELD = "MagnitudePruning"


class MagnitudePruning(ModelPruning):
    """Prune the encoder's linear weights by magnitude toward ``sparsity``, gradually (a cubic schedule).

    Logs ``pruning/sparsity`` (over the encoder's linear weights) and ``pruning/sparsity_layer.<i>`` per encoder
    layer at every step.
    """

    def __init__(
        self,
        sparsity: float,
        start_step: int = 0,
        end_step: int | None = None,
        every_n_steps: int = 10,
        scope: Literal["global", "layer"] = "global",
    ) -> None:
        """
        Args:
            sparsity: The share of the encoder's linear weights that are zero at ``end_step``, in [0, 1).
            start_step: The optimizer step of the first pruning.
            end_step: The step where the target is reached and pruning stops (default: 70% of the training's
                steps, leaving the rest to recover).
            every_n_steps: Prune every this many steps between start and end.
            scope: ``global`` ranks all the weights together (layers end up with different sparsities); ``layer``
                prunes each weight matrix to the same sparsity.
        """
        if not 0.0 <= sparsity < 1.0:
            raise ConfigError(f"{FIELD}.sparsity", f"must be in [0, 1), got {sparsity}")
        if start_step < 0:
            raise ConfigError(f"{FIELD}.start_step", f"must be >= 0, got {start_step}")
        if every_n_steps < 1:
            raise ConfigError(f"{FIELD}.every_n_steps", f"must be >= 1, got {every_n_steps}")
        if end_step is not None and end_step <= start_step:
            raise ConfigError(f"{FIELD}.end_step", f"must be after start_step ({start_step}), got {end_step}")
        if scope not in ("global", "layer"):
            raise ConfigError(f"{FIELD}.scope", f"must be global or layer, got {scope!r}")
        super().__init__(
            pruning_fn="l1_unstructured",
            amount=0,  # the schedule below decides, per step
            use_global_unstructured=scope == "global",
            make_pruning_permanent=True,
            verbose=0,
        )
        self.sparsity, self.start_step, self.end_step, self.every_n_steps = (
            sparsity,
            start_step,
            end_step,
            every_n_steps,
        )
        self._layer_of: list[int] = []

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # The encoder's linear layers (attention and feed-forward), never the embeddings or the head.
        parts = anatomy(pl_module.model)
        targets = [(i, m) for i, layer in enumerate(parts.layers) for m in layer.modules() if isinstance(m, nn.Linear)]
        self._parameters_to_prune = [(m, "weight") for _, m in targets]
        self._layer_of = [i for i, _ in targets]

    def target(self, step: int, total: int) -> float:
        """The sparsity the schedule asks for after optimizer step ``step`` of ``total``."""
        end = self.end_step if self.end_step is not None else max(self.start_step + 1, math.floor(0.7 * total))
        progress = min(1.0, max(0.0, (step - self.start_step) / (end - self.start_step)))
        return self.sparsity * (1 - (1 - progress) ** 3)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resumed: the checkpoint's weights have their zeros but no masks. Mask the zeros again.
        if any(prune.is_pruned(m) for m, _ in self._parameters_to_prune):
            return
        if any(bool((m.weight == 0).any()) for m, _ in self._parameters_to_prune):
            for module, name in self._parameters_to_prune:
                prune.custom_from_mask(module, name, mask=getattr(module, name) != 0)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        sizes = [getattr(m, n).numel() for m, n in self._parameters_to_prune]
        if step >= self.start_step and (step - self.start_step) % self.every_n_steps == 0:
            self._prune(self.target(step, int(trainer.estimated_stepping_batches)), sizes)
        self._log(pl_module, sizes)

    def _prune(self, goal: float, sizes: list[int]) -> None:
        zeros = [self._zeros(m, n) for m, n in self._parameters_to_prune]
        if self._use_global_unstructured:
            extra = round(goal * sum(sizes)) - sum(zeros)
            if extra > 0:
                # An int: that many more of the weights not pruned yet (a float would be a share of those).
                self.apply_pruning(extra)
        else:
            for (module, name), size, zero in zip(self._parameters_to_prune, sizes, zeros, strict=True):
                extra = round(goal * size) - zero
                if extra > 0:
                    self.pruning_fn(module, name=name, amount=extra)

    @staticmethod
    def _zeros(module: nn.Module, name: str) -> int:
        mask = getattr(module, f"{name}_mask", None)
        return 0 if mask is None else int((mask == 0).sum())

    def _log(self, pl_module: pl.LightningModule, sizes: list[int]) -> None:
        zeros = [self._zeros(m, n) for m, n in self._parameters_to_prune]
        pl_module.log("pruning/sparsity", sum(zeros) / sum(sizes))
        for layer in sorted(set(self._layer_of)):
            mine = [i for i, at in enumerate(self._layer_of) if at == layer]
            share = sum(zeros[i] for i in mine) / sum(sizes[i] for i in mine)
            pl_module.log(f"pruning/sparsity_layer.{layer}", share)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass  # pruned by step, not by epoch

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass


def sparsity_of(model: nn.Module) -> float:
    """The share of exact zeros in ``model``'s encoder linear weights (what a pruned export holds)."""
    parts = anatomy(model)
    weights = [m.weight for layer in parts.layers for m in layer.modules() if isinstance(m, nn.Linear)]
    return float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))
