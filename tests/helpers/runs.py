"""Running ``ftlit`` as a user does: a new process, and the numbers it logged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import cli_args, cli_error, read_metrics
from helpers.ner import fit_args

# The tests folder: where faults.py lives (a run loads its callbacks as faults.<Name>).
TESTS = Path(__file__).resolve().parents[1]


def ftlit(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m ftlit`` in a new process (DDP launches re-run the same command per rank)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    result = subprocess.run([sys.executable, "-m", "ftlit", *args], cwd=TESTS, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"ftlit {args[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def last_metrics(root: Path, key: str) -> float:
    return [float(r[key]) for r in read_metrics(root) if r.get(key)][-1]


def assert_no_work(tmp_path: Path, root: Path) -> None:
    """Nothing was tokenized (the per-test cache folder is absent) and no training started."""
    assert not (tmp_path / "cache").exists(), "the data was tokenized despite bad input"
    assert not (root / "checkpoints").exists(), "training started despite bad input"


def run_fit(tiny_bert, data, tmp_path, capsys, *extra) -> str:
    """Run `ftlit fit`, expect a clean exit with an error before any work, and return the one-line message."""
    root = tmp_path / "run"
    err = cli_error(["fit", *cli_args(tiny_bert, data, root, *extra)], capsys)
    assert_no_work(tmp_path, root)
    return err


def run_ner_fit(tiny_bert, data, tmp_path, capsys, *extra) -> str:
    """`run_fit` for the NER task (``ftlit.tasks.ner.TokenClassifier`` on ``TokenClassificationDataModule``)."""
    root = tmp_path / "run"
    err = cli_error(["fit", *fit_args(tiny_bert, root, data, *extra)], capsys)
    assert_no_work(tmp_path, root)
    return err
