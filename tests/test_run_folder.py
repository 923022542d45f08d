"""A run folder belongs to one run, nothing a fit did is lost at its end or on a stop, and a command that fails
says so in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from conftest import cli_args, cli_error, read_metrics
from ftlit.cli import FtlitCLI, main


def fit(tiny_bert, data, root, *extra: str) -> FtlitCLI:
    return FtlitCLI(args=["fit", *cli_args(tiny_bert, data, root, *extra)])


def last_step(root) -> int:
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


# The quickstart's EarlyStopping: it needs a validation before the fit ends.
EARLY_STOPPING = ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/acc"]


@pytest.mark.parametrize(("steps", "validated"), [(3, [2]), (15, [11, 14])], ids=["smoke-run", "second-epoch"])
def test_max_steps_mid_epoch_is_validated_and_saved(tiny_bert, toy_data, tmp_path, steps, validated):
    # 96 rows in batches of 8: 12 steps an epoch, so both stop mid-epoch; the last steps must reach last.ckpt and be
    # validated (Lightning logs a validation at the step before its number).
    fit(tiny_bert, toy_data, tmp_path, f"--trainer.max_steps={steps}", *EARLY_STOPPING, "--trainer.callbacks.mode=max")
    assert last_step(tmp_path) == steps
    assert [int(r["step"]) for r in read_metrics(tmp_path) if r.get("val/acc")] == validated


def test_a_run_folder_belongs_to_one_run(tiny_bert, toy_data, tmp_path, capsys):
    fit(tiny_bert, toy_data, tmp_path, "--trainer.max_steps=2")
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()}
    err = cli_error(["fit", *cli_args(tiny_bert, toy_data, tmp_path, "--trainer.max_steps=3")], capsys)
    assert err.startswith("ftlit: error: trainer.default_root_dir: ") and "--ckpt_path last" in err, err
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()} == before

    # Told to, a new run replaces the old one's checkpoints: no last-v1.ckpt beside them.
    fit(tiny_bert, toy_data, tmp_path, "--trainer.max_steps=3", "--overwrite=true")
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")) == ["epoch=0-step=3.ckpt", "last.ckpt"]
    assert last_step(tmp_path) == 3


def test_a_run_s_saved_config_run_into_another_folder_leaves_the_first_run_alone(tiny_bert, toy_data, tmp_path):
    """config.yaml keeps the run-folder paths ftlit derives (the checkpoint folder, the loggers' folder) as given:
    a user who trains the saved config again with another default_root_dir (and --overwrite, for that folder) got
    the new checkpoints written into, and the old ones deleted from, the first run's checkpoints/."""
    first, second = tmp_path / "first", tmp_path / "second"
    fit(tiny_bert, toy_data, first, "--trainer.max_steps=2")
    saved = first / "csv" / "version_0" / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    assert config["checkpoint"]["dirpath"] is None and config["trainer"]["logger"] is None
    before = {p.name: p.read_bytes() for p in (first / "checkpoints").iterdir()}
    args = ["fit", "--config", str(saved), f"--trainer.default_root_dir={second}", "--overwrite=true"]
    FtlitCLI(args=[*args, "--trainer.max_steps=3"])
    assert {p.name: p.read_bytes() for p in (first / "checkpoints").iterdir()} == before
    assert last_step(second) == 3 and (second / "csv" / "version_0" / "metrics.csv").is_file()
    # The saved config still resumes its own run.
    FtlitCLI(args=["fit", "--config", str(saved), "--ckpt_path=last", "--trainer.max_steps=4"])
    assert last_step(first) == 4


def test_a_second_live_process_is_kept_out(tiny_bert, toy_data, tmp_path, capsys):
    # Another process holds the run's lock (as a running fit does): a fit into the same folder is refused.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from ftlit.run_folder import RunLock; lock = RunLock({str(tmp_path)!r}); lock.acquire(); "
            "print('locked', flush=True); import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = cli_error(["fit", *cli_args(tiny_bert, toy_data, tmp_path, "--trainer.max_steps=1")], capsys)
        assert f"another ftlit process (pid {holder.pid}) is running in" in err, err
    finally:
        holder.kill()
        holder.wait()
    # The kernel drops the lock of a killed process: the folder is usable at once.
    fit(tiny_bert, toy_data, tmp_path, "--trainer.max_steps=1")
    assert last_step(tmp_path) == 1


def test_stray_temporary_files_are_removed_on_resume(tiny_bert, toy_data, tmp_path):
    fit(tiny_bert, toy_data, tmp_path, "--trainer.max_steps=2")
    stray = tmp_path / "checkpoints" / ".last.ckpt.tmp4242"
    stray.write_bytes(b"half a checkpoint")
    fit(tiny_bert, toy_data, tmp_path, "--trainer.max_steps=3", "--ckpt_path=last")
    assert not stray.exists() and last_step(tmp_path) == 3


@pytest.mark.parametrize(
    ("command", "ckpt", "expected"),
    [
        ("fit", "last", "ckpt_path: 'last': there is no "),
        ("test", "last", "ckpt_path: 'last': there is no "),
        ("fit", "best", "ckpt_path: 'best' is for test, validate and predict"),
    ],
)
def test_nothing_to_resume_or_test_is_an_error(tiny_bert, toy_data, tmp_path, capsys, command, ckpt, expected):
    err = cli_error([command, *cli_args(tiny_bert, toy_data, tmp_path), f"--ckpt_path={ckpt}"], capsys)
    assert err.startswith(f"ftlit: error: {expected}"), err


def test_an_unexpected_error_is_one_line_with_a_traceback_file(tiny_bert, toy_data, tmp_path, capsys):
    args = cli_args(tiny_bert, toy_data, tmp_path, "--trainer.callbacks+=faults.RaiseAt", "--trainer.callbacks.step=2")
    with pytest.raises(SystemExit) as exc:
        main(["fit", *args])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ftlit: error: internal error: RuntimeError: injected bug at step 2; full traceback in ")
    assert "Traceback" not in "\n".join(err)
    logs = list(tmp_path.glob("ftlit-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err[-1]
    assert "injected bug at step 2" in logs[0].read_text() and "Traceback" in logs[0].read_text()


def test_the_lock_is_released_when_a_fit_fails(tiny_bert, toy_data, tmp_path, capsys):
    args = cli_args(tiny_bert, toy_data, tmp_path, "--trainer.callbacks+=faults.RaiseAt", "--trainer.callbacks.step=1")
    with pytest.raises(SystemExit):
        main(["fit", *args])
    capsys.readouterr()
    fit(tiny_bert, toy_data, tmp_path, "--trainer.max_steps=2")  # in the same process: the lock must be free
    assert last_step(tmp_path) == 2
