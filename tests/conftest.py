"""Shared fixtures: a tiny random BERT with its own WordPiece vocabulary, and a learnable toy dataset."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# No network in tests: fail fast instead of retrying the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Under pytest-xdist each worker has a core: torch on one thread there and in the processes a test starts, or
# two workers' thread pools wait on each other's cores (set before torch is imported, which reads it once).
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

POSITIVE = ["good", "great", "fine", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "poor", "terrible", "boring"]
FILLER = ["the", "movie", "was", "plot", "acting", "a", "very", "and", "food", "service", "it", "is", "quite"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tiny_bert(folder: Path, layers: int = 2, seed: int = 0, heads: int = 2) -> Path:
    """Save a randomly initialised BERT (hidden 32) and a WordPiece tokenizer over the toy vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + sorted(set(POSITIVE + NEGATIVE + FILLER + ["##s", "##ly", "?", ".", ","]))
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, model_max_length=128)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


def toy_rows(n: int, seed: int) -> list[dict]:
    """Sentences whose sentiment word decides the label: learnable in a few dozen steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["neg", "pos"])
        word = rng.choice(POSITIVE if label == "pos" else NEGATIVE)
        words = rng.sample(FILLER, rng.randint(1, 4)) + [word]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture
def toy_data(tmp_path) -> dict[str, str]:
    folder = tmp_path / "data"
    folder.mkdir()
    return {
        "train_file": str(write_jsonl(folder / "train.jsonl", toy_rows(96, 0))),
        "validation_file": str(write_jsonl(folder / "validation.jsonl", toy_rows(40, 1))),
        "test_file": str(write_jsonl(folder / "test.jsonl", toy_rows(30, 2))),
    }


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a module's in-process ``ftlit`` commands on one torch thread, and restore the count after.

    The tiny model gains nothing from a second intra-op thread: on 2 busy cores the two wait on each other, and a
    run takes up to twice the time.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A model that ships its own code (trust_remote_code): its configuration and modeling files.
CONFIGURATION = """
from transformers import BertConfig


class CustomBertConfig(BertConfig):
    model_type = "ftlit-custom-bert"
"""

MODELING = """
from transformers import BertForSequenceClassification

from .configuration_custom import CustomBertConfig


class CustomBertForSequenceClassification(BertForSequenceClassification):
    config_class = CustomBertConfig
    ran_custom_code = True
"""


@pytest.fixture
def custom_code_bert(tiny_bert, tmp_path) -> str:
    """The tiny BERT as a Hub-style repo with custom code: ``auto_map`` points at Python files in the folder."""
    folder = Path(shutil.copytree(tiny_bert, tmp_path / "custom-bert"))
    (folder / "configuration_custom.py").write_text(CONFIGURATION)
    (folder / "modeling_custom.py").write_text(MODELING)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "ftlit-custom-bert"
    config["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomBertConfig",
        "AutoModelForSequenceClassification": "modeling_custom.CustomBertForSequenceClassification",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


CLASSIFICATION = ("ftlit.tasks.text.SequenceClassifier", "ftlit.tasks.text.ClassificationDataModule")


def cli_args(
    tiny_bert: str,
    data: dict[str, str],
    root: Path,
    *extra: str,
    task: tuple[str, str] = CLASSIFICATION,
    defaults: tuple[str, ...] = (),
) -> list[str]:
    """A complete `ftlit fit` command line for the tiny model on ``data``.

    ``task`` is the (model, data module) pair; a task's ``defaults`` come before ``data`` and ``extra``, which
    override them.
    """
    model, data_module = task
    args = [
        "--seed_everything=0",
        f"--trainer.default_root_dir={root}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        f"--model={model}",
        f"--model.backbone={tiny_bert}",
        "--model.learning_rate=3e-3",
        f"--data={data_module}",
        "--data.batch_size=8",
        *defaults,
    ]
    args += [f"--data.{k}={v}" for k, v in data.items()]
    return args + list(extra)


def tokenized(cache: Path) -> list[Path]:
    """The tokenization cache's entries under ``cache`` (a test's ``FTLIT_CACHE``): a run that refuses its data
    before tokenizing leaves none. datasets' own Arrow copies of the raw files it read are kept in ``datasets/``
    there (every cache under the user's cache setting), and are not entries."""
    return [p for p in cache.iterdir() if p.name != "datasets"] if cache.is_dir() else []


def cli_error(argv: list[str], capsys) -> str:
    """Run ``ftlit <argv>`` on bad input and return its error line.

    It must exit with code 2, print exactly one ``ftlit: error:`` line, last, and no traceback, and start no
    training (no ``checkpoints/`` folder under the run's root).
    """
    from ftlit.cli import main

    roots = [a.split("=", 1)[1] for a in argv if a.startswith("--trainer.default_root_dir=")]
    had_checkpoints = bool(roots) and (Path(roots[-1]) / "checkpoints").exists()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("ftlit: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == errors[0]
    if roots and not had_checkpoints:
        assert not (Path(roots[-1]) / "checkpoints").exists(), "training started despite bad input"
    return errors[0]


def command_error(main, argv: list[str], capsys) -> str:
    """Run a small command's ``main(argv)`` (``ftlit plot``, ``report``, ``explain``) on bad input and return its
    error line: exit code 2, exactly one stderr line ``ftlit: error: ...``, no traceback."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ftlit: error: ") and "Traceback" not in err, err[-3000:]
    return lines[0]


def encoded(dm, split: str = "train"):
    """A data module's encoded ``split``, after the checks, tokenization and caching a run does."""
    dm.validate()
    dm.prepare_data()
    dm.setup()
    return dm.datasets[split]


def read_metrics(root: Path) -> list[dict[str, str]]:
    files = sorted(root.glob("csv/version_*/metrics.csv"))
    assert files, f"no metrics.csv under {root}"
    with open(files[-1]) as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


REPO = Path(__file__).resolve().parents[1]
# Files the tests read: CoNLL and SQuAD samples, checkpoints written by older versions.
TEST_FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session")
def quickstart_data() -> Path:
    """The real quickstart data, fetched by the documented set-up step (it skips itself when the files exist)."""
    data = REPO / "data" / "quickstart"
    subprocess.run(["bash", str(REPO / "configs" / "quickstart" / "get_data.sh"), str(data)], check=True)
    return data
