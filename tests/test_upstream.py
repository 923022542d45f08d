"""The private APIs of Lightning, torchmetrics and transformers that ftlit uses (ftlit/upstream.py) still exist: an
upgrade that removes one fails here, naming it, instead of somewhere deep in a run."""

from __future__ import annotations

import inspect

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torchmetrics import MeanMetric
from transformers import BertConfig, BertModel

from ftlit import upstream


@pytest.mark.parametrize("cls, method, why, issue", upstream.OVERRIDDEN, ids=lambda v: str(v)[:40])
def test_overridden_private_methods_still_exist(cls, method, why, issue):
    assert callable(getattr(cls, method, None)), (
        f"{cls.__qualname__}.{method} is gone upstream: ftlit overrides it because {why} ({issue}); "
        "move the override to the public API that replaced it"
    )


def test_the_private_attributes_read_through_upstream_still_exist():
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    upstream.drop_train_loader(trainer)
    assert trainer.fit_loop._combined_loader is None
    assert upstream.ddp_finds_unused_parameters(DDPStrategy(find_unused_parameters=True)) is True
    assert upstream.ddp_finds_unused_parameters(DDPStrategy()) is False
    assert upstream.last_step_saved(ModelCheckpoint()) == 0
    metric = MeanMetric()
    assert set(upstream.sync_arguments(metric)) == {"dist_sync_fn", "should_sync", "should_unsync"}
    assert set(inspect.signature(metric.sync_context).parameters) >= set(upstream.sync_arguments(metric))
    metric.sync(should_sync=True, distributed_available=lambda: True, dist_sync_fn=lambda x, group=None: [x])
    assert upstream.sync_arguments(metric) is None  # states already global between sync() and unsync()


def test_reinitialize_changes_loaded_weights_with_the_model_s_initialiser():
    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    layer = model.encoder.layer[1]
    for p in layer.parameters():
        p._is_hf_initialized = True  # as from_pretrained marks loaded weights
    before = [p.detach().clone() for p in layer.parameters()]
    untouched = [p.detach().clone() for p in model.encoder.layer[0].parameters()]
    upstream.reinitialize(model, layer)
    weights = [(b, p) for b, p in zip(before, layer.parameters(), strict=True) if p.dim() == 2]
    assert weights and all(not torch.equal(b, p) for b, p in weights)
    assert all(torch.equal(b, p) for b, p in zip(untouched, model.encoder.layer[0].parameters(), strict=True))


def test_optuna_trial_ids_name_the_same_trial_in_the_storage(tmp_path):
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.ask()
    trial = study.ask()
    frozen = study.get_trials(deepcopy=False)[1]
    assert upstream.optuna_trial_id(trial) == upstream.optuna_trial_id(frozen)
    assert optuna.trial.Trial(study, upstream.optuna_trial_id(frozen)).number == trial.number == 1


def test_own_hyperparameters_clears_the_cli_s_given_hyperparameters():
    from lightning.pytorch.core.mixins import hparams_mixin

    class Model(pl.LightningModule):
        def __init__(self, width: int = 1) -> None:
            super().__init__()
            self.save_hyperparameters()

    with hparams_mixin._given_hyperparameters_context({"width": 8}, "test"):
        assert Model(width=2).hparams.width == 8  # what LightningCLI does to a model built inside its build
        with upstream.own_hyperparameters():
            assert Model(width=2).hparams.width == 2
