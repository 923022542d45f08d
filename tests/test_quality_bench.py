"""The quality benchmark's runner (benchmarks/quality/run.py) on a toy set: a killed run resumes at the first
unfinished row and never reruns a finished one, ``--only`` reruns one, the row lock, the failed rule, the summary
and the plan; and one pair of tiny-model rows (the Trainer and ftlit's default) run for real, in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, toy_rows, write_jsonl

sys.path.insert(0, str(REPO / "benchmarks" / "quality"))

import quality_bench as qb  # noqa: E402
import quality_report  # noqa: E402


@pytest.fixture
def toy_root(tmp_path):
    """``data/quality``'s layout with one learnable binary set, ``toy`` (1,200 training rows: all three sizes)."""
    folder = tmp_path / "data" / "toy"
    folder.mkdir(parents=True)
    train = toy_rows(1200, 0)
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "train-100.jsonl", train[:100])
    write_jsonl(folder / "train-1000.jsonl", train[:1000])
    write_jsonl(folder / "validation.jsonl", toy_rows(40, 1))
    write_jsonl(folder / "test.jsonl", toy_rows(40, 2))
    meta = {
        "name": "toy",
        "task": "classification",
        "sizes": {"train": 1200, "validation": 40, "test": 40},
        "ftlit_data": {"class_path": "ftlit.tasks.text.ClassificationDataModule"},
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return tmp_path / "data"


def args(root, tmp_path, *extra: str) -> list[str]:
    return ["--tiny", f"--data={root}", "--sets", "toy", f"--work={tmp_path / 'work'}", *extra]


def fake_record(row: qb.Row, accuracy: float, wall: float = 10.0, cap_hit: bool = False) -> dict:
    return {
        "format": qb.FORMAT,
        "row": {"set": row.set, "size": row.size, "system": row.system, "seed": row.seed},
        "task": "classification",
        "model": "tiny-bert",
        "status": "ok",
        "train_rows": 20,
        "baseline": {"metric": "accuracy", "score": 0.5, "skewed": False},
        "val": {"accuracy": accuracy, "f1_macro": accuracy},
        "test": {"accuracy": accuracy, "f1_macro": accuracy},
        "wall_s": wall,
        "max_time_s": None if row.system == "trainer" else 2.0,
        "cap_hit": cap_hit,
        "epochs": 3,
        "steps": 9,
        "started": "now",
    }


def test_a_killed_run_resumes_at_the_first_unfinished_row(toy_root, tmp_path, monkeypatch):
    calls: list[str] = []
    kill_at = [3]  # the third row is interrupted, as SIGTERM does

    def fake_run_row(ns, data, row, done):
        calls.append(row.id)
        if len(calls) == kill_at[0]:
            raise qb.Stop("SIGTERM")
        return fake_record(row, 0.8)

    monkeypatch.setattr(qb, "run_row", fake_run_row)
    argv = args(toy_root, tmp_path, "--sizes", "100", "1000", "--seeds", "1", "2")
    assert qb.main(argv) == 130
    results = tmp_path / "work" / "quality"
    first = sorted(p.name for p in results.glob("*.json"))
    assert len(first) == 2 and not list(results.glob(".*.lock"))  # the killed row: no file, no lock left
    killed = calls[2]

    calls.clear()
    kill_at[0] = 0
    assert qb.main(argv) == 0
    rows = [r.id for r in qb.all_rows(qb.parse(argv), qb.Data(toy_root, tmp_path / "work", 20), {})[0]]
    assert len(rows) == 8  # 2 sizes x 2 seeds x (trainer, ftlit-default)
    assert calls[0] == killed and len(calls) == 6  # went on at the killed row; the 2 finished ones not rerun
    assert set(calls) | {qb.Row(**json.loads((results / n).read_text())["row"]).id for n in first} == set(rows)

    calls.clear()
    assert qb.main(argv) == 0 and calls == []  # all finished: nothing runs
    assert qb.main([*argv, "--only", "toy/1000/trainer/2"]) == 0 and calls == ["toy/1000/trainer/2"]

    # An error row is kept and not rerun, unless asked.
    bad = qb.Row("toy", "100", "trainer", 1)
    qb.write_row(results, bad, {**fake_record(bad, 0.0), "status": "error", "error": "boom"})
    calls.clear()
    assert qb.main(argv) == 0 and calls == []
    assert qb.main([*argv, "--retry-errors"]) == 0 and calls == [bad.id]


def test_row_lock_skips_a_live_runner_and_takes_over_a_dead_ones(tmp_path):
    row = qb.Row("toy", "100", "trainer", 1)
    lock = qb.RowLock(tmp_path, row)
    lock.path.parent.mkdir(parents=True, exist_ok=True)
    lock.path.write_text(str(__import__("os").getpid()))  # this process: alive
    assert not lock.acquire()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.path.write_text(done.stdout.strip())  # a process that has ended
    assert lock.acquire()
    lock.release()
    assert not lock.path.exists()


def test_failed_rule():
    base = {"score": 0.6}
    assert qb.is_failed("classification", {"accuracy": 0.605}, base)
    assert not qb.is_failed("classification", {"accuracy": 0.7}, base)
    assert qb.is_failed("regression", {"pearson": 0.05}, {"score": None})
    assert qb.is_failed("regression", {"pearson": None}, {"score": None})  # NaN stored as null: constant output
    assert not qb.is_failed("regression", {"pearson": 0.5}, {"score": None})
    assert qb.is_failed("ner", {"f1": 0.0}, {"score": 0.0})


def test_summary_table_and_plan(toy_root, tmp_path):
    results = tmp_path / "work" / "quality"
    for seed, trainer, ftlit in ((1, 0.60, 0.85), (2, 0.70, 0.86), (3, 0.50, 0.87)):
        for system, acc, wall in (("trainer", trainer, 10.0), ("ftlit-default", ftlit, 30.0)):
            row = qb.Row("toy", "100", system, seed)
            qb.write_row(results, row, fake_record(row, acc, wall, cap_hit=system != "trainer"))
    md = quality_report.write_summary(results)
    assert md == tmp_path / "work" / "quality.md"
    text = md.read_text()
    # Trainer: mean 60.0, sd 10.0, worst seed 3 (50.0), which ended at the majority class (0.5): failed.
    assert "| toy | 100 | trainer | 3 | 60.0 ± 10.0 | 50.0 (3) | 3 | 60.0 ± 10.0 |" in text
    # ftlit-default: +26 points, sd 1.0 = 0.10x the Trainer's, 3.00x its wall time, 3 rows at the time cap.
    ftlit = "| toy | 100 | ftlit-default | 3 | 86.0 ± 1.0 | 85.0 (1) | 0 | 86.0 ± 1.0 | - | +26.0 | 0.10x "
    assert ftlit + "| 30 | 3.00x | 3 | 3 |" in text
    assert text.rstrip().endswith("| ftlit-default | 1 | 86.0 | +26.0 | 1.0 | 0.10x | 0 of 3 |")
    cells = json.loads((tmp_path / "work" / "quality.json").read_text())["cells"]
    assert [c["system"] for c in cells] == ["trainer", "ftlit-default"] and cells[1]["cap_hits"] == 3

    argv = args(toy_root, tmp_path, "--sizes", "100", "1000", "--seeds", "1", "2", "3")
    out = qb.plan(qb.parse(argv), qb.Data(toy_root, tmp_path / "work", 20))
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("toy/")}
    assert len(lines) == 12 and lines["toy/100/trainer/1"][1:2] == ["ok"]
    assert lines["toy/1000/trainer/1"][5:] == ["scaled"]  # from the measured Trainer rows
    assert " ".join(lines["toy/1000/ftlit-default/1"][5:]) == "cap (as its measured rows)"  # they stopped there
    assert "12 rows: 6 done" in out and "6 pending" in out


def test_tiny_rows_run_for_real_and_are_not_rerun(toy_root, tmp_path, one_torch_thread, capsys):
    argv = args(toy_root, tmp_path, "--sizes", "100", "--max-time-s", "2")
    assert qb.main(argv) == 0
    records = qb.load_rows(tmp_path / "work" / "quality")
    assert sorted(records) == ["toy/100/ftlit-default/1", "toy/100/trainer/1"]
    trainer, ftlit = records["toy/100/trainer/1"], records["toy/100/ftlit-default/1"]
    for r in (trainer, ftlit):
        assert r["status"] == "ok", r.get("log_tail")
        assert 0.0 <= r["test"]["accuracy"] <= 1.0 and 0.0 <= r["val"]["accuracy"] <= 1.0
        assert r["train_rows"] == 20 and r["wall_s"] > 0 and isinstance(r["failed"], bool)
    assert trainer["steps"] == 9 and trainer["batch_size"] == 8  # the Trainer's defaults: 3 epochs of batch 8
    assert ftlit["max_time_s"] == 2.0 and isinstance(ftlit["cap_hit"], bool)
    assert "--trainer.max_epochs" not in ftlit["command"] and "time_cap.TimeCap" in ftlit["command"]
    assert ftlit["stopped_by"] in ("time cap", "early stopping", "max_epochs", "max_steps")
    capsys.readouterr()
    assert qb.main(argv) == 0
    assert "0 rows run" in capsys.readouterr().out
