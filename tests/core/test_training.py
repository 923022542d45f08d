"""Fit, metrics, resume and self-contained checkpoints, through the real CLI on a tiny BERT."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from helpers.runs import TESTS

from conftest import cli_args, column, make_tiny_bert, read_metrics, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI, main
from ftlit.core.samplers import EpochShuffle
from ftlit.tasks.text import SequenceClassifier


def test_fit_learns_and_logs_val_metrics(tiny_bert, toy_data, tmp_path):
    root = tmp_path / "run"
    FtlitCLI(args=["fit", *cli_args(tiny_bert, toy_data, root, "--trainer.max_epochs=5", "--model.scheduler=constant")])
    rows = read_metrics(root)
    losses = column(rows, "train/loss")
    assert len(losses) == 5 * 12
    assert sum(losses[-6:]) / 6 < 0.7 * sum(losses[:6]) / 6, losses
    for key in ("val/loss", "val/acc", "val/f1", "val/mcc"):
        assert len(column(rows, key)) == 5, key
    assert column(rows, "val/acc")[-1] > 0.8
    assert (root / "checkpoints" / "last.ckpt").is_file()
    assert (root / "csv" / "version_0" / "config.yaml").is_file()


def test_labels_reach_the_model_through_the_link(tiny_bert, toy_data, tmp_path):
    cli = FtlitCLI(args=cli_args(tiny_bert, toy_data, tmp_path), run=False)
    assert cli.model.label_names == ["neg", "pos"]
    assert cli.model.model.config.id2label == {0: "neg", 1: "pos"}
    assert cli.datamodule.tokenizer_name == tiny_bert


def test_optimizer_groups_exclude_bias_and_layernorm_from_decay(tiny_bert, toy_data, tmp_path):
    cli = FtlitCLI(args=cli_args(tiny_bert, toy_data, tmp_path, "--model.weight_decay=0.05"), run=False)
    model = cli.model
    groups = model.param_groups()
    decay = {"weight_decay": 0.05, "params": [p for g in groups if g["weight_decay"] for p in g["params"]]}
    plain = {"weight_decay": 0.0, "params": [p for g in groups if not g["weight_decay"] for p in g["params"]]}
    assert {g["weight_decay"] for g in groups} == {0.05, 0.0}
    names = {id(p): n for n, p in model.named_parameters()}
    plain_names = [names[id(p)] for p in plain["params"]]
    decay_names = [names[id(p)] for p in decay["params"]]
    assert decay["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert all(n.endswith("bias") or "LayerNorm" in n for n in plain_names)
    assert not any(n.endswith("bias") or "LayerNorm" in n for n in decay_names)
    assert len(plain_names) + len(decay_names) == len(list(model.parameters()))


def test_warmup_then_linear_decay_steps_every_optimizer_step(tiny_bert, toy_data, tmp_path):
    root = tmp_path / "run"
    extra = ["--model.warmup_steps=4", "--trainer.max_epochs=1", "--trainer.accumulate_grad_batches=2"]
    extra += ["--trainer.callbacks+=LearningRateMonitor", "--trainer.callbacks.logging_interval=step"]
    FtlitCLI(args=["fit", *cli_args(tiny_bert, toy_data, root, *extra)])
    lrs = {int(r["step"]): float(r["lr-AdamW/head"]) for r in read_metrics(root) if r.get("lr-AdamW/head")}
    lrs = [lrs[step] for step in sorted(lrs)]
    # 12 batches, accumulation 2 -> 6 optimizer steps: 4 warming up, then linear decay to 0.
    assert lrs[:6] == pytest.approx([0.0, 7.5e-4, 1.5e-3, 2.25e-3, 3e-3, 1.5e-3])


def test_max_time_stops_the_run_beside_ftlit_s_clock(tiny_bert, toy_data, tmp_path):
    """trainer.max_time keeps its limit: ftlit's RunClock once subclassed Lightning's Timer, and Lightning drops every
    Trainer callback whose type a model callback subclasses, so max_time's Timer was removed and the run went on. A
    limit of zero stops the run before its first optimizer step (an event, not a timing)."""
    cli = FtlitCLI(args=["fit", *cli_args(tiny_bert, toy_data, tmp_path / "run", '--trainer.max_time={"seconds": 0}')])
    assert [type(c).__name__ for c in cli.trainer.callbacks].count("Timer") == 1
    assert cli.trainer.global_step == 0  # 12 batches an epoch: the old clock ran them all


def test_resume_from_last_in_a_new_process_continues(tiny_bert, toy_data, tmp_path):
    root = tmp_path / "run"
    base = ["fit", *cli_args(tiny_bert, toy_data, root, "--trainer.max_epochs=1")]
    FtlitCLI(args=base)
    first = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 12 and first["epoch"] == 0
    timing = json.loads((root / "timing.json").read_text())["fit"]
    assert timing["steps"] == 12 and timing["seconds"] > 0 and timing["processes"] == 1
    # The fit's time so far is in the checkpoint and carries over: an hour spent before the interruption counts.
    assert first["callbacks"]["RunClock"]["time_elapsed"]["train"] > 0
    first["callbacks"]["RunClock"]["time_elapsed"]["train"] = 3600.0
    torch.save(first, root / "checkpoints" / "last.ckpt")

    # A second process, as after a crash: a new logger version must not hide `last`.
    resume = [*base, "--trainer.max_epochs=2", "--ckpt_path=last"]
    code = f"from ftlit.cli import main; main({resume!r})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=TESTS, capture_output=True)
    second = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert second["global_step"] == 24 and second["epoch"] == 1
    timing = json.loads((root / "timing.json").read_text())["fit"]
    assert timing["steps"] == 24 and 3600 < timing["seconds"] < 3600 + 600
    # The optimizer state was restored, not rebuilt: Adam's step count kept counting from 12.
    steps = {int(s["step"]) for s in second["optimizer_states"][0]["state"].values()}
    assert steps == {24}
    assert second["lr_schedulers"][0]["last_epoch"] == 24
    metrics = [r for r in read_metrics(root) if r.get("train/loss")]
    assert min(int(r["step"]) for r in metrics) >= 12  # the second run logged only the new steps


def test_epoch_shuffle_draws_its_order_when_the_first_index_is_taken():
    sampler = EpochShuffle(list(range(40)), num_replicas=1, rank=0, shuffle=True, seed=3)
    orders = {}
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        orders[epoch] = list(sampler)
    assert orders[0] != orders[1] and sorted(orders[1]) == list(range(40))
    # Lightning resuming at an epoch's end makes the iterator first, then sets the next epoch.
    sampler.set_epoch(0)
    made = iter(sampler)
    sampler.set_epoch(1)
    assert list(made) == orders[1]


def test_a_run_resumed_from_an_epoch_s_end_ends_with_the_same_weights(tiny_bert, toy_data, tmp_path):
    # A constant schedule: stopping after the first of 2 epochs changes nothing but the stop.
    args = cli_args(tiny_bert, toy_data, tmp_path / "whole", "--model.scheduler=constant")
    FtlitCLI(args=["fit", *args])
    resumed = [a.replace("whole", "resumed") for a in args]
    FtlitCLI(args=["fit", *resumed, "--trainer.max_epochs=1"])
    FtlitCLI(args=["fit", *resumed, "--ckpt_path=last"])
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True) for r in ("whole", "resumed"))
    assert a["global_step"] == b["global_step"] == 24
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=0, msg=key)


def test_a_run_stopped_by_max_steps_mid_epoch_resumes_the_rest_of_that_epoch(tiny_bert, toy_data, tmp_path):
    # 12 steps per epoch; the first run stops at step 18, halfway through its second epoch, validated and saved.
    args = cli_args(tiny_bert, toy_data, tmp_path / "whole", "--model.scheduler=constant", "--trainer.max_epochs=3")
    FtlitCLI(args=["fit", *args])
    stopped = [a.replace("whole", "stopped") for a in args]
    FtlitCLI(args=["fit", *stopped, "--trainer.max_steps=18"])
    cli = FtlitCLI(args=["fit", *stopped, "--ckpt_path=last"])
    assert cli.trainer.global_step == 36  # not 24: the interrupted epoch is finished, then the third one runs
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True) for r in ("whole", "stopped"))
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=0, msg=key)


def test_checkpoint_rebuilds_offline_without_the_model_folder(toy_data, tmp_path):
    model_dir = make_tiny_bert(tmp_path / "model-to-delete")
    root = tmp_path / "run"
    cli = FtlitCLI(args=["fit", *cli_args(str(model_dir), toy_data, root, "--trainer.max_epochs=1")])
    batch = next(iter(cli.datamodule.val_dataloader()))
    cli.model.eval()
    with torch.no_grad():
        expected = cli.model(batch)
    shutil.rmtree(model_dir)

    restored = SequenceClassifier.load_from_checkpoint(root / "checkpoints" / "last.ckpt")
    restored.eval()
    with torch.no_grad():
        got = restored(batch)
    torch.testing.assert_close(got, expected)
    assert restored.model.config.id2label == {0: "neg", 1: "pos"}


def test_validate_and_test_subcommands_use_the_best_checkpoint(tiny_bert, toy_data, tmp_path):
    root = tmp_path / "run"
    args = cli_args(tiny_bert, toy_data, root, "--checkpoint.monitor=val/acc", "--checkpoint.mode=max")
    FtlitCLI(args=["fit", *args])
    cli = FtlitCLI(args=["test", *args, "--ckpt_path=best"])
    results = cli.trainer.callback_metrics
    assert {"test/acc", "test/f1", "test/loss"} <= set(results)
    timing = json.loads((root / "timing.json").read_text())
    assert timing["fit"]["steps"] == 24 and timing["test"]["batches_per_process"] == 4  # the fit's entry is kept
    assert timing["test"]["seconds"] > 0


def test_predict_writes_rows_in_input_order_and_never_overwrites(tiny_bert, toy_data, tmp_path, capsys):
    root = tmp_path / "run"
    predict_rows = [{"text": r["text"]} for r in toy_rows(21, 7)]
    data = {**toy_data, "predict_file": str(write_jsonl(tmp_path / "predict.jsonl", predict_rows))}
    args = cli_args(tiny_bert, data, root, "--trainer.max_epochs=1", "--data.eval_batch_size=4")
    FtlitCLI(args=["fit", *args])
    cli = FtlitCLI(args=["predict", *args, "--ckpt_path=last"])
    rows = [json.loads(line) for line in (root / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 21
    # Row i is the prediction for input i: recompute each one alone.
    model = cli.model.eval()
    tok = cli.datamodule.tokenizer
    for row, inp in zip(rows, predict_rows, strict=True):
        with torch.no_grad():
            probs = model(dict(tok(inp["text"], return_tensors="pt"))).softmax(-1)[0]
        assert row["label"] == ["neg", "pos"][int(probs.argmax())]
        assert row["probs"] == pytest.approx(probs.tolist(), abs=1e-5)

    before = (root / "predictions.jsonl").read_bytes()
    with pytest.raises(SystemExit):
        main(["predict", *args, "--ckpt_path=last"])
    assert "predictions.output: " in capsys.readouterr().err
    assert (root / "predictions.jsonl").read_bytes() == before
    FtlitCLI(args=["predict", *args, "--ckpt_path=last", f"--predictions.output={tmp_path / 'p.csv'}"])
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "label,score,probs"


def test_a_checkpoint_file_does_not_override_the_config(tiny_bert, toy_data, tmp_path):
    # LightningCLI would parse the checkpoint's hyperparameters over the YAML and the command line.
    root = tmp_path / "run"
    FtlitCLI(args=["fit", *cli_args(tiny_bert, toy_data, root, "--trainer.max_epochs=1")])
    ckpt = root / "checkpoints" / "last.ckpt"
    cli = FtlitCLI(
        args=["test", *cli_args(tiny_bert, toy_data, root, "--model.learning_rate=0.5"), f"--ckpt_path={ckpt}"]
    )
    assert cli.model.hparams.learning_rate == 0.5
    assert "test/acc" in cli.trainer.callback_metrics
