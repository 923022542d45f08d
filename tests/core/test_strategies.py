"""Fine-tuning strategies: each test fails if its option does nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.runs import TESTS

from conftest import cli_args, column, read_metrics, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI, main
from ftlit.tasks.text import SequenceClassifier


def fit(tiny_bert, data, root, *extra) -> FtlitCLI:
    return FtlitCLI(args=["fit", *cli_args(tiny_bert, data, root, "--trainer.max_epochs=1", *extra)])


def pretrained(tiny_bert, label_names=("neg", "pos")) -> dict[str, torch.Tensor]:
    model = SequenceClassifier(backbone=tiny_bert, label_names=list(label_names))
    return {k: v.clone() for k, v in model.state_dict().items()}


def changed(before: dict, after: dict, prefix: str) -> list[bool]:
    return [not torch.equal(before[k], after[k].cpu()) for k in before if k.startswith(prefix)]


def test_freeze_backbone_trains_the_head_only(tiny_bert, toy_data, tmp_path):
    before = pretrained(tiny_bert)
    cli = fit(tiny_bert, toy_data, tmp_path, "--model.freeze_backbone=true")
    after = cli.model.state_dict()
    assert not any(changed(before, after, "model.bert."))  # bit-identical
    assert all(changed(before, after, "model.classifier."))
    in_optimizer = {id(p) for g in cli.trainer.optimizers[0].param_groups for p in g["params"]}
    assert {id(p) for p in cli.model.model.bert.parameters()}.isdisjoint(in_optimizer)


def test_freeze_embeddings_and_bottom_layers(tiny_bert, toy_data, tmp_path):
    before = pretrained(tiny_bert)
    cli = fit(tiny_bert, toy_data, tmp_path, "--model.freeze_embeddings=true", "--model.freeze_layers=1")
    after = cli.model.state_dict()
    assert not any(changed(before, after, "model.bert.embeddings."))
    assert not any(changed(before, after, "model.bert.encoder.layer.0."))
    assert all(changed(before, after, "model.bert.encoder.layer.1.attention.self.query."))


def test_layerwise_lr_decay_puts_the_expected_rates_in_the_groups(tiny_bert, toy_data, tmp_path):
    args = ["--model.learning_rate=1e-3", "--model.layer_lr_decay=0.5", "--model.head_lr=5e-3"]
    cli = FtlitCLI(args=cli_args(tiny_bert, toy_data, tmp_path, *args, "--model.weight_decay=0.1"), run=False)
    groups = {g["name"]: g for g in cli.model.param_groups()}
    expected = {"embeddings": 2.5e-4, "layer.0": 5e-4, "layer.1": 1e-3, "top": 1e-3, "head": 5e-3}
    for part, lr in expected.items():
        assert groups[part]["lr"] == pytest.approx(lr)
        assert groups[part]["weight_decay"] == 0.1
        assert groups[f"{part}/no_decay"]["lr"] == pytest.approx(lr)
        assert groups[f"{part}/no_decay"]["weight_decay"] == 0.0
    names = {id(p): n for n, p in cli.model.named_parameters()}
    assert all(".layer.0." in names[id(p)] for p in groups["layer.0"]["params"])
    plain = [names[id(p)] for p in groups["layer.1/no_decay"]["params"]]
    assert all("LayerNorm" in n or n.endswith("bias") for n in plain)
    assert sum(len(g["params"]) for g in groups.values()) == len(list(cli.model.parameters()))


def test_reinit_top_layers_uses_the_model_initialiser(tiny_bert):
    before = pretrained(tiny_bert)
    model = SequenceClassifier(backbone=tiny_bert, label_names=["neg", "pos"], reinit_layers=1)
    after = model.state_dict()
    assert not any(changed(before, after, "model.bert.encoder.layer.0."))
    assert all(changed(before, after, "model.bert.encoder.layer.1.attention.self.query.weight"))
    assert not any(changed(before, after, "model.bert.pooler."))
    weight = after["model.bert.encoder.layer.1.intermediate.dense.weight"]
    assert weight.std().item() == pytest.approx(model.model.config.initializer_range, rel=0.15)
    assert torch.all(after["model.bert.encoder.layer.1.intermediate.dense.bias"] == 0)
    with_pooler = SequenceClassifier(backbone=tiny_bert, label_names=["neg", "pos"], reinit_pooler=True).state_dict()
    assert all(changed(before, with_pooler, "model.bert.pooler.dense.weight"))


def test_l2sp_pulls_toward_the_pretrained_weights_and_is_logged(tiny_bert, toy_data, tmp_path):
    before = pretrained(tiny_bert)

    def drift(model) -> float:
        after = model.state_dict()
        return sum(((after[k].cpu() - before[k]) ** 2).sum().item() for k in before if k.startswith("model.bert."))

    free = fit(tiny_bert, toy_data, tmp_path / "free", "--trainer.max_epochs=2")
    held = fit(tiny_bert, toy_data, tmp_path / "held", "--trainer.max_epochs=2", "--model.l2sp_alpha=100")
    assert drift(held.model) < 0.5 * drift(free.model)
    penalties = column(read_metrics(tmp_path / "held"), "train/l2sp")
    assert len(penalties) == 24 and penalties[0] == 0.0 and max(penalties) > 0
    ckpt = torch.load(tmp_path / "held" / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any("anchor" in k for k in ckpt["state_dict"])  # no second copy of the weights on disk


def test_l2sp_anchor_after_resume_is_the_pretrained_weights(tiny_bert, toy_data, tmp_path):
    fit(tiny_bert, toy_data, tmp_path, "--model.l2sp_alpha=1")
    resumed = FtlitCLI(args=cli_args(tiny_bert, toy_data, tmp_path, "--model.l2sp_alpha=1"), run=False)
    before = pretrained(tiny_bert)
    first = resumed.model.l2sp.params[0]
    name = next(n for n, p in resumed.model.named_parameters() if p is first)
    assert torch.equal(resumed.model.l2sp.anchor_0, before[name])


def test_lora_trains_adapters_and_head_only(tiny_bert, toy_data, tmp_path):
    pytest.importorskip("peft")
    before = {k.removeprefix("model."): v for k, v in pretrained(tiny_bert).items()}
    cli = fit(tiny_bert, toy_data, tmp_path, "--model.lora_rank=4", "--model.lora_target_modules=[query,value]")
    model = cli.model.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    assert any("lora_B" in n for n in trainable)
    merged = model.merge_and_unload().state_dict()
    key, query = "bert.encoder.layer.0.attention.self.key.weight", "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(merged[key], before[key])
    assert not torch.equal(merged[query], before[query])
    assert not torch.equal(merged["classifier.weight"], before["classifier.weight"])


def test_label_smoothing_and_class_weights_reach_the_loss(tiny_bert, tmp_path):
    rows = toy_rows(60, 3)
    rows = [r for r in rows if r["label"] == "pos"][:6] + [r for r in rows if r["label"] == "neg"][:18]
    data = {"train_file": str(write_jsonl(tmp_path / "t.jsonl", rows)), "val_fraction": "0"}
    args = ["--model.label_smoothing=0.2", "--model.class_weights=balanced", "--trainer.max_steps=1"]
    cli = FtlitCLI(args=["fit", *cli_args(tiny_bert, data, tmp_path, *args, "--trainer.limit_val_batches=0")])
    assert cli.model.class_weight.tolist() == pytest.approx([24 / (2 * 18), 24 / (2 * 6)])
    batch = next(iter(cli.datamodule.train_dataloader()))
    logits = torch.randn(len(batch["labels"]), 2)
    expected = F.cross_entropy(logits, batch["labels"], weight=cli.model.class_weight, label_smoothing=0.2)
    torch.testing.assert_close(cli.model.loss(logits, batch), expected)


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        ("constant", [0.0, 5e-4, 1e-3, 1e-3, 1e-3, 1e-3]),
        ("linear", [0.0, 5e-4, 1e-3, 0.9e-3, 0.8e-3, 0.7e-3]),
        ("cosine", [0.0, 5e-4, 1e-3, 0.975528e-3, 0.904508e-3, 0.793893e-3]),
    ],
)
def test_schedulers_with_warmup(tiny_bert, toy_data, tmp_path, scheduler, expected):
    extra = ["--model.learning_rate=1e-3", "--model.warmup_steps=2", f"--model.scheduler={scheduler}"]
    extra += ["--trainer.callbacks+=LearningRateMonitor", "--trainer.callbacks.logging_interval=step"]
    extra += ["--trainer.max_steps=12", "--trainer.limit_val_batches=0"]
    fit(tiny_bert, toy_data, tmp_path, *extra)
    lrs = {int(r["step"]): float(r["lr-AdamW/head"]) for r in read_metrics(tmp_path) if r.get("lr-AdamW/head")}
    assert [lrs[s] for s in sorted(lrs)][:6] == pytest.approx(expected, rel=1e-4)


def test_any_torch_optimizer_by_class_path(tiny_bert, toy_data, tmp_path):
    cli = fit(tiny_bert, toy_data, tmp_path, "--model.optimizer=torch.optim.SGD", "--trainer.max_steps=2")
    assert type(cli.trainer.optimizers[0]) is torch.optim.SGD


UNFREEZE = [
    "--trainer.callbacks+=ftlit.core.callbacks.GradualUnfreezing",
    "--checkpoint.save_top_k=-1",
    "--checkpoint.every_n_epochs=1",
]
PARTS = {
    "model.bert.embeddings.": "embeddings",
    "model.bert.encoder.layer.0.": "layer.0",
    "model.bert.encoder.layer.1.": "layer.1",
}


def epoch_states(root: Path) -> list[dict[str, torch.Tensor]]:
    files = sorted((root / "checkpoints").glob("epoch=*.ckpt"), key=lambda p: int(p.name.split("=")[1].split("-")[0]))
    return [torch.load(f, weights_only=True)["state_dict"] for f in files]


def moved_parts(before: dict, after: dict) -> set[str]:
    return {name for prefix, name in PARTS.items() if any(changed(before, after, prefix))}


def test_gradual_unfreezing_thaws_top_down_one_layer_per_epoch(tiny_bert, toy_data, tmp_path):
    before = pretrained(tiny_bert)
    fit(tiny_bert, toy_data, tmp_path, "--trainer.max_epochs=4", *UNFREEZE)
    states = [before, *epoch_states(tmp_path)]
    assert [moved_parts(a, b) for a, b in zip(states, states[1:], strict=False)] == [
        set(),
        {"layer.1"},
        {"layer.1", "layer.0"},
        {"layer.1", "layer.0", "embeddings"},
    ]
    for a, b in zip(states, states[1:], strict=False):
        assert any(changed(a, b, "model.classifier."))


def test_gradual_unfreezing_survives_a_restart(tiny_bert, toy_data, tmp_path):
    args = cli_args(tiny_bert, toy_data, tmp_path, "--trainer.max_epochs=2", *UNFREEZE)
    FtlitCLI(args=["fit", *args])
    first = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    resume = ["fit", *args, "--trainer.max_epochs=3", "--ckpt_path=last"]
    code = f"from ftlit.cli import main; main({resume!r})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=TESTS, capture_output=True)
    states = epoch_states(tmp_path)
    # Epoch 2 ran in a new process: layer.1 (thawed in epoch 1) kept training and layer.0 joined it.
    assert moved_parts(states[1], states[2]) == {"layer.1", "layer.0"}
    second = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)

    def group_names(ckpt: dict) -> list[str]:
        return [g["name"] for g in ckpt["optimizer_states"][0]["param_groups"]]

    assert group_names(first) == group_names(second)
    state = next(v for k, v in second["callbacks"].items() if "GradualUnfreezing" in k)
    assert state["thawed_at"] == {"layer.1": 12, "layer.0": 24}


def test_strategies_compose(tiny_bert, toy_data, tmp_path):
    before = pretrained(tiny_bert)
    extra = ["--trainer.max_epochs=2", "--model.layer_lr_decay=0.5", "--model.l2sp_alpha=0.1", *UNFREEZE]
    cli = fit(tiny_bert, toy_data, tmp_path, *extra, "--trainer.callbacks.thaw_warmup_steps=3")
    states = [before, *epoch_states(tmp_path)]
    assert [moved_parts(a, b) for a, b in zip(states, states[1:], strict=False)] == [set(), {"layer.1"}]
    lrs = {g["name"]: g["initial_lr"] for g in cli.trainer.optimizers[0].param_groups}
    assert lrs["layer.0"] == pytest.approx(0.5 * lrs["layer.1"])
    assert len(column(read_metrics(tmp_path), "train/l2sp")) == 24


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--model.lora_rank=4", "--model.l2sp_alpha=1"], "model.l2sp_alpha: LoRA freezes the backbone"),
        (["--model.freeze_layers=5"], "model.freeze_layers: 5 is more than the model's 2 layers"),
        (["--model.layer_lr_decay=0"], "model.layer_lr_decay: must be in (0, 1]"),
        (["--model.keep_layers=[0, 2]"], "model.keep_layers: [0, 2] names no layer or one outside 0..1 (2 layers)"),
        (["--model.keep_layers=[]"], "model.keep_layers: [] names no layer"),
        (["--model.keep_layers=[1, 0]"], "model.keep_layers: [1, 0]: list each layer once, bottom first"),
        (["--model.prune_heads={5: [0]}"], "model.prune_heads: layer 5 is outside 0..1 (2 layers, counted after"),
        (["--model.prune_heads={0: [2]}"], "model.prune_heads: layer 0: [2] must list heads of 0..1 once each"),
        (["--model.prune_heads={1: [0, 0]}"], "model.prune_heads: layer 1: [0, 0] must list heads of 0..1 once"),
        (["--model.prune_heads={0: [0, 1]}"], "model.prune_heads: layer 0: keep at least one of its 2 heads"),
        (["--model.freeze_backbone=true", *UNFREEZE], "GradualUnfreezing: cannot thaw what model.freeze_*"),
    ],
)
def test_combinations_that_cannot_work(tiny_bert, toy_data, tmp_path, capsys, extra, expected):
    with pytest.raises(SystemExit):
        main(["fit", *cli_args(tiny_bert, toy_data, tmp_path, *extra)])
    assert expected in capsys.readouterr().err
