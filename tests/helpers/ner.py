"""Toy NER data (CoNLL files of sentiment-word entities) and the NER command line of the tests."""

from __future__ import annotations

import random
from pathlib import Path

from conftest import FILLER, NEGATIVE, POSITIVE, cli_args

DEFAULTS = ("--trainer.max_epochs=4", "--model.scheduler=constant", "--data.batch_size=16")
TASK = ("ftlit.tasks.ner.TokenClassifier", "ftlit.tasks.ner.TokenClassificationDataModule")


# Entity words of the toy set: each word decides its tag, so the tiny model learns it in a few epochs. The -s/-ly
# forms split into sub-tokens (good ##s, bad ##ly); "food service" is the two-word ORG entity.
ENTITY_WORDS = {"POS": [*POSITIVE, "goods", "greatly"], "NEG": [*NEGATIVE, "badly", "poorly"]}
OTHER_WORDS = [w for w in FILLER if w not in ("food", "service")]


def toy_ner_rows(n: int, seed: int) -> list[dict]:
    """Sentences of filler words (O) with one or two entities: a sentiment word, or ``food service``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.sample(OTHER_WORDS, rng.randint(2, 5))
        tags = ["O"] * len(words)
        for _ in range(rng.randint(1, 2)):
            kind = rng.choice(["POS", "NEG", "ORG"])
            if kind == "ORG":
                entity, entity_tags = ["food", "service"], ["B-ORG", "I-ORG"]
            else:
                entity, entity_tags = [rng.choice(ENTITY_WORDS[kind])], [f"B-{kind}"]
            at = rng.randint(0, len(words))
            words[at:at], tags[at:at] = entity, entity_tags
        rows.append({"tokens": words, "tags": tags})
    return rows


def write_conll(path: Path, rows: list[dict]) -> Path:
    """Rows as a CoNLL-2003 style file (token, two dummy columns, tag), with a -DOCSTART- line."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for row in rows:
        lines += [f"{w} X X {t}" for w, t in zip(row["tokens"], row["tags"], strict=True)] + [""]
    path.write_text("\n".join(lines))
    return path


def fit_args(tiny_bert: str, root: Path, data: dict[str, str], *extra: str) -> list[str]:
    """An `ftlit fit` command line for the tiny model on NER data."""
    return cli_args(tiny_bert, data, root, *extra, task=TASK, defaults=DEFAULTS)
