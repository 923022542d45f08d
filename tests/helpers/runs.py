"""Running ``ftlit`` as a user does: a new process, and the numbers it logged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryFile

from conftest import cli_args, cli_error, read_metrics, tokenized
from helpers.ner import fit_args

# The tests folder: where faults.py lives (a run loads its callbacks as faults.<Name>).
TESTS = Path(__file__).resolve().parents[1]
# `env` for a new process: torch on one thread, as the ``one_torch_thread`` fixture sets it in this one.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def ftlit(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m ftlit`` in a new process (DDP launches re-run the same command per rank); ``env`` adds
    environment variables."""
    env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    result = subprocess.run([sys.executable, "-m", "ftlit", *args], cwd=TESTS, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"ftlit {args[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def ftlit_at_once(*commands: list[str], env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
    """Run ``python -m ftlit <command>`` for each of ``commands`` at the same time, each in a new process.

    Independent runs overlap their imports (~15 s of one core each). ``env`` adds environment variables. Returns
    their results in order, unchecked, as ``ftlit(..., check=False)`` does.
    """
    env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    with ExitStack() as stack:
        # Output to files, not pipes: a full pipe that is not read yet would stall its process.
        outputs = [
            (stack.enter_context(TemporaryFile("w+")), stack.enter_context(TemporaryFile("w+"))) for _ in commands
        ]
        started = [
            subprocess.Popen(
                [sys.executable, "-m", "ftlit", *args], cwd=TESTS, env=env, stdout=out, stderr=err, text=True
            )
            for args, (out, err) in zip(commands, outputs, strict=True)
        ]
        results = []
        for process, (out, err) in zip(started, outputs, strict=True):
            process.wait()
            out.seek(0)
            err.seek(0)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read()))
    return results


def ftlit_job(commands: list[list[str]], folder: Path, timeout: float = 900) -> set[str]:
    """Run ``ftlit`` commands in order in one new process (and the ranks it launches), as ``ftlit.cli.main`` each.

    One DDP start costs ~15 s on 2 cores, most of it importing torch and Lightning in both ranks: Lightning's
    launcher starts the second rank on the first command, and the later ones find the ranks and the process group
    already there, as under torchrun. Returns the ``<command number> <subcommand> rank <r> of <world size>`` line
    that every rank printed after each command (the ranks share the output pipe). A rank that dies leaves the other
    waiting in a collective: after ``timeout`` seconds the whole process group is killed and the job fails.
    """
    plan = folder / "commands.json"
    plan.write_text(json.dumps(commands))
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    with subprocess.Popen(
        [sys.executable, __file__, str(plan)],
        cwd=TESTS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the ranks it launches are killed with it
    ) as job:
        try:
            out, err = job.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            out, err = job.communicate()
            raise AssertionError(f"ftlit commands hung for {timeout} s:\n{err[-3000:]}") from None
    if job.returncode != 0:
        raise AssertionError(f"ftlit commands failed ({job.returncode}):\n{err[-3000:]}")
    return {line for line in out.splitlines() if " rank " in line}


def every_rank_ran(commands: list[list[str]], world_size: int = 2) -> set[str]:
    """The lines `ftlit_job` returns when every command ran on each rank of one ``world_size``-process group."""
    return {f"{i} {c[0]} rank {r} of {world_size}" for i, c in enumerate(commands) for r in range(world_size)}


def last_metrics(root: Path, key: str) -> float:
    return [float(r[key]) for r in read_metrics(root) if r.get(key)][-1]


def assert_no_work(tmp_path: Path, root: Path) -> None:
    """Nothing was tokenized (the per-test cache folder is absent) and no training started."""
    assert not tokenized(tmp_path / "cache"), "the data was tokenized despite bad input"
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


if __name__ == "__main__":
    # `ftlit_job`: every rank runs the same commands in the same order.
    import torch.distributed as dist

    from ftlit.cli import main

    for number, args in enumerate(json.loads(Path(sys.argv[1]).read_text())):
        main(args)
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        # One write per line: both ranks share the pipe, and print() writes the text and its newline apart.
        sys.stdout.write(f"{number} {args[0]} rank {rank} of {world}\n")
        sys.stdout.flush()
