"""The classification data module: sources, labels, carving, caching and batching."""

from __future__ import annotations

import csv

import datasets
import pytest

from conftest import toy_rows, write_jsonl
from ftlit.tasks.text import ClassificationDataModule


def make(tiny_bert: str, **kwargs) -> ClassificationDataModule:
    dm = ClassificationDataModule(tokenizer=tiny_bert, **kwargs)
    dm.validate()
    return dm


def test_labels_are_discovered_sorted_and_integer_labels_sort_numerically(tiny_bert, tmp_path):
    rows = [{"text": "good", "label": v} for v in (10, 2, 1, 2, 10)]
    dm = make(tiny_bert, train_file=str(write_jsonl(tmp_path / "t.jsonl", rows)), val_fraction=0)
    assert dm.label_names == ["1", "2", "10"]
    dm.prepare_data()
    dm.setup()
    assert dm.datasets["train"]["labels"] == [2, 1, 0, 1, 2]


def test_given_labels_fix_the_order(tiny_bert, toy_data):
    dm = make(tiny_bert, labels=["pos", "neg"], **toy_data)
    dm.prepare_data()
    dm.setup()
    raw = dm.raw["validation"]["label"]
    assert dm.datasets["validation"]["labels"] == [0 if v == "pos" else 1 for v in raw]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".parquet"])
def test_every_file_format_loads(tiny_bert, tmp_path, suffix):
    rows = toy_rows(20, 0)
    path = tmp_path / f"train{suffix}"
    if suffix in (".csv", ".tsv"):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, ["text", "label"], delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".json":
        write_jsonl(path, rows)
    else:
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    dm = make(tiny_bert, train_file=str(path), val_fraction=0)
    assert dm.raw["train"]["text"] == [r["text"] for r in rows]


def test_sentence_pairs_are_encoded_as_pairs(tiny_bert, tmp_path):
    rows = [{"a": "good movie", "b": "bad plot", "label": "x"}, {"a": "fine", "b": "poor", "label": "y"}]
    dm = make(
        tiny_bert,
        train_file=str(write_jsonl(tmp_path / "p.jsonl", rows)),
        text_column="a",
        text_pair_column="b",
        val_fraction=0,
    )
    dm.prepare_data()
    dm.setup()
    tokens = dm.tokenizer.convert_ids_to_tokens(dm.datasets["train"][0]["input_ids"])
    assert tokens == ["[CLS]", "good", "movie", "[SEP]", "bad", "plot", "[SEP]"]
    assert dm.datasets["train"][0]["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]


def test_validation_is_carved_from_train_with_the_seed(tiny_bert, tmp_path):
    train = str(write_jsonl(tmp_path / "t.jsonl", toy_rows(50, 0)))
    a = make(tiny_bert, train_file=train, val_fraction=0.2, seed=1)
    b = make(tiny_bert, train_file=train, val_fraction=0.2, seed=1)
    c = make(tiny_bert, train_file=train, val_fraction=0.2, seed=2)
    assert len(a.raw["train"]) == 40 and len(a.raw["validation"]) == 10
    assert a.raw["validation"]["text"] == b.raw["validation"]["text"] != c.raw["validation"]["text"]


def test_second_prepare_data_does_not_tokenize_again(tiny_bert, toy_data, monkeypatch):
    make(tiny_bert, **toy_data).prepare_data()

    def no_map(*args, **kwargs):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(datasets.Dataset, "map", no_map)
    again = make(tiny_bert, **toy_data)
    again.prepare_data()
    again.setup()
    assert len(again.datasets["train"]) == 96
    # A different max_length is a different cache entry, so it must tokenize.
    with pytest.raises(AssertionError, match="tokenized again"):
        make(tiny_bert, max_length=16, **toy_data).prepare_data()


def test_truncation_and_dynamic_padding(tiny_bert, tmp_path):
    rows = [{"text": "good " * n, "label": "a" if n % 2 else "b"} for n in (3, 40, 5, 1)]
    dm = make(
        tiny_bert,
        train_file=str(write_jsonl(tmp_path / "t.jsonl", rows)),
        max_length=12,
        val_fraction=0,
        eval_batch_size=2,
    )
    dm.prepare_data()
    dm.setup("validate")
    lengths = [len(ids) for ids in dm.datasets["train"]["input_ids"]]
    assert lengths == [5, 12, 7, 3]
    dm.datasets["validation"] = dm.datasets["train"]
    batches = list(dm.val_dataloader())
    assert [tuple(b["input_ids"].shape) for b in batches] == [(2, 12), (2, 7)]  # longest in each batch
    dm8 = make(
        tiny_bert,
        train_file=str(tmp_path / "t.jsonl"),
        max_length=12,
        val_fraction=0,
        eval_batch_size=2,
        pad_to_multiple_of=8,
    )
    assert tuple(dm8.collate([dm.datasets["train"][2], dm.datasets["train"][3]])["input_ids"].shape) == (2, 8)


def test_training_order_is_shuffled_reproducibly(tiny_bert, toy_data):
    dm = make(tiny_bert, **toy_data)
    dm.prepare_data()
    dm.setup()
    first = [b["labels"].tolist() for b in dm.train_dataloader()]
    again = [b["labels"].tolist() for b in dm.train_dataloader()]
    assert first == again
    assert sum(first, []) != dm.datasets["train"]["labels"]
