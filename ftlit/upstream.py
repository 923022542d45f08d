"""Every private API of Lightning, torchmetrics and transformers that ftlit uses, in one place: what public API is
missing, and the upstream issue that tracks it. tests/test_upstream.py fails, naming the entry, if an upgrade removes
one. Private methods ftlit overrides are listed in ``OVERRIDDEN``; the others are reached through the functions here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.core.mixins import hparams_mixin
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torchmetrics import MeanMetric, Metric
from transformers import PreTrainedModel

# Private methods ftlit's subclasses override: (class, method, why, upstream issue).
OVERRIDDEN: list[tuple[type, str, str, str]] = [
    (
        LightningCLI,
        "_parse_ckpt_path",
        "no switch to stop a checkpoint's hyperparameters overriding the config and the command line",
        "Lightning-AI/pytorch-lightning#20801 (fix proposed in #21408, an adapt_checkpoint_hparams hook)",
    ),
    (
        LightningCLI,
        "_set_seed",
        "no switch to parse a config without seeding the process (ftlit.cli.ConfigOnly, which ftlit tune reads with)",
        "no upstream issue found (closest: Lightning-AI/pytorch-lightning#20400, CLI hooks around instantiation)",
    ),
    (
        LightningCLI,
        "_run_subcommand",
        "no hook that runs after a subcommand whatever its outcome (ftlit releases the run folder's lock there)",
        "Lightning-AI/pytorch-lightning#20400 (closest: CLI hooks around instantiation)",
    ),
    (
        MeanMetric,
        "_cast_and_nan_check_input",
        "nan_strategy='disable' skips the per-batch NaN check (a GPU sync) but also drops the weights",
        "Lightning-AI/torchmetrics#3434 (fix in #3433)",
    ),
]


@contextmanager
def own_hyperparameters() -> Iterator[None]:
    """Let a model built while LightningCLI builds another (``model.init_from`` or ``model.teacher`` read from a
    checkpoint inside the task model's ``__init__``) save its own hyperparameters, not the CLI's config.

    LightningCLI instantiates the model inside a context variable that makes every ``save_hyperparameters`` call in
    it take the CLI's config; a checkpoint loaded there got the outer model's settings (its ``prune_heads``, its
    ``init_from``) instead of its own. Missing: a scope for that variable that ends at the instantiated class. No
    upstream issue found (the variable came with Lightning-AI/pytorch-lightning#18105).
    """
    token = hparams_mixin._given_hyperparameters.set(None)
    try:
        yield
    finally:
        hparams_mixin._given_hyperparameters.reset(token)


def drop_train_loader(trainer: pl.Trainer) -> None:
    """Forget the train loader that ``trainer.estimated_stepping_batches`` built, so the fit loop builds it again
    after a checkpoint's loop state is restored (otherwise a resumed epoch replays from its first batch).

    Missing: an estimate that does not build the loader early. Lightning-AI/pytorch-lightning#20550 (open; fixes
    proposed in #21765 and #21770).
    """
    trainer.fit_loop._combined_loader = None


def ddp_finds_unused_parameters(strategy: DDPStrategy) -> bool:
    """Whether DDP was asked to look for parameters without gradients (``ddp_find_unused_parameters_true``).

    Missing: a read-only view of ``DDPStrategy``'s DDP arguments. No upstream issue found (closest:
    Lightning-AI/pytorch-lightning#4382, which added the pass-through).
    """
    return bool(strategy._ddp_kwargs.get("find_unused_parameters"))


def last_step_saved(checkpoint: ModelCheckpoint) -> int:
    """The global step of ``checkpoint``'s most recent save.

    Missing: a public "last step saved" on ModelCheckpoint (Lightning reads the same field itself, in
    ``_should_save_on_exception``). No upstream issue found (closest: Lightning-AI/pytorch-lightning#12057).
    """
    return checkpoint._last_global_step_saved


def sync_arguments(metric: Metric) -> dict[str, Any] | None:
    """The arguments a metric's own ``compute`` passes to ``sync_context``, or ``None`` when the states are already
    global (between a manual ``sync()`` and ``unsync()``), for a metric that reads its states outside ``compute``.

    Missing: public sync flags for custom reads. No upstream issue found (closest: Lightning-AI/torchmetrics#3486).
    """
    if metric._is_synced:
        return None
    return {"dist_sync_fn": metric.dist_sync_fn, "should_sync": metric._to_sync, "should_unsync": metric._should_unsync}


def reinitialize(model: PreTrainedModel, module: nn.Module) -> None:
    """Re-initialise ``module`` (a part of ``model``) with the model's own initialiser, even where its weights were
    loaded from a checkpoint.

    Missing: a public "re-initialise these modules" in transformers; ``initialize_weights`` skips parameters
    flagged ``_is_hf_initialized``. huggingface/transformers#31883 and #3635 (both closed without one).
    """
    for m in module.modules():
        for p in m.parameters(recurse=False):
            p._is_hf_initialized = False
        model._init_weights(m)


def optuna_trial_id(trial: Any) -> int:
    """The storage's id of an Optuna ``Trial`` or ``FrozenTrial`` (``ftlit tune`` needs it for the heartbeat, and
    the trial's own process needs it to report to the same trial: ``optuna.trial.Trial(study, trial_id)``).

    Missing: a public id (``Trial.trial_id`` was deprecated for ``number`` in optuna/optuna#344, but the storage
    API still takes ids). optuna/optuna#5647 and #6365 (both closed without one).
    """
    return trial._trial_id
