"""Toy extractive-QA data: the answer is the context's sentiment word."""

from __future__ import annotations

import json
import random
from pathlib import Path

from conftest import FILLER, NEGATIVE, POSITIVE, cli_args

# The toy task: the answer is the context's one sentiment word, with the "very" before it when there is one. Every
# word of the tiny vocabulary is one token, except "goods" (good ##s) and "badly" (bad ##ly).
ANSWER_WORDS = [*POSITIVE, *NEGATIVE, "goods", "badly"]
CONTEXT_WORDS = [w for w in FILLER if w != "very"]


def toy_qa_rows(n: int, seed: int, unanswerable: float = 0.0, words: tuple[int, int] = (3, 12)) -> list[dict]:
    """Flat rows in ``run_qa.py``'s layout; a share ``unanswerable`` of contexts has no sentiment word, no answer."""
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        context = rng.choices(CONTEXT_WORDS, k=rng.randint(*words))
        texts, starts = [], []
        if rng.random() >= unanswerable:
            phrase = (["very"] if rng.random() < 0.4 else []) + [rng.choice(ANSWER_WORDS)]
            at = rng.randint(0, len(context))
            starts.append(len(" ".join(context[:at])) + (1 if at else 0))
            context[at:at] = phrase
            texts.append(" ".join(phrase))
        question = " ".join(rng.sample(CONTEXT_WORDS, 2)) + " ?"
        row = {"id": f"q{seed}-{k}", "question": question, "context": " ".join(context)}
        rows.append({**row, "answers": {"text": texts, "answer_start": starts}})
    return rows


def write_squad(path: Path, rows: list[dict], version: str = "1.1") -> Path:
    """Flat rows as a SQuAD JSON file (one paragraph per row; v2.0 marks questions without answers impossible)."""
    paragraphs = []
    for r in rows:
        answers = [{"text": t, "answer_start": s} for t, s in zip(*r["answers"].values(), strict=True)]
        qa = {"id": r["id"], "question": r["question"], "answers": answers}
        if version.startswith("v2"):
            qa["is_impossible"] = not answers
        paragraphs.append({"context": r["context"], "qas": [qa]})
    path.write_text(json.dumps({"version": version, "data": [{"title": "toy", "paragraphs": paragraphs}]}))
    return path


DEFAULTS = (
    "--trainer.max_epochs=4",
    "--model.scheduler=constant",
    "--data.batch_size=16",
    "--data.max_length=32",
    "--data.doc_stride=8",
)


TASK = ("ftlit.tasks.qa.QuestionAnswering", "ftlit.tasks.qa.QuestionAnsweringDataModule")


def fit_args(tiny_bert: str, root: Path, data: dict[str, str], *extra: str) -> list[str]:
    """An `ftlit fit` command line for the tiny model on QA data."""
    return cli_args(tiny_bert, data, root, *extra, task=TASK, defaults=DEFAULTS)
