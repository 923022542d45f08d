"""DDP on the CPU (2 processes, gloo) for NER, regression and multi-label classification: validation scores and
predictions equal a single process's."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from helpers.ner import fit_args, toy_ner_rows, write_conll
from helpers.runs import every_rank_ran, ftlit_job, last_metrics
from helpers.text import FAST, MULTI_LABEL, REGRESSION, REGRESSION_FIT, read_jsonl, scored_rows, tagged_rows

from conftest import cli_args, write_jsonl
from ftlit.cli import FtlitCLI

DDP = ("--trainer.strategy=ddp", "--trainer.devices=2")
# Odd on purpose: 41 validation sentences and 17 texts to tag do not split evenly over 2 ranks, and with 4 rows a
# batch the ranks even run different numbers of batches (validation 6 and 5, predict 3 and 2). A sampler that pads
# with repeated rows would count a sentence twice; one that drops the remainder would lose one.
N_VALIDATION, N_PREDICT, EVAL_BATCH = 41, 17, 4


def predict_texts(n: int, seed: int) -> list[str]:
    """Raw text to tag: toy sentences of different lengths, with odd spacing and case, and one empty text."""
    rng = random.Random(seed)
    texts = []
    for row in toy_ner_rows(n - 1, seed):
        words = [w.upper() if rng.random() < 0.2 else w for w in row["tokens"]]
        texts.append("".join(w + rng.choice([" ", "  ", "\t"]) for w in words).strip())
    texts.insert(n // 2, "")
    return texts


@pytest.fixture(scope="module")
def ner_runs(tiny_bert, tmp_path_factory, one_torch_thread) -> dict:
    """One short NER fit, then `validate` and `predict` of its checkpoint in this process.

    Returns the texts to tag, the run folders (``validate-one``, ``validate-two``, ``predict-one``,
    ``predict-two``) and ``ddp``: the 2-process commands that write the ``-two`` folders, for `ddp_job` to run.
    """
    tmp = tmp_path_factory.mktemp("ner-ddp")
    texts = predict_texts(N_PREDICT, 3)
    data = {
        "train_file": str(write_conll(tmp / "train.conll", toy_ner_rows(96, 0))),
        "validation_file": str(write_jsonl(tmp / "validation.jsonl", toy_ner_rows(N_VALIDATION, 1))),
        "predict_file": str(write_jsonl(tmp / "predict.jsonl", [{"text": t} for t in texts])),
        "eval_batch_size": str(EVAL_BATCH),
        "cache_dir": str(tmp / "cache"),  # the autouse cache fixture is per test; this fixture is per module
    }
    root = tmp / "fit"
    # Trained in this process (a DDP start costs ~15 s on 2 cores); 12 steps are too few to learn every entity, so
    # the scores compared below are neither 0 nor 1 and a sentence counted twice or lost would change them.
    FtlitCLI(args=["fit", *fit_args(tiny_bert, root, data, "--trainer.max_epochs=1", "--data.batch_size=8")])
    ckpt = root / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 12
    runs: dict = {"texts": texts, "ddp": []}
    for stage in ("validate", "predict"):
        runs[f"{stage}-one"], runs[f"{stage}-two"] = tmp / f"{stage}-one", tmp / f"{stage}-two"
        FtlitCLI(args=[stage, *fit_args(tiny_bert, runs[f"{stage}-one"], data), f"--ckpt_path={ckpt}"])
        runs["ddp"].append([stage, *fit_args(tiny_bert, runs[f"{stage}-two"], data, *DDP), f"--ckpt_path={ckpt}"])
    return runs


def test_ddp_validation_entity_scores_equal_a_single_process(ner_runs, ddp_job):
    one, two = ner_runs["validate-one"], ner_runs["validate-two"]
    assert 0.0 < last_metrics(one, "val/f1") < 1.0, "a trivial score would hide a lost or repeated sentence"
    for key in ("val/precision", "val/recall", "val/f1"):
        assert last_metrics(two, key) == pytest.approx(last_metrics(one, key), abs=1e-6), key


def test_ddp_validation_loss_equals_a_single_process(ner_runs, ddp_job):
    one, two = ner_runs["validate-one"], ner_runs["validate-two"]
    assert last_metrics(two, "val/loss") == pytest.approx(last_metrics(one, "val/loss"), abs=1e-6)


def test_ddp_predict_writes_entities_in_input_order_like_a_single_process(ner_runs, ddp_job):
    single, multi = (read_jsonl(ner_runs[f"predict-{n}"] / "predictions.jsonl") for n in ("one", "two"))
    texts = ner_runs["texts"]
    assert len(multi) == len(single) == N_PREDICT
    assert sum(len(r["entities"]) for r in multi) > 0
    # Row i belongs to input i: one tag per word of text i, and every entity's offsets point into text i.
    for row, text in zip(multi, texts, strict=True):
        assert len(row["tags"]) == len(text.split())
        for entity in row["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
    for a, b in zip(multi, single, strict=True):
        assert a["tags"] == b["tags"]
        assert [{**e, "score": None} for e in a["entities"]] == [{**e, "score": None} for e in b["entities"]]
        assert [e["score"] for e in a["entities"]] == pytest.approx([e["score"] for e in b["entities"]], abs=1e-6)


# --- regression and multi-label -----------------------------------------------------------------------------------


TASKS = {
    "regression": {
        "flags": [*REGRESSION, "--data.label_column=score", *REGRESSION_FIT, "--trainer.max_epochs=1"],
        "rows": scored_rows,
        "metrics": ("val/pearson", "val/spearman", "val/mse", "val/loss"),
    },
    "multi_label": {
        "flags": [*MULTI_LABEL, "--data.label_column=topics", *FAST, "--trainer.max_epochs=2"],
        "rows": tagged_rows,
        "metrics": ("val/f1_micro", "val/f1_macro", "val/exact_match", "val/loss"),
    },
}


@pytest.fixture(scope="module")
def text_task_runs(tiny_bert, tmp_path_factory, one_torch_thread) -> dict:
    """Per task: one short fit in this process, then `validate` and `predict` of its checkpoint in this process.

    Returns each task's folder, which holds the run folders ``validate-one``, ``validate-two``, ``predict-one`` and
    ``predict-two``, and ``ddp``: the 2-process commands that write the ``-two`` folders, for `ddp_job` to run.
    """
    tmp = tmp_path_factory.mktemp("text-tasks-ddp")
    runs: dict = {"ddp": []}
    for name, task in TASKS.items():
        folder = tmp / name
        folder.mkdir()
        make = task["rows"]
        data = {
            "train_file": str(write_jsonl(folder / "train.jsonl", make(96, 0))),
            "validation_file": str(write_jsonl(folder / "validation.jsonl", make(N_VALIDATION, 1))),
            "predict_file": str(
                write_jsonl(folder / "predict.jsonl", [{"text": r["text"]} for r in make(N_PREDICT, 9)])
            ),
            "eval_batch_size": str(EVAL_BATCH),
            "cache_dir": str(folder / "cache"),  # the autouse cache fixture is per test; this fixture is per module
        }

        def command(root: Path, *extra: str, data=data, flags=task["flags"]) -> list[str]:
            return cli_args(tiny_bert, data, root, *flags, *extra)

        # 12 or 24 steps (no validation: only the checkpoint counts): the scores compared below are neither 0 nor 1
        # (checked), so a row counted twice or lost would show.
        FtlitCLI(args=["fit", *command(folder / "fit", "--trainer.limit_val_batches=0")])
        ckpt = f"--ckpt_path={folder / 'fit' / 'checkpoints' / 'last.ckpt'}"
        for stage in ("validate", "predict"):
            FtlitCLI(args=[stage, *command(folder / f"{stage}-one"), ckpt])
            runs["ddp"].append([stage, *command(folder / f"{stage}-two", *DDP), ckpt])
        runs[name] = folder
    return runs


@pytest.fixture(scope="module")
def ddp_job(ner_runs, text_task_runs, tmp_path_factory) -> None:
    """Every 2-process command of this module (validate and predict, for each task) in one job: one DDP start."""
    commands = [*ner_runs["ddp"], *text_task_runs["ddp"]]
    # Every command ran on both ranks of one 2-process group (none fell back to a single process).
    assert ftlit_job(commands, tmp_path_factory.mktemp("ddp-job")) == every_rank_ran(commands)


@pytest.mark.parametrize("task", list(TASKS))
def test_ddp_validation_metrics_equal_a_single_process(text_task_runs, ddp_job, task):
    one, two = (text_task_runs[task] / f"validate-{n}" for n in ("one", "two"))
    scores = {key: last_metrics(one, key) for key in TASKS[task]["metrics"]}
    bounded = {k: v for k, v in scores.items() if k not in ("val/mse", "val/loss")}
    assert all(0.0 < abs(v) < 1.0 for v in bounded.values()), f"a trivial score would hide a lost row: {scores}"
    for key, value in scores.items():
        assert last_metrics(two, key) == pytest.approx(value, abs=1e-5), key


def test_ddp_regression_predictions_in_input_order_like_a_single_process(text_task_runs, ddp_job):
    single, multi = (
        read_jsonl(text_task_runs["regression"] / f"predict-{n}/predictions.jsonl") for n in ("one", "two")
    )
    assert len(multi) == len(single) == N_PREDICT
    values = [r["value"] for r in single]
    assert len(set(values)) == N_PREDICT, "rows with equal values would not show a wrong order"
    assert [r["value"] for r in multi] == pytest.approx(values, abs=1e-5)


def test_ddp_multi_label_predictions_in_input_order_like_a_single_process(text_task_runs, ddp_job):
    single, multi = (
        read_jsonl(text_task_runs["multi_label"] / f"predict-{n}/predictions.jsonl") for n in ("one", "two")
    )
    assert len(multi) == len(single) == N_PREDICT
    assert len({json.dumps(r["probs"]) for r in single}) == N_PREDICT, "equal rows would not show a wrong order"
    assert len({tuple(r["labels"]) for r in single}) > 1, "the same labels for every text would not show one either"
    assert [r["labels"] for r in multi] == [r["labels"] for r in single]
    for a, b in zip(multi, single, strict=True):
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-5)
