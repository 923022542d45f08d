"""Toy data and command-line pieces of the text tasks (regression, multi-label classification)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from conftest import FILLER, NEGATIVE, POSITIVE

REGRESSION = ["--model=ftlit.tasks.text.SequenceRegressor", "--data=ftlit.tasks.text.RegressionDataModule"]
MULTI_LABEL = ["--model=ftlit.tasks.text.MultiLabelClassifier", "--data=ftlit.tasks.text.MultiLabelDataModule"]
FAST = ["--trainer.max_epochs=4", "--model.scheduler=constant", "--model.learning_rate=1e-2"]


# MSE on a tiny random BERT learns more slowly (and diverges at 1e-2).
REGRESSION_FIT = ["--trainer.max_epochs=8", "--model.scheduler=constant", "--model.learning_rate=3e-3"]
TOPICS = ["comma", "question"]


def scored_rows(n: int, seed: int) -> list[dict]:
    """Sentences scored by their sentiment words: +1 per positive word, -1 per negative one."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        sentiment = rng.sample(POSITIVE, rng.randint(0, 2)) + rng.sample(NEGATIVE, rng.randint(0, 2))
        words = rng.sample(FILLER, rng.randint(1, 3)) + sentiment
        rng.shuffle(words)
        score = sum(w in POSITIVE for w in sentiment) - sum(w in NEGATIVE for w in sentiment)
        rows.append({"text": " ".join(words), "score": float(score)})
    return rows


def tagged_rows(n: int, seed: int) -> list[dict]:
    """Sentences tagged ``comma`` and/or ``question`` by their punctuation (none, one or both)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topics = sorted(t for t in TOPICS if rng.random() < 0.5)
        words = rng.sample(FILLER + POSITIVE + NEGATIVE, rng.randint(2, 4))
        if "comma" in topics:
            words.insert(rng.randint(1, len(words)), ",")
        rows.append({"text": " ".join(words) + (" ?" if "question" in topics else " ."), "topics": topics})
    return rows


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
