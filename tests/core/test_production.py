"""Production safety: DDP correctness, exact resume after a real kill, atomic checkpoints, signals, NaN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.runs import ONE_THREAD, every_rank_ran, ftlit, ftlit_at_once, ftlit_job, last_metrics
from helpers.text import read_jsonl

from conftest import cli_args, cli_error, read_metrics, toy_rows, write_jsonl
from ftlit.checkpoint_io import AtomicCheckpointIO
from ftlit.cli import main
from ftlit.errors import ConfigError

# The in-process runs below on one torch thread, and the new processes too (DDP ranks get one each from Lightning).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    ckpt = f"--ckpt_path={train / 'checkpoints' / 'last.ckpt'}"
    test = {**odd_data, "test_file": odd_data["validation_file"]}  # `ftlit test` on the 41 rows
    # Each command in a run folder of its own: a folder's metrics.csv is its last command's.
    one, two = ({s: tmp_path / f"{s}-{n}" for s in ("validate", "test", "predict")} for n in ("one", "two"))
    # One DDP start (~15 s on 2 cores) for all four 2-process commands; the single process runs here, in-process.
    commands = [
        ["fit", *cli_args(tiny_bert, odd_data, train, "--trainer.max_epochs=1", *ddp)],
        ["validate", *cli_args(tiny_bert, odd_data, two["validate"], *ddp), ckpt],
        ["test", *cli_args(tiny_bert, test, two["test"], *ddp), ckpt],
        ["predict", *cli_args(tiny_bert, odd_data, two["predict"], *ddp), ckpt],
    ]
    assert ftlit_job(commands, tmp_path) == every_rank_ran(commands)  # none fell back to a single process
    assert torch.load(train / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6  # 96 / 2 / 8
    for stage, data in (("validate", odd_data), ("test", test), ("predict", odd_data)):
        main([stage, *cli_args(tiny_bert, data, one[stage]), ckpt])

    logged = {k for row in read_metrics(one["validate"]) for k, v in row.items() if k.startswith("val/") and v}
    assert {"val/acc", "val/f1", "val/f1_micro", "val/mcc", "val/auroc", "val/ap", "val/loss"} <= logged
    # Both `ftlit validate` with 2 processes and the 2-process fit's own last validation (of the weights that
    # last.ckpt holds) score like a single process.
    for key in sorted(logged):
        expected = pytest.approx(last_metrics(one["validate"], key), abs=1e-6)
        assert last_metrics(two["validate"], key) == expected, key
        assert last_metrics(train, key) == expected, f"fit {key}"

    # Every score and the details in test-results.json equal a single process's.
    single, multi = (json.loads((run["test"] / "test-results.json").read_text()) for run in (one, two))
    assert single["data"]["rows"] == multi["data"]["rows"] == 41 and sum(map(sum, multi["confusion_matrix"])) == 41
    assert {"test/ece", "test/f1_weighted", "test/f1_neg", "test/recall_pos"} <= set(multi["metrics"])
    for key, value in single["metrics"].items():
        assert multi["metrics"][key] == pytest.approx(value, abs=1e-6), key
    for key in ("confusion_matrix", "per_class", "roc", "pr", "calibration"):
        assert_close(multi[key], single[key], key)

    single, multi = (read_jsonl(run["predict"] / "predictions.jsonl") for run in (one, two))
    assert len(multi) == 21
    assert [r["label"] for r in multi] == [r["label"] for r in single]
    for a, b in zip(multi, single, strict=True):
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-5)


SAMPLERS = {"shuffled": [], "length_grouped": ["--data.group_by_length=true"]}


@pytest.fixture(scope="module")
def killed_and_resumed(tiny_bert, tmp_path_factory) -> dict[str, dict]:
    """Per training order (``SAMPLERS``): a 2-epoch fit, and the same fit SIGKILLed after step 10 and resumed.

    Returns per order the run folders ``whole`` and ``broken``, the processes ``done``, ``killed`` and ``resumed``,
    and ``saved``: the (global_step, epoch) of the last.ckpt the kill left behind.
    """
    tmp = tmp_path_factory.mktemp("sigkill")
    # toy_data's training and validation rows; a cache of its own (the autouse cache fixture is per test).
    data = {
        "train_file": str(write_jsonl(tmp / "train.jsonl", toy_rows(96, 0))),
        "validation_file": str(write_jsonl(tmp / "validation.jsonl", toy_rows(40, 1))),
        "cache_dir": str(tmp / "cache"),
    }
    common = ["--trainer.max_epochs=2", "--trainer.deterministic=true", "--checkpoint.every_n_train_steps=4"]
    kill = ["--trainer.callbacks+=faults.SignalAt", "--trainer.callbacks.step=10"]
    runs = {name: {"whole": tmp / name / "whole", "broken": tmp / name / "broken"} for name in SAMPLERS}

    def fit(name: str, root: Path, *extra: str) -> list[str]:
        return ["fit", *cli_args(tiny_bert, data, root, *common, *SAMPLERS[name], *extra)]

    # Every run is a new process (the resume reads only what the killed one left on disk); the independent ones run
    # at once, one thread each, so 2 cores stay busy. The same thread count for all: their weights compare exactly.
    first = ftlit_at_once(
        *(fit(n, run[k], *extra) for n, run in runs.items() for k, extra in (("whole", []), ("broken", kill))),
        env=ONE_THREAD,
    )
    for run, done, killed in zip(runs.values(), first[::2], first[1::2], strict=True):
        last = run["broken"] / "checkpoints" / "last.ckpt"  # read before the resume replaces it
        saved = torch.load(last, weights_only=True) if last.exists() else {}
        run.update(done=done, killed=killed, saved=(saved.get("global_step"), saved.get("epoch")))
    resumed = ftlit_at_once(*(fit(n, run["broken"], "--ckpt_path=last") for n, run in runs.items()), env=ONE_THREAD)
    for run, process in zip(runs.values(), resumed, strict=True):
        run["resumed"] = process
    return runs


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_sigkill_mid_epoch_then_resume_ends_with_the_same_weights(killed_and_resumed, sampler):
    run = killed_and_resumed[sampler]
    assert run["done"].returncode == 0, run["done"].stderr[-3000:]
    assert run["killed"].returncode == -9  # a real SIGKILL, no clean-up
    assert run["saved"] == (8, 0)  # mid-epoch (12 steps per epoch)
    assert run["resumed"].returncode == 0, run["resumed"].stderr[-3000:]
    a = torch.load(run["whole"] / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run["broken"] / "checkpoints" / "last.ckpt", weights_only=True)
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
    result = ftlit("fit", *cli_args(tiny_bert, toy_data, tmp_path, *extra), check=False, env=ONE_THREAD)
    assert result.returncode == 128 + int(__import__("signal").SIGTERM)  # preempted: neither done (0) nor failed
    assert not list((tmp_path / "checkpoints").glob("*-v1.ckpt"))  # the stop's last.ckpt is the run's only one
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ftlit: stopped by SIGTERM at step ") and last.endswith("resume with --ckpt_path last")
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] in (7, 8) and saved["epoch"] == 0


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_best_checkpoint(tiny_bert, toy_data, tmp_path, capsys):
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
    # In this process (`ftlit` is `main`): a new one would cost ~15 s of imports.
    with pytest.raises(SystemExit) as exc:
        main(["fit", *args])
    assert exc.value.code == 1
    assert "ftlit: error: training loss is nan at step 15 (epoch 1)" in capsys.readouterr().err.strip().splitlines()[-1]
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


def test_truncated_last_checkpoint_is_a_clear_error(tiny_bert, toy_data, tmp_path, capsys):
    # Both runs in this process (`ftlit` is `main`): a new one would cost ~15 s of imports.
    main(["fit", *cli_args(tiny_bert, toy_data, tmp_path, "--trainer.max_epochs=1")])
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    # cli_error: exit code 2, and the one error line is stderr's last.
    err = cli_error(
        ["fit", *cli_args(tiny_bert, toy_data, tmp_path, "--trainer.max_epochs=2"), "--ckpt_path=last"], capsys
    )
    assert f"ftlit: error: ckpt_path: '{last}' is not a readable checkpoint" in err
    with pytest.raises(ConfigError, match="is not a readable checkpoint"):
        AtomicCheckpointIO().load_checkpoint(last)
