"""Hardened data handling: a damaged tokenization cache is rebuilt, and bad data values stop before any work."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import datasets
import pytest

from conftest import cli_args, cli_error, tokenized, toy_rows, write_jsonl
from ftlit.core import datamodule as data_base
from ftlit.errors import ConfigError
from ftlit.tasks.ner import TokenClassificationDataModule
from ftlit.tasks.qa import QuestionAnsweringDataModule
from ftlit.tasks.text import ClassificationDataModule, MultiLabelDataModule, RegressionDataModule
from ftlit.tasks.text import data as data_classification

# --- a damaged tokenization cache is rebuilt ----------------------------------------------------------------------


def rows_of(dm) -> dict[str, list[dict]]:
    return {split: ds.to_list() for split, ds in dm.datasets.items()}


def prepared(tiny_bert: str, train: str) -> ClassificationDataModule:
    dm = ClassificationDataModule(tokenizer=tiny_bert, train_file=train)
    dm.prepare_data()
    dm.setup()
    return dm


def overwrite_middle(path: Path) -> None:
    """Overwrite 20% of the file's bytes in its middle with other bytes; the size stays the same."""
    data = bytearray(path.read_bytes())
    start, count = len(data) * 2 // 5, len(data) // 5
    data[start : start + count] = bytes(b ^ 0xA5 for b in data[start : start + count])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated-arrow": (lambda c: truncate(c / "train" / "data-00000-of-00001.arrow"), "truncated or overwritten"),
    "overwritten-arrow": (lambda c: overwrite_middle(c / "train" / "data-00000-of-00001.arrow"), "sha256"),
    "missing-split": (lambda c: shutil.rmtree(c / "validation"), "the validation split is missing"),
    "damaged-state-json": (lambda c: (c / "train" / "state.json").write_text("{"), "train/state.json"),
    "damaged-dataset-info": (
        lambda c: overwrite_middle(c / "validation" / "dataset_info.json"),
        "validation/dataset_info.json",
    ),
    "damaged-dataset-dict": (lambda c: (c / "dataset_dict.json").write_text('{"splits": ["train"]}'), "dataset_dict"),
    # A cache written before manifests existed.
    "no-manifest": (lambda c: (c / data_base.MANIFEST).unlink(), "no manifest"),
    "damaged-manifest": (lambda c: (c / data_base.MANIFEST).write_text("[1, 2"), "unreadable"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_cache_is_rebuilt_with_one_log_line(tiny_bert, tmp_path, caplog, case):
    train = str(write_jsonl(tmp_path / "train.jsonl", toy_rows(200, 0)))
    fresh = rows_of(prepared(tiny_bert, train))
    cache = ClassificationDataModule(tokenizer=tiny_bert, train_file=train).cache_path
    assert data_base.cache_damage(cache) is None
    damage, reason = DAMAGE[case]
    damage(cache)
    assert data_base.cache_damage(cache) is not None
    with caplog.at_level(logging.WARNING, logger="ftlit.core.datamodule"):
        again = prepared(tiny_bert, train)
    assert rows_of(again) == fresh
    assert data_base.cache_damage(cache) is None
    lines = [r.getMessage() for r in caplog.records if "tokenization cache" in r.getMessage()]
    assert len(lines) == 1 and cache.name in lines[0] and reason in lines[0] and "rebuilding" in lines[0], lines


def test_setup_alone_checks_the_cache_as_other_ranks_do(tiny_bert, tmp_path, caplog):
    # Other DDP ranks skip prepare_data: setup must not read a damaged entry either.
    train = str(write_jsonl(tmp_path / "train.jsonl", toy_rows(200, 0)))
    fresh = rows_of(prepared(tiny_bert, train))
    rank1 = ClassificationDataModule(tokenizer=tiny_bert, train_file=train)
    overwrite_middle(rank1.cache_path / "train" / "data-00000-of-00001.arrow")
    with caplog.at_level(logging.WARNING, logger="ftlit.core.datamodule"):
        rank1.setup()
    assert rows_of(rank1) == fresh
    assert sum("is damaged" in r.getMessage() for r in caplog.records) == 1


def test_a_whole_cache_is_checked_once_per_process_and_kept(tiny_bert, tmp_path, caplog, monkeypatch):
    train = str(write_jsonl(tmp_path / "train.jsonl", toy_rows(50, 0)))
    fresh = rows_of(prepared(tiny_bert, train))
    checks, check = [], data_base.cache_damage
    monkeypatch.setattr(data_base, "cache_damage", lambda folder: checks.append(folder) or check(folder))
    monkeypatch.setattr(datasets.Dataset, "map", lambda *a, **k: pytest.fail("tokenized again despite a whole cache"))
    with caplog.at_level(logging.WARNING, logger="ftlit.core.datamodule"):
        again = prepared(tiny_bert, train)
    assert rows_of(again) == fresh
    assert len(checks) == 1  # prepare_data checked it; setup in the same process trusts that
    assert not [r for r in caplog.records if "tokenization cache" in r.getMessage()]


def test_fit_on_an_overwritten_cache_trains_on_every_row(tiny_bert, tmp_path):
    from ftlit.cli import FtlitCLI

    train = str(write_jsonl(tmp_path / "train.jsonl", toy_rows(200, 0)))
    fresh = rows_of(prepared(tiny_bert, train))
    cache = ClassificationDataModule(tokenizer=tiny_bert, train_file=train).cache_path
    overwrite_middle(cache / "train" / "data-00000-of-00001.arrow")
    args = cli_args(tiny_bert, {"train_file": train}, tmp_path / "run", "--trainer.max_steps=1")
    cli = FtlitCLI(args=["fit", *args])
    assert rows_of(cli.datamodule) == fresh
    assert len(cli.datamodule.datasets["train"]) == 180


# --- bad data values ----------------------------------------------------------------------------------------------


def fit_error(tiny_bert, data, tmp_path, capsys, *extra) -> str:
    """`ftlit fit` on bad input: one error line, exit 2, nothing tokenized or trained."""
    root = tmp_path / "run"
    err = cli_error(["fit", *cli_args(tiny_bert, data, root, *extra)], capsys)
    assert not tokenized(tmp_path / "cache"), "the data was tokenized despite bad input"
    return err.removeprefix("ftlit: error: ")


def labelled(tmp_path: Path, labels: list, name: str = "train.jsonl") -> str:
    rows = [{"text": r["text"], "label": label} for r, label in zip(toy_rows(len(labels), 0), labels, strict=True)]
    return str(write_jsonl(tmp_path / name, rows))


def test_fractional_labels_are_not_classes(tiny_bert, tmp_path, capsys):
    train = labelled(tmp_path, [0, 1, 0.5, 1.7, 2, 1, 0, 2, 1, 0])
    err = fit_error(tiny_bert, {"train_file": train, "val_fraction": "0"}, tmp_path, capsys)
    assert err == (
        "data.label_column: row 2 of the train split has label 0.5 (2 of 10 rows are fractions): a class is text or a "
        "whole number; for a numeric target use ftlit.tasks.text.RegressionDataModule (with "
        "ftlit.tasks.text.SequenceRegressor)"
    )


def test_whole_float_labels_are_the_integer_classes(tiny_bert, tmp_path):
    # A CSV column of numbers reads as floats (1.0); the class is 1, the same as an integer 1 in another split.
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"{r['text']},{i % 3}.0\n" for i, r in enumerate(toy_rows(12, 0))))
    validation = labelled(tmp_path, [0, 1, 2, 10 % 3], "validation.jsonl")
    dm = ClassificationDataModule(tokenizer=tiny_bert, train_file=str(train), validation_file=validation)
    dm.validate()
    assert dm.label_names == ["0", "1", "2"]
    dm.prepare_data()
    dm.setup()
    assert dm.datasets["train"]["labels"] == [i % 3 for i in range(12)]
    assert dm.datasets["validation"]["labels"] == [0, 1, 2, 1]


def test_list_labels_in_a_single_label_task_point_to_multi_label(tiny_bert, tmp_path, capsys):
    train = labelled(tmp_path, [["pos"], ["neg", "pos"]] * 5)
    err = fit_error(tiny_bert, {"train_file": train}, tmp_path, capsys)
    assert err == (
        "data.label_column: column 'label' of the train split holds lists of labels, but this task takes one per row: "
        "for several use ftlit.tasks.text.MultiLabelDataModule (with ftlit.tasks.text.MultiLabelClassifier)"
    )


def with_blanks(tmp_path: Path, name: str, blanks: dict[int, str | None], n: int = 20, seed: int = 0) -> str:
    rows = toy_rows(n, seed)
    for row, text in blanks.items():
        rows[row]["text"] = text
    return str(write_jsonl(tmp_path / name, rows))


def test_empty_texts_are_an_error_naming_the_split_and_count(tiny_bert, toy_data, tmp_path, capsys):
    validation = with_blanks(tmp_path, "v.jsonl", {3: "", 7: "   ", 9: "\t\n"})
    err = fit_error(tiny_bert, {**toy_data, "validation_file": validation}, tmp_path, capsys)
    assert err == (
        "data.text_column: row 3 of the validation split has no text (3 of 20 rows are empty or blank in 'text'): "
        "fill or remove those rows, or set data.empty_texts=drop"
    )


def test_empty_texts_drop_leaves_those_rows_out_before_tokenization(tiny_bert, tmp_path, monkeypatch):
    train = with_blanks(tmp_path, "t.jsonl", {2: "", 5: "  ", 11: None})
    pair_rows = [{"a": r["text"], "b": "good", "label": r["label"]} for r in toy_rows(6, 1)]
    pair_rows[4]["b"] = " "
    pairs = str(write_jsonl(tmp_path / "pairs.jsonl", pair_rows))
    with pytest.raises(ConfigError, match="row 2 of the train split has no text"):
        ClassificationDataModule(tokenizer=tiny_bert, train_file=train, val_fraction=0).validate()

    logged: list[str] = []
    monkeypatch.setattr(data_classification, "rank_zero_info", logged.append)
    tokenized: list[str] = []
    map_rows = data_base.TaskDataModule.map_rows

    def spy(self, ds, split, function, **kwargs):
        tokenized.extend(ds[self.text_column])
        return map_rows(self, ds, split, function, **kwargs)

    monkeypatch.setattr(data_base.TaskDataModule, "map_rows", spy)
    dm = ClassificationDataModule(tokenizer=tiny_bert, train_file=train, val_fraction=0, empty_texts="drop")
    kept = [r["text"] for i, r in enumerate(toy_rows(20, 0)) if i not in (2, 5, 11)]
    dm.validate()
    dm.prepare_data()
    dm.setup()
    assert tokenized == kept and len(dm.datasets["train"]) == 17
    assert logged == ["data.empty_texts=drop: dropped 3 of 20 rows of the train split: no text"]
    paired = ClassificationDataModule(
        tokenizer=tiny_bert, train_file=pairs, text_column="a", text_pair_column="b", val_fraction=0, empty_texts="drop"
    )
    assert paired.raw["train"]["a"] == [r["a"] for i, r in enumerate(pair_rows) if i != 4]


def test_empty_texts_drop_keeps_every_predict_row(tiny_bert, toy_data, tmp_path):
    # Predictions are written one per input row: a blank input is refused, not silently skipped.
    predict = str(write_jsonl(tmp_path / "p.jsonl", [{"text": "good"}, {"text": ""}]))
    dm = ClassificationDataModule(tokenizer=tiny_bert, **toy_data, predict_file=predict, empty_texts="drop")
    with pytest.raises(ConfigError) as err:
        dm.validate()
    assert str(err.value) == (
        "data.text_column: row 1 of the predict split has no text (1 of 2 rows are empty or blank in 'text'): "
        "fill or remove those rows (a prediction is written for every input row)"
    )


def test_empty_texts_drop_in_the_variants(tiny_bert, tmp_path):
    rows = [{"text": r["text"], "score": float(i), "topics": "a,b"} for i, r in enumerate(toy_rows(10, 0))]
    rows[3]["text"] = " "
    train = str(write_jsonl(tmp_path / "t.jsonl", rows))
    common = {"tokenizer": tiny_bert, "train_file": train, "val_fraction": 0}
    for dm in (
        RegressionDataModule(label_column="score", **common),
        MultiLabelDataModule(label_column="topics", **common),
    ):
        with pytest.raises(ConfigError, match="row 3 of the train split has no text"):
            dm.validate()
    for dm in (
        RegressionDataModule(label_column="score", empty_texts="drop", **common),
        MultiLabelDataModule(label_column="topics", empty_texts="drop", **common),
    ):
        dm.validate()
        assert len(dm.raw["train"]) == 9


def test_labels_differing_by_case_or_whitespace_warn(tiny_bert, tmp_path):
    train = labelled(tmp_path, ["pos", "Pos ", "neg", "neg", "pos", "NEG"] * 2)
    dm = ClassificationDataModule(tokenizer=tiny_bert, train_file=train, val_fraction=0)
    with pytest.warns(UserWarning) as caught:
        dm.validate()
    messages = [str(w.message) for w in caught if "differ only by case" in str(w.message)]
    assert messages == [
        "data.label_column: labels 'NEG' and 'neg'; 'Pos ' and 'pos' differ only by case or surrounding whitespace "
        "and are trained as different classes: clean the column if they are one"
    ]
    assert dm.label_names == ["NEG", "Pos ", "neg", "pos"]  # a warning, not an error
    names = ["Sports", "sports,art", "art", ""]
    topics = [{"text": r["text"], "topics": t} for r, t in zip(toy_rows(4, 0), names, strict=True)]
    multi = MultiLabelDataModule(
        tokenizer=tiny_bert,
        train_file=str(write_jsonl(tmp_path / "m.jsonl", topics)),
        label_column="topics",
        val_fraction=0,
    )
    with pytest.warns(UserWarning, match="labels 'Sports' and 'sports' differ only by case"):
        multi.validate()
    clean = ClassificationDataModule(tokenizer=tiny_bert, train_file=labelled(tmp_path, ["a", "b"] * 3, "c.jsonl"))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*differ only by case.*")
        clean.validate()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--data.text_column=label"],
            "data.label_column: 'label' is also data.text_column: the model would read its own target; give the "
            "target and the text their own columns",
        ),
        (
            ["--data.text_pair_column=text"],
            "data.text_pair_column: 'text' is also data.text_column: name the pair's second column, or drop the key",
        ),
        (
            ["--data.text_pair_column=label"],
            "data.label_column: 'label' is also data.text_pair_column: the model would read its own target; give the "
            "target and the text their own columns",
        ),
    ],
    ids=["text-is-label", "pair-is-text", "pair-is-label"],
)
def test_text_column_equal_to_another_column(tiny_bert, toy_data, tmp_path, capsys, args, expected):
    assert fit_error(tiny_bert, toy_data, tmp_path, capsys, *args) == expected


def test_variants_refuse_a_target_that_is_a_text_column(tiny_bert, toy_data):
    with pytest.raises(ConfigError, match="^data.label_column: 'text' is also data.text_column"):
        RegressionDataModule(tokenizer=tiny_bert, label_column="text", **toy_data)
    with pytest.raises(ConfigError, match="^data.label_column: 'text' is also data.text_column"):
        MultiLabelDataModule(tokenizer=tiny_bert, label_column="text", **toy_data)
    with pytest.raises(ConfigError, match="^data.label_columns: 'q' is also data.text_pair_column"):
        MultiLabelDataModule(tokenizer=tiny_bert, label_columns=["a", "q"], text_pair_column="q", **toy_data)


def test_pad_to_multiple_of_above_max_length(tiny_bert, toy_data, tmp_path, capsys):
    err = fit_error(tiny_bert, toy_data, tmp_path, capsys, "--data.max_length=16", "--data.pad_to_multiple_of=32")
    assert err == (
        "data.pad_to_multiple_of: 32 is above data.max_length=16: every batch would be padded past the longest row; "
        "use a divisor of max_length (8 suits tensor cores) or none"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--data.max_length=1"],
            "data.max_length: 1 leaves no room for text: the tokenizer adds 2 special tokens to a text, so give at "
            "least 3",
        ),
        (
            ["--data.max_length=2"],
            "data.max_length: 2 leaves no room for text: the tokenizer adds 2 special tokens to a text, so give at "
            "least 3",
        ),
        (
            ["--data.max_length=4", "--data.text_pair_column=text2"],
            "data.max_length: 4 leaves no room for text: the tokenizer adds 3 special tokens to a pair of texts, so "
            "give at least 5",
        ),
    ],
    ids=["1", "2", "pair-4"],
)
def test_max_length_too_small_for_any_text(tiny_bert, tmp_path, capsys, args, expected):
    rows = [{**r, "text2": "good"} for r in toy_rows(20, 0)]
    data = {"train_file": str(write_jsonl(tmp_path / "t.jsonl", rows))}
    assert fit_error(tiny_bert, data, tmp_path, capsys, *args) == expected


def test_smallest_max_length_keeps_a_token_of_each_text(tiny_bert, tmp_path):
    rows = [{"a": "good movie", "b": "bad plot", "label": x} for x in "xy"]
    path = str(write_jsonl(tmp_path / "p.jsonl", rows))
    common = {"tokenizer": tiny_bert, "train_file": path, "text_column": "a", "val_fraction": 0}
    single = ClassificationDataModule(max_length=3, **common)
    pair = ClassificationDataModule(text_pair_column="b", max_length=5, **common)
    for dm, tokens in ((single, ["[CLS]", "good", "[SEP]"]), (pair, ["[CLS]", "good", "[SEP]", "bad", "[SEP]"])):
        dm.validate()
        dm.prepare_data()
        dm.setup()
        assert dm.tokenizer.convert_ids_to_tokens(dm.datasets["train"][0]["input_ids"]) == tokens


def test_max_length_too_small_for_every_task(tiny_bert, tmp_path):
    # NER and QA reach the check through the shared tokenizer property.
    ner = TokenClassificationDataModule(tokenizer=tiny_bert, train_file=str(tmp_path / "t.conll"), max_length=2)
    qa = QuestionAnsweringDataModule(tokenizer=tiny_bert, train_file=str(tmp_path / "q.json"), max_length=2)
    for dm in (ner, qa):
        with pytest.raises(ConfigError, match="^data.max_length: 2 leaves no room for text"):
            dm.tokenizer  # noqa: B018


def backbone_folder(tiny_bert: str, folder: Path, config: dict, tokenizer_limit: int | None) -> str:
    """The tiny model's tokenizer beside another backbone config (the weights are not needed to check lengths)."""
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_bert) / name, folder / name)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config.pop("model_max_length")
    if tokenizer_limit is not None:
        tokenizer_config["model_max_length"] = tokenizer_limit
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize(
    ("config", "limit", "usable", "why"),
    [
        ({"model_type": "bert", "max_position_embeddings": 64}, None, 64, "max_position_embeddings"),
        ({"model_type": "bert", "max_position_embeddings": 64}, 512, 64, "max_position_embeddings"),
        (
            {"model_type": "roberta", "max_position_embeddings": 66, "pad_token_id": 1},
            None,
            64,
            "max_position_embeddings 66 less pad_token_id + 1, as roberta counts",
        ),
        (
            {"model_type": "xlm-roberta", "max_position_embeddings": 66, "pad_token_id": 1},
            None,
            64,
            "max_position_embeddings 66 less pad_token_id + 1, as xlm-roberta counts",
        ),
        (
            {"model_type": "camembert", "max_position_embeddings": 66, "pad_token_id": 1},
            1_000_000_000,
            64,
            "max_position_embeddings 66 less pad_token_id + 1, as camembert counts",
        ),
    ],
    ids=["bert-no-tokenizer-limit", "bert-larger-tokenizer-limit", "roberta", "xlm-roberta", "camembert"],
)
def test_max_length_above_the_backbone_positions(tiny_bert, toy_data, tmp_path, config, limit, usable, why):
    model = backbone_folder(tiny_bert, tmp_path / "model", config, limit)
    ClassificationDataModule(tokenizer=model, max_length=usable, **toy_data).tokenizer  # noqa: B018
    dm = ClassificationDataModule(tokenizer=model, max_length=usable + 1, **toy_data)
    with pytest.raises(ConfigError) as err:
        dm.prepare_data()
    assert str(err.value) == (
        f"data.max_length: {usable + 1} is more than the backbone's {usable} positions ({why}): lower it to {usable}"
    )
    assert not tokenized(tmp_path / "cache")
    # Padding to a multiple of 24 takes rows of 60 tokens to 72: past the positions too.
    padded = ClassificationDataModule(tokenizer=model, max_length=usable - 4, pad_to_multiple_of=24, **toy_data)
    with pytest.raises(ConfigError) as err:
        padded.tokenizer  # noqa: B018
    assert str(err.value) == (
        f"data.pad_to_multiple_of: 24 pads rows of data.max_length={usable - 4} tokens to 72, more than the "
        f"backbone's {usable} positions: pick a max_length whose padded length fits, e.g. 48"
    )


def test_backbones_without_absolute_positions_take_longer_inputs(tiny_bert, toy_data, tmp_path):
    # DeBERTa-v3 adds no absolute positions; T5's config has no max_position_embeddings: nothing to check.
    deberta = {"model_type": "deberta-v2", "max_position_embeddings": 64, "position_biased_input": False}
    for name, config in (("deberta", deberta), ("t5", {"model_type": "t5"})):
        model = backbone_folder(tiny_bert, tmp_path / name, config, None)
        dm = ClassificationDataModule(tokenizer=model, max_length=300, **toy_data)
        assert dm.tokenizer.model_max_length > 300


def test_a_folder_where_a_file_is_expected(tiny_bert, toy_data, tmp_path, capsys):
    folder = Path(toy_data["train_file"]).parent
    err = fit_error(tiny_bert, {**toy_data, "train_file": str(folder)}, tmp_path, capsys)
    assert err == (
        f"data.train_file: '{folder}' is a folder, not a file: give the path of one of its files "
        "(test.jsonl, train.jsonl, validation.jsonl)"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    err = fit_error(tiny_bert, {**toy_data, "test_file": str(empty)}, tmp_path, capsys)
    assert err == (
        f"data.test_file: '{empty}' is a folder, not a file: give the path of a data file "
        "(.csv, .tsv, .json, .jsonl, .parquet)"
    )


def test_too_few_training_rows_to_hold_out_validation(tiny_bert, tmp_path, capsys):
    train = str(write_jsonl(tmp_path / "one.jsonl", toy_rows(1, 0)))
    err = fit_error(tiny_bert, {"train_file": train}, tmp_path, capsys)
    assert err == (
        "data.val_fraction: 1 training rows leave none to train on once 0.1 of them are held out for validation: "
        "give more rows, a validation_file, or val_fraction: 0"
    )
    dm = ClassificationDataModule(tokenizer=tiny_bert, train_file=train, val_fraction=0)
    assert len(dm.raw["train"]) == 1 and "validation" not in dm.raw
