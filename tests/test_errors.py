"""Bad input: each case exits before training with one line naming the field and the fix.

Every case goes through the command (``ftlit.cli.main``) and must exit with code 2, print exactly one
``ftlit: error: <field>: ...`` line and no traceback, and stop before any work: no tokenization cache, no checkpoint,
and an existing checkpoint or predictions file left byte-identical.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers.ner import toy_ner_rows, write_conll
from helpers.runs import run_fit, run_ner_fit

from conftest import cli_args, cli_error, tokenized, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI, main


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def csv_rows(rows: list[dict], sep: str = ",") -> str:
    return f"text{sep}label\n" + "".join(f"{r['text']}{sep}{r['label']}\n" for r in rows)


def test_missing_text_column_lists_the_columns(tiny_bert, toy_data, tmp_path, capsys):
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, "--data.text_column=sentence")
    assert err == ("ftlit: error: data.text_column: column 'sentence' not in the train split (columns: text, label)")


def test_missing_label_column(tiny_bert, toy_data, tmp_path, capsys):
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, "--data.label_column=stars")
    assert "data.label_column: column 'stars' not in the train split (columns: text, label)" in err


def test_empty_file(tiny_bert, toy_data, tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    err = run_fit(tiny_bert, {**toy_data, "validation_file": str(tmp_path / "empty.jsonl")}, tmp_path, capsys)
    assert "data.validation_file: file" in err and "is empty" in err


def test_csv_with_header_only_is_an_empty_split(tiny_bert, toy_data, tmp_path, capsys):
    (tmp_path / "v.csv").write_text("text,label\n")
    err = run_fit(tiny_bert, {**toy_data, "validation_file": str(tmp_path / "v.csv")}, tmp_path, capsys)
    assert "data.validation_file:" in err and "has no rows below its header" in err


def test_label_not_seen_in_train(tiny_bert, toy_data, tmp_path, capsys):
    rows = toy_rows(10, 5) + [{"text": "good", "label": "neutral"}]
    data = {**toy_data, "validation_file": str(write_jsonl(tmp_path / "v.jsonl", rows))}
    err = run_fit(tiny_bert, data, tmp_path, capsys)
    assert "data.labels: validation split has labels not seen in train: ['neutral']" in err


def test_missing_label_value(tiny_bert, toy_data, tmp_path, capsys):
    rows = toy_rows(10, 5) + [{"text": "good", "label": None}]
    err = run_fit(tiny_bert, {**toy_data, "train_file": str(write_jsonl(tmp_path / "t.jsonl", rows))}, tmp_path, capsys)
    assert "data.label_column: row 10 of the train split has no label" in err


def test_missing_file(tiny_bert, toy_data, tmp_path, capsys):
    err = run_fit(tiny_bert, {**toy_data, "test_file": str(tmp_path / "nope.csv")}, tmp_path, capsys)
    assert "data.test_file: file" in err and "does not exist" in err


def test_unknown_extension(tiny_bert, toy_data, tmp_path, capsys):
    (tmp_path / "train.xlsx").write_text("x")
    err = run_fit(tiny_bert, {**toy_data, "train_file": str(tmp_path / "train.xlsx")}, tmp_path, capsys)
    assert "data.train_file: unknown file type '.xlsx'" in err and ".csv" in err


def test_model_folder_that_does_not_exist(toy_data, tmp_path, capsys):
    err = run_fit(str(tmp_path / "no-model"), toy_data, tmp_path, capsys)
    assert "does not exist: give an existing model folder" in err


def test_hub_name_without_network(toy_data, tmp_path, capsys):
    err = run_fit("someone/no-such-model", toy_data, tmp_path, capsys)
    assert "'someone/no-such-model' not found locally and no network: give a local folder" in err


def test_max_length_above_the_model_limit(tiny_bert, toy_data, tmp_path, capsys):
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, "--data.max_length=4096")
    assert "data.max_length: 4096 exceeds the tokenizer's limit 128" in err


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--data.batch_size=-1", "data.batch_size: must be a positive integer, got -1"),
        ("--model.learning_rate=0", "model.learning_rate: must be positive"),
        ("--model.warmup_ratio=1.5", "model.warmup_ratio: must be in [0, 1)"),
        ("--model.optimizer=Adamm", "model.optimizer: 'Adamm' is not a torch optimizer class"),
    ],
)
def test_bad_values(tiny_bert, toy_data, tmp_path, capsys, arg, expected):
    assert expected in run_fit(tiny_bert, toy_data, tmp_path, capsys, arg)


def test_unknown_config_key_is_rejected_by_the_parser(tiny_bert, toy_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", *cli_args(tiny_bert, toy_data, tmp_path, "--model.learning_rat=1e-3")])
    assert exc.value.code == 2
    assert "learning_rat" in capsys.readouterr().err


def test_unknown_scheduler_name(tiny_bert, toy_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", *cli_args(tiny_bert, toy_data, tmp_path, "--model.scheduler=cosine_restarts")])
    assert "scheduler" in capsys.readouterr().err


def test_unreadable_and_foreign_checkpoints(tiny_bert, toy_data, tmp_path, capsys):
    truncated = tmp_path / "bad.ckpt"
    truncated.write_bytes(b"PK\x03\x04 truncated")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    for path, expected in [
        (truncated, f"ckpt_path: '{truncated}' is not a readable checkpoint"),
        (foreign, f"ckpt_path: '{foreign}' is not an ftlit checkpoint"),
        (tmp_path / "missing.ckpt", "does not exist"),
    ]:
        assert expected in cli_error(["test", *cli_args(tiny_bert, toy_data, tmp_path), f"--ckpt_path={path}"], capsys)


def test_checkpoint_with_other_labels_or_task(tiny_bert, toy_data, tmp_path, capsys):
    root = tmp_path / "run"
    FtlitCLI(args=["fit", *cli_args(tiny_bert, toy_data, root, "--trainer.max_epochs=1")])
    ckpt = root / "checkpoints" / "last.ckpt"
    args = cli_args(tiny_bert, toy_data, root, "--data.labels=[neg,pos,mixed]")
    err = cli_error(["test", *args, f"--ckpt_path={ckpt}"], capsys)
    assert err.startswith("ftlit: error: data.labels: the checkpoint was trained with labels ['neg', 'pos']")

    other = torch.load(ckpt, weights_only=True)
    other["hyper_parameters"]["_class_path"] = "ftlit.tasks.ner.TokenClassifier"
    torch.save(other, tmp_path / "other.ckpt")
    err = cli_error(["test", *cli_args(tiny_bert, toy_data, root), f"--ckpt_path={tmp_path / 'other.ckpt'}"], capsys)
    assert "holds a ftlit.tasks.ner.TokenClassifier, but model.class_path is" in err


def test_data_module_of_another_task(tiny_bert, toy_data, tmp_path, capsys):
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, "--data=ftlit.tasks.ner.TokenClassificationDataModule")
    assert err.startswith(
        "ftlit: error: data.class_path: SequenceClassifier trains on ftlit.tasks.text.ClassificationDataModule, not"
    )
    assert err.endswith("not ftlit.tasks.ner.TokenClassificationDataModule: pick the matching pair")


# --- more bad input: files --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sep", "columns"),
    [("train.tsv", ",", "text,label"), ("train.csv", ";", "text;label"), ("train.csv", "\t", "text\tlabel")],
    ids=["tsv-that-is-comma-separated", "csv-with-semicolons", "csv-with-tabs"],
)
def test_wrong_delimiter_lists_the_single_mangled_column(tiny_bert, toy_data, tmp_path, capsys, name, sep, columns):
    train = write(tmp_path / name, csv_rows(toy_rows(10, 0), sep))
    err = run_fit(tiny_bert, {**toy_data, "train_file": train}, tmp_path, capsys)
    assert err == f"ftlit: error: data.text_column: column 'text' not in the train split (columns: {columns})"


@pytest.mark.parametrize("missing", ["", "NaN", "nan", "NA"], ids=["empty-cell", "NaN", "nan", "NA"])
def test_nan_label_in_a_csv(tiny_bert, toy_data, tmp_path, capsys, missing):
    train = write(tmp_path / "train.csv", csv_rows(toy_rows(10, 0)) + f"good,{missing}\n")
    err = run_fit(tiny_bert, {**toy_data, "train_file": train}, tmp_path, capsys)
    assert err == "ftlit: error: data.label_column: row 10 of the train split has no label: fill or drop it"


MALFORMED = {
    "json": ("train.json", '{"text": "good", "label": "pos"\n{oops', "json", "JSON parse error"),
    "jsonl": ("train.jsonl", '{"text": "good", "label": "pos"}\n{"text": oops}\n', "json", "JSON parse error"),
    "ragged-csv": ("train.csv", "text,label\ngood,pos\nbad,neg,extra\n", "csv", "Expected 2 fields in line 3, saw 3"),
    "latin-1-csv": ("train.csv", "text,label\ngood café,pos\nbad,neg\n", "csv", "utf-8"),
    "parquet": ("train.parquet", "text,label\ngood,pos\n", "parquet", "Parquet magic bytes not found"),
}


def write_malformed(tmp_path: Path, case: str) -> str:
    name, text, _, _ = MALFORMED[case]
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1" if "latin" in case else "utf-8"))
    return str(path)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_file_that_cannot_be_parsed(tiny_bert, toy_data, tmp_path, capsys, case):
    train = write_malformed(tmp_path, case)
    err = run_fit(tiny_bert, {**toy_data, "train_file": train}, tmp_path, capsys)
    assert err.startswith(f"ftlit: error: data.train_file: could not read '{train}' as {MALFORMED[case][2]}: ")


@pytest.mark.parametrize("case", list(MALFORMED))
def test_file_that_cannot_be_parsed_says_why(tiny_bert, toy_data, tmp_path, capsys, case):
    train = write_malformed(tmp_path, case)
    err = run_fit(tiny_bert, {**toy_data, "train_file": train}, tmp_path, capsys)
    assert MALFORMED[case][3] in err


@pytest.mark.parametrize(
    ("split", "rows", "expected"),
    [
        ("train", [{"text": None, "label": "pos"}], "data.text_column: row 10 of the train split has no text"),
        ("train", "empty-csv-cell", "data.text_column: row 10 of the train split has no text"),
        ("train", "numbers-csv", "data.text_column: "),
        ("predict", [{"text": None}], "data.text_column: row 10 of the predict split has no text"),
    ],
    ids=["null-text-jsonl", "empty-text-cell-csv", "numeric-text-csv", "null-text-predict"],
)
def test_missing_or_non_string_text(tiny_bert, toy_data, tmp_path, capsys, split, rows, expected):
    base = toy_rows(10, 0)
    if rows == "empty-csv-cell":
        path = write(tmp_path / "t.csv", csv_rows(base) + ",pos\n")
    elif rows == "numbers-csv":
        path = write(tmp_path / "t.csv", "text,label\n" + "".join(f"{i},{r['label']}\n" for i, r in enumerate(base)))
    else:
        if split == "predict":
            base = [{"text": r["text"]} for r in base]
        path = str(write_jsonl(tmp_path / f"{split}.jsonl", base + rows))
    err = run_fit(tiny_bert, {**toy_data, f"{split}_file": path}, tmp_path, capsys)
    assert err.startswith(f"ftlit: error: {expected}")


# --- more bad input: option values ------------------------------------------------------------------------------


BAD_VALUES = [
    (["--data.batch_size=0"], "data.batch_size: must be a positive integer, got 0"),
    (["--data.eval_batch_size=0"], "data.eval_batch_size: must be a positive integer, got 0"),
    (["--data.max_length=0"], "data.max_length: must be a positive integer, got 0"),
    (["--data.val_fraction=1.0"], "data.val_fraction: must be in [0, 1), got 1.0"),
    (["--model.learning_rate=-1"], "model.learning_rate: must be positive, got -1.0"),
    (["--model.warmup_steps=-1"], "model.warmup_steps: must be >= 0, got -1"),
    (["--model.label_smoothing=1.0"], "model.label_smoothing: must be in [0, 1), got 1.0"),
    (
        ["--model.optimizer=torch.nn.Linear"],
        "model.optimizer: 'torch.nn.Linear' is not a torch optimizer class: e.g. AdamW or torch.optim.SGD",
    ),
    (
        ["--model.optimizer=no_such_module.Adam"],
        "model.optimizer: 'no_such_module.Adam' is not a torch optimizer class: e.g. AdamW or torch.optim.SGD",
    ),
    (["--model.layer_lr_decay=1.5"], "model.layer_lr_decay: must be in (0, 1], got 1.5"),
    (["--model.layer_lr_decay=0"], "model.layer_lr_decay: must be in (0, 1], got 0.0"),
    (["--model.freeze_layers=99"], "model.freeze_layers: 99 is more than the model's 2 layers"),
    (["--model.reinit_layers=3"], "model.reinit_layers: 3 is more than the model's 2 layers"),
    (["--model.freeze_layers=-1"], "model.freeze_layers: must be >= 0, got -1"),
    (["--model.l2sp_alpha=-1"], "model.l2sp_alpha: must be >= 0, got -1.0"),
    (
        ["--model.lora_rank=4", "--model.freeze_layers=1"],
        "model.lora_rank: LoRA already freezes the backbone: drop the freeze_* keys",
    ),
    (
        ["--model.lora_rank=4", "--model.l2sp_alpha=0.1"],
        "model.l2sp_alpha: LoRA freezes the backbone, so L2-SP has nothing to pull: use one",
    ),
    (
        ["--model.freeze_backbone=true", "--model.l2sp_alpha=0.1"],
        "model.l2sp_alpha: the backbone is frozen, so L2-SP has nothing to pull: use one",
    ),
    (["--predictions.output=predictions.txt"], "predictions.output: 'predictions.txt' must end in .jsonl or .csv"),
    (
        ["--data.text_pair_column=second"],
        "data.text_pair_column: column 'second' not in the train split (columns: text, label)",
    ),
    (["--data.dataset=nyu-mll/glue"], "data.dataset: give either a Hub dataset or local labelled files, not both"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_VALUES, ids=[" ".join(args) for args, _ in BAD_VALUES])
def test_bad_option_values(tiny_bert, toy_data, tmp_path, capsys, args, expected):
    data = toy_data if "--data.val_fraction=1.0" not in args else {"train_file": toy_data["train_file"]}
    assert run_fit(tiny_bert, data, tmp_path, capsys, *args) == f"ftlit: error: {expected}"


@pytest.mark.parametrize(
    ("arg", "field"),
    [
        ("--model.head_dropout=1.5", "model.head_dropout"),
        ("--data.pad_to_multiple_of=0", "data.pad_to_multiple_of"),
        ("--data.num_workers=-1", "data.num_workers"),
        ("--model.weight_decay=-0.01", "model.weight_decay"),
    ],
)
def test_unchecked_option_values(tiny_bert, toy_data, tmp_path, capsys, arg, field):
    # One step at most: a value that is not caught trains (or crashes) without wasting time.
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, arg, "--trainer.max_steps=1")
    assert err.startswith(f"ftlit: error: {field}: ")


@pytest.mark.parametrize(
    ("arg", "field"),
    [
        ("--model.learning_rat=1e-3", "model.learning_rat"),
        ("--model.scheduler=cosine_restarts", "model.scheduler"),
        ("--data.batch_size=abc", "data.batch_size"),
    ],
)
def test_parser_errors_are_one_line(tiny_bert, toy_data, tmp_path, capsys, arg, field):
    assert run_fit(tiny_bert, toy_data, tmp_path, capsys, arg).startswith(f"ftlit: error: {field}")


WRONG_TYPES = [
    ("--model.keep_layers=abc", "model.keep_layers: expected list[int] or null, got abc"),
    ("--model.prune_heads={a: [0]}", "model.prune_heads: expected dict[int, list[int]] or null, got {'a': [0]}"),
    ("--trainer.max_epochs=1.5", "trainer.max_epochs: expected int or null, got 1.5"),
    ("--data.batch_size=abc", "data.batch_size: expected int, got abc"),
    ("--model.scheduler=cyclic", "model.scheduler: expected one of 'linear', 'cosine', 'constant', 'polynomial', got"),
]


@pytest.mark.parametrize(("arg", "expected"), WRONG_TYPES, ids=[arg for arg, _ in WRONG_TYPES])
def test_a_value_of_the_wrong_type_names_the_expected_type(tiny_bert, toy_data, tmp_path, capsys, arg, expected):
    # jsonargparse says "Does not validate against any of the Union subtypes" for every optional key.
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, arg)
    assert err.startswith(f"ftlit: error: {expected}") and err.endswith(": fix the value (see --help)"), err


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--trainer.max_epochs=-2"], "trainer.max_epochs"),
        (["--trainer.devices=0"], "trainer.devices"),
        # FSDP and DeepSpeed are passed through to Lightning; where they cannot run, the reason is one line.
        (["--trainer.strategy=fsdp", "--trainer.devices=2"], "trainer.strategy"),
        (["--trainer.strategy=deepspeed_stage_2", "--trainer.devices=2"], "trainer.strategy"),
    ],
    ids=["max_epochs", "devices", "fsdp-on-cpu", "deepspeed-not-installed"],
)
def test_bad_trainer_values_are_one_line(tiny_bert, toy_data, tmp_path, capsys, args, field):
    assert run_fit(tiny_bert, toy_data, tmp_path, capsys, *args).startswith(f"ftlit: error: {field}: ")


# --- more bad input: labels -------------------------------------------------------------------------------------


def test_label_listed_twice(tiny_bert, toy_data, tmp_path, capsys):
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, "--data.labels=[neg,neg,pos]", "--trainer.max_steps=1")
    assert err.startswith("ftlit: error: data.labels: ")


def test_train_label_outside_the_given_labels(tiny_bert, toy_data, tmp_path, capsys):
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, "--data.labels=[pos,other]")
    assert err.startswith("ftlit: error: data.labels: train split has labels not in data.labels: ['neg']")


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_a_single_label_names_a_data_field(tiny_bert, tmp_path, capsys, task):
    if task == "classification":
        train = str(write_jsonl(tmp_path / "t.jsonl", [{"text": "good movie", "label": "pos"}] * 10))
        err = run_fit(tiny_bert, {"train_file": train}, tmp_path, capsys)
    else:
        train = str(write_jsonl(tmp_path / "t.jsonl", [{"tokens": ["the", "movie"], "tags": ["O", "O"]}] * 10))
        err = run_ner_fit(tiny_bert, {"train_file": train}, tmp_path, capsys)
    assert err.startswith("ftlit: error: data.")


def test_class_weights_of_the_wrong_length(tiny_bert, toy_data, tmp_path, capsys):
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, "--model.class_weights=[1,2,3]")
    assert err == "ftlit: error: model.class_weights: 3 weights for 2 labels"


# --- more bad input: NER through the command ----------------------------------------------------------------------


@pytest.fixture
def ner_train(tmp_path) -> str:
    return str(write_conll(tmp_path / "train.conll", toy_ner_rows(20, 0)))


@pytest.mark.parametrize(
    ("data", "args", "expected"),
    [
        (
            {"train_file": ("nt.conll", "the O\ngoods\n")},
            [],
            "data.tag_column: line 2 of '{nt.conll}' has 1 column(s), no tag column -1: expected 'token ... tag' "
            "per line",
        ),
        (
            {},
            ["--data.tag_column=0"],
            "data.tag_column: column 0 is the token: choose the tag column, e.g. -1 (the last)",
        ),
        (
            {},
            ["--data.tag_column=5"],
            "data.tag_column: line 3 of '{train.conll}' has 4 column(s), no tag column 5: expected 'token ... tag' "
            "per line",
        ),
        (
            {"train_file": [{"tokens": "the good movie", "tags": ["O", "B-POS", "O"]}] * 5},
            [],
            "data.tokens_column: column 'tokens' of the train split must hold lists of words, got Value('string')",
        ),
        (
            {"train_file": [{"tokens": [1, 2], "tags": ["O", "O"]}] * 5},
            [],
            "data.tokens_column: column 'tokens' of the train split must hold lists of words, got List(Value('int64'))",
        ),
        (
            {"train_file": [{"tokens": ["good"], "tags": "B-POS"}] * 5},
            [],
            "data.tags_column: column 'tags' of the train split must hold lists of tags, got Value('string')",
        ),
        (
            {"train_file": [{"tokens": ["good"], "tags": ["B-POS"]}, {"tokens": None, "tags": ["O"]}]},
            [],
            "data.tokens_column: row 1 of the train split has none: give a list",
        ),
        (
            {"train_file": [{"tokens": ["good"], "tags": ["B-POS"]}, {"tokens": ["bad"], "tags": [None]}]},
            [],
            "data.tags_column: row 1 of the train split has a missing tag",
        ),
        (
            {},
            ["--data.labels=[O,B-POS,B-POS,B-NEG,B-ORG,I-ORG]"],
            "data.labels: tags listed twice: ['O', 'B-POS', 'B-POS', 'B-NEG', 'B-ORG', 'I-ORG']",
        ),
        (
            {},
            ["--data.labels=[O,POS]"],
            "data.labels: tag 'POS' is not an IOB tag: use O, B-TYPE, I-TYPE (or E-TYPE, S-TYPE)",
        ),
        (
            {},
            ["--data.labels=[O,B-POS]"],
            "data.labels: train split has tags not in data.labels: ['B-NEG', 'B-ORG', 'I-ORG'] (known: ['O', 'B-POS'])",
        ),
        (
            {"predict_file": [{"sentence": "good movie"}]},
            [],
            "data.text_column: column 'text' not in the predict split (columns: sentence): give raw text in it, or "
            "lists of words in 'tokens'",
        ),
        (
            {"predict_file": [{"text": 5}]},
            [],
            "data.text_column: column 'text' of the predict split holds Value('int64'), not text: check the column",
        ),
        (
            {"validation_file": ("missing.conll", None)},
            [],
            "data.validation_file: file '{missing.conll}' does not exist: check the path",
        ),
        (
            {"train_file": ("bad.jsonl", '{"tokens": ["a"]\n')},
            [],
            "data.train_file: could not read '{bad.jsonl}' as json: ",
        ),
        ({}, ["--model.label_smoothing=-0.1"], "model.label_smoothing: must be in [0, 1), got -0.1"),
        (
            {},
            ["--model=ftlit.tasks.text.SequenceClassifier"],
            "data.class_path: SequenceClassifier trains on ftlit.tasks.text.ClassificationDataModule, not "
            "ftlit.tasks.ner.TokenClassificationDataModule: pick the matching pair",
        ),
    ],
    ids=[
        "conll-line-without-tag",
        "tag-column-0",
        "tag-column-out-of-range",
        "tokens-not-a-list",
        "tokens-not-words",
        "tags-not-a-list",
        "null-tokens",
        "null-tag",
        "tag-listed-twice",
        "label-not-iob",
        "tag-not-in-labels",
        "predict-without-text",
        "predict-text-not-strings",
        "missing-conll-file",
        "malformed-jsonl",
        "negative-label-smoothing",
        "model-of-another-task",
    ],
)
def test_ner_bad_input_through_the_command(tiny_bert, ner_train, tmp_path, capsys, data, args, expected):
    """Each value of ``data`` is rows (written as JSONL) or ``(file name, text)`` (text None: no file); ``{name}`` in
    ``expected`` stands for that file's path. No validation is carved out of train: row numbers are the file's."""
    files, paths = {"train.conll": ner_train}, {}
    for key, value in data.items():
        if isinstance(value, tuple):
            name, text = value
            files[name] = paths[key] = str(tmp_path / name)
            if text is not None:
                write(tmp_path / name, text)
        else:
            paths[key] = str(write_jsonl(tmp_path / f"{key}.jsonl", value))
    err = run_ner_fit(tiny_bert, {"train_file": ner_train, "val_fraction": "0", **paths}, tmp_path, capsys, *args)
    for name, path in files.items():
        expected = expected.replace("{" + name + "}", path)
    expected = "ftlit: error: " + expected
    assert err.startswith(expected) if expected.endswith(": ") else err == expected


def test_ner_missing_predict_text(tiny_bert, ner_train, tmp_path, capsys):
    predict = str(write_jsonl(tmp_path / "p.jsonl", [{"text": "good movie"}, {"text": None}]))
    err = run_ner_fit(tiny_bert, {"train_file": ner_train, "predict_file": predict}, tmp_path, capsys)
    assert err.startswith("ftlit: error: data.text_column: row 1 of the predict split has no text")


# --- existing files are never touched ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory) -> dict:
    """One finished 1-epoch fit (``checkpoints/last.ckpt`` and the best one), copied by the tests that need it."""
    tmp = tmp_path_factory.mktemp("errors-fit")
    data = {
        "train_file": str(write_jsonl(tmp / "train.jsonl", toy_rows(48, 0))),
        "validation_file": str(write_jsonl(tmp / "validation.jsonl", toy_rows(20, 1))),
        "predict_file": str(write_jsonl(tmp / "predict.jsonl", [{"text": r["text"]} for r in toy_rows(5, 2)])),
    }
    root = tmp / "run"
    args = cli_args(tiny_bert, data, root, "--trainer.max_epochs=1", f"--data.cache_dir={tmp / 'cache'}")
    FtlitCLI(args=["fit", *args, "--checkpoint.monitor=val/acc", "--checkpoint.mode=max"])
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["epoch=0-step=6.ckpt", "last.ckpt"]
    return {"root": root, "data": data}


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ([], "trainer.default_root_dir"),  # a new run into a finished one's folder
        # --overwrite deletes the old checkpoints only once the input is known to be good.
        (["--data.text_column=sentence", "--overwrite=true"], "data.text_column"),
        (["--data.text_column=sentence", "--ckpt_path=last"], "data.text_column"),
        (["--model.learning_rate=0", "--ckpt_path=last"], "model.learning_rate"),
        (["--model.freeze_layers=99", "--ckpt_path=last"], "model.freeze_layers"),
        # Found late (on_fit_start, after the restore), with the checkpoint callback told to save on exceptions.
        (
            ["--model.class_weights=[1,2,3]", "--ckpt_path=last", "--checkpoint.save_on_exception=true"],
            "model.class_weights",
        ),
        (["--data.labels=[neg,pos,mixed]", "--ckpt_path=last"], "data.labels"),
    ],
    ids=[
        "new-run",
        "bad-column-overwrite",
        "bad-column-resume",
        "bad-lr-resume",
        "freeze-too-many-resume",
        "late-error",
        "other-labels",
    ],
)
def test_bad_input_leaves_an_existing_checkpoint_folder_byte_identical(
    tiny_bert, trained, tmp_path, capsys, extra, field
):
    root = tmp_path / "run"
    shutil.copytree(trained["root"] / "checkpoints", root / "checkpoints")
    before = snapshot(root / "checkpoints")
    err = cli_error(["fit", *cli_args(tiny_bert, trained["data"], root, "--trainer.max_epochs=2", *extra)], capsys)
    assert err.startswith(f"ftlit: error: {field}: ")
    assert snapshot(root / "checkpoints") == before


@pytest.mark.parametrize("output", [None, "out.csv"], ids=["default-jsonl", "explicit-csv"])
def test_predict_refuses_an_existing_output_file_and_leaves_it_untouched(tiny_bert, trained, tmp_path, capsys, output):
    root = tmp_path / "run"
    path = root / "predictions.jsonl" if output is None else tmp_path / output
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("keep me\n")
    mtime = path.stat().st_mtime_ns
    args = cli_args(tiny_bert, trained["data"], root, f"--ckpt_path={trained['root'] / 'checkpoints' / 'last.ckpt'}")
    if output is not None:
        args.append(f"--predictions.output={path}")
    err = cli_error(["predict", *args], capsys)
    assert err == f"ftlit: error: predictions.output: '{path}' exists: set predictions.overwrite=true or another path"
    assert path.read_text() == "keep me\n" and path.stat().st_mtime_ns == mtime
    assert not list(path.parent.glob(".*.tmp")), "a temporary file was left behind"


def test_predict_refuses_an_existing_output_file_before_any_work(tiny_bert, trained, tmp_path, capsys):
    root = tmp_path / "run"
    root.mkdir()
    (root / "predictions.jsonl").write_text("keep me\n")
    args = cli_args(tiny_bert, trained["data"], root, f"--ckpt_path={trained['root'] / 'checkpoints' / 'last.ckpt'}")
    cli_error(["predict", *args], capsys)
    assert not tokenized(tmp_path / "cache"), "the data was tokenized before the existing file was refused"


def test_an_option_of_another_task_names_the_class_it_was_given_to(tiny_bert, toy_data, tmp_path, capsys):
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, "--data.tokens_column=words")
    assert err == (
        "ftlit: error: data.tokens_column: no such option of ftlit.tasks.text.ClassificationDataModule: check the "
        "spelling (--help lists them)"
    )


def test_ner_conll_folder_given_as_a_file(tiny_bert, ner_train, tmp_path, capsys):
    folder = tmp_path / "splits.conll"
    folder.mkdir()
    err = run_ner_fit(tiny_bert, {"train_file": ner_train, "validation_file": str(folder)}, tmp_path, capsys)
    expected = f"data.validation_file: '{folder}' is a folder, not a file: give the path of a CoNLL file in it"
    assert err == f"ftlit: error: {expected}"
