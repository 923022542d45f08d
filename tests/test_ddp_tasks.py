"""DDP on the CPU (2 processes, gloo) for the NER task: entity scores and predictions equal a single process's."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from test_ner import fit_args, toy_ner_rows, write_conll
from test_production import ftlit, last_metrics

from conftest import write_jsonl
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
def ddp_run(tiny_bert, tmp_path_factory) -> dict:
    """One short NER fit; the checkpoint and data that the tests below evaluate with 1 and with 2 processes."""
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
    return {"data": data, "ckpt": str(ckpt), "texts": texts, "tmp": tmp}


def args(tiny_bert: str, run: dict, root: Path, *extra: str) -> list[str]:
    return [*fit_args(tiny_bert, root, run["data"], *extra), f"--ckpt_path={run['ckpt']}"]


@pytest.fixture(scope="module")
def validated(tiny_bert, ddp_run) -> dict[str, Path]:
    """`ftlit validate` of the checkpoint in this process and under DDP: the run folder of each."""
    one, two = ddp_run["tmp"] / "validate-one", ddp_run["tmp"] / "validate-two"
    FtlitCLI(args=["validate", *args(tiny_bert, ddp_run, one)])
    ftlit("validate", *args(tiny_bert, ddp_run, two, *DDP))
    return {"one": one, "two": two}


def test_ddp_validation_entity_scores_equal_a_single_process(validated):
    one, two = validated["one"], validated["two"]
    assert 0.0 < last_metrics(one, "val/f1") < 1.0, "a trivial score would hide a lost or repeated sentence"
    for key in ("val/precision", "val/recall", "val/f1"):
        assert last_metrics(two, key) == pytest.approx(last_metrics(one, key), abs=1e-6), key


def test_ddp_validation_loss_equals_a_single_process(validated):
    one, two = validated["one"], validated["two"]
    assert last_metrics(two, "val/loss") == pytest.approx(last_metrics(one, "val/loss"), abs=1e-6)


def test_ddp_predict_writes_entities_in_input_order_like_a_single_process(tiny_bert, ddp_run):
    one, two = ddp_run["tmp"] / "predict-one", ddp_run["tmp"] / "predict-two"
    FtlitCLI(args=["predict", *args(tiny_bert, ddp_run, one)])
    ftlit("predict", *args(tiny_bert, ddp_run, two, *DDP))
    single = [json.loads(line) for line in (one / "predictions.jsonl").read_text().splitlines()]
    multi = [json.loads(line) for line in (two / "predictions.jsonl").read_text().splitlines()]
    texts = ddp_run["texts"]
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
