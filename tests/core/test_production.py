"""Production safety: DDP correctness, exact resume after a real kill, atomic checkpoints, signals, NaN."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.runs import ftlit, last_metrics

from conftest import cli_args, read_metrics, toy_rows, write_jsonl
from ftlit.checkpoint_io import AtomicCheckpointIO
from ftlit.errors import ConfigError


@pytest.fixture
def odd_data(toy_data, tmp_path) -> dict[str, str]:
    # 41 validation rows and 21 to predict: not divisible by 2 ranks, so a padding sampler would repeat rows.
    folder = tmp_path / "odd"
    folder.mkdir()
    predict = [{"text": r["text"]} for r in toy_rows(21, 9)]
    return {
        **toy_data,
        "validation_file": str(write_jsonl(folder / "validation.jsonl", toy_rows(41, 4))),
        "predict_file": str(write_jsonl(folder / "predict.jsonl", predict)),
    }


def assert_close(a, b, where: str) -> None:
    """``a`` equals ``b``, nested lists and dicts alike, numbers to 1e-6."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), where
        for k in b:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-6), where
    else:
        assert a == b, where


def test_ddp_metrics_and_predictions_equal_a_single_process(tiny_bert, odd_data, tmp_path):
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2"]
    train = tmp_path / "train"
    ftlit("fit", *cli_args(tiny_bert, odd_data, train, "--trainer.max_epochs=1", *ddp))
    ckpt = str(train / "checkpoints" / "last.ckpt")
    assert torch.load(ckpt, weights_only=True)["global_step"] == 6  # 96 rows / 2 ranks / batch 8

    one, two = tmp_path / "one", tmp_path / "two"
    ftlit("validate", *cli_args(tiny_bert, odd_data, one), f"--ckpt_path={ckpt}")
    ftlit("validate", *cli_args(tiny_bert, odd_data, two, *ddp), f"--ckpt_path={ckpt}")
    logged = {k for row in read_metrics(one) for k, v in row.items() if k.startswith("val/") and v}
    assert {"val/acc", "val/f1", "val/f1_micro", "val/mcc", "val/auroc", "val/ap", "val/loss"} <= logged
    for key in sorted(logged):
        assert last_metrics(two, key) == pytest.approx(last_metrics(one, key), abs=1e-6), key

    # `ftlit test` on the 41 rows: every score and the details in test-results.json equal a single process's.
    test = {**odd_data, "test_file": odd_data["validation_file"]}
    ftlit("test", *cli_args(tiny_bert, test, one), f"--ckpt_path={ckpt}")
    ftlit("test", *cli_args(tiny_bert, test, two, *ddp), f"--ckpt_path={ckpt}")
    single, multi = (json.loads((root / "test-results.json").read_text()) for root in (one, two))
    assert single["data"]["rows"] == multi["data"]["rows"] == 41 and sum(map(sum, multi["confusion_matrix"])) == 41
    assert {"test/ece", "test/f1_weighted", "test/f1_neg", "test/recall_pos"} <= set(multi["metrics"])
    for key, value in single["metrics"].items():
        assert multi["metrics"][key] == pytest.approx(value, abs=1e-6), key
    for key in ("confusion_matrix", "per_class", "roc", "pr", "calibration"):
        assert_close(multi[key], single[key], key)

    ftlit("predict", *cli_args(tiny_bert, odd_data, one), f"--ckpt_path={ckpt}")
    ftlit("predict", *cli_args(tiny_bert, odd_data, two, *ddp), f"--ckpt_path={ckpt}")
    single = [json.loads(line) for line in (one / "predictions.jsonl").read_text().splitlines()]
    multi = [json.loads(line) for line in (two / "predictions.jsonl").read_text().splitlines()]
    assert len(multi) == 21
    assert [r["label"] for r in multi] == [r["label"] for r in single]
    for a, b in zip(multi, single, strict=True):
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-5)


@pytest.mark.parametrize("sampler", [[], ["--data.group_by_length=true"]], ids=["shuffled", "length_grouped"])
def test_sigkill_mid_epoch_then_resume_ends_with_the_same_weights(tiny_bert, toy_data, tmp_path, sampler):
    common = ["--trainer.max_epochs=2", "--trainer.deterministic=true", "--checkpoint.every_n_train_steps=4", *sampler]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    ftlit("fit", *cli_args(tiny_bert, toy_data, whole, *common))

    killed = ftlit(
        "fit",
        *cli_args(
            tiny_bert, toy_data, broken, *common, "--trainer.callbacks+=faults.SignalAt", "--trainer.callbacks.step=10"
        ),
        check=False,
    )
    assert killed.returncode == -9  # a real SIGKILL, no clean-up
    saved = torch.load(broken / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 8 and saved["epoch"] == 0  # mid-epoch (12 steps per epoch)

    ftlit("fit", *cli_args(tiny_bert, toy_data, broken, *common), "--ckpt_path=last")
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(broken / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 24
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=0, msg=key)


def test_sigterm_saves_last_and_stops_cleanly(tiny_bert, toy_data, tmp_path):
    extra = [
        "--trainer.max_epochs=5",
        "--trainer.callbacks+=faults.SignalAt",
        "--trainer.callbacks.step=7",
        f"--trainer.callbacks.signum={int(__import__('signal').SIGTERM)}",
    ]
    result = ftlit("fit", *cli_args(tiny_bert, toy_data, tmp_path, *extra), check=False)
    assert result.returncode == 128 + int(__import__("signal").SIGTERM)  # preempted: neither done (0) nor failed
    assert not list((tmp_path / "checkpoints").glob("*-v1.ckpt"))  # the stop's last.ckpt is the run's only one
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ftlit: stopped by SIGTERM at step ") and last.endswith("resume with --ckpt_path last")
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] in (7, 8) and saved["epoch"] == 0


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_best_checkpoint(tiny_bert, toy_data, tmp_path):
    args = cli_args(
        tiny_bert,
        toy_data,
        tmp_path,
        "--trainer.max_epochs=3",
        "--checkpoint.monitor=val/acc",
        "--checkpoint.mode=max",
        "--trainer.callbacks+=faults.PoisonAt",
        "--trainer.callbacks.step=15",
    )
    result = ftlit("fit", *args, check=False)
    assert result.returncode == 1
    assert "ftlit: error: training loss is nan at step 15 (epoch 1)" in result.stderr.strip().splitlines()[-1]
    best = [p for p in (tmp_path / "checkpoints").glob("epoch=*.ckpt")]
    assert [p.name for p in best] == ["epoch=0-step=12.ckpt"]
    state = torch.load(best[0], weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_checkpoint_writes_are_atomic(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(1000), "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["step"] == 1  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_truncated_last_checkpoint_is_a_clear_error(tiny_bert, toy_data, tmp_path):
    ftlit("fit", *cli_args(tiny_bert, toy_data, tmp_path, "--trainer.max_epochs=1"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    result = ftlit(
        "fit", *cli_args(tiny_bert, toy_data, tmp_path, "--trainer.max_epochs=2"), "--ckpt_path=last", check=False
    )
    assert result.returncode == 2
    assert f"ftlit: error: ckpt_path: '{last}' is not a readable checkpoint" in result.stderr.strip().splitlines()[-1]
    with pytest.raises(ConfigError, match="is not a readable checkpoint"):
        AtomicCheckpointIO().load_checkpoint(last)
