"""Bad input: each case exits before training with one line naming the field and the fix."""

from __future__ import annotations

import pytest
import torch

from conftest import cli_args, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI, main


def run_fit(tiny_bert, data, tmp_path, capsys, *extra) -> str:
    """Run `ftlit fit`, expect a clean exit with an error, and return the one-line message."""
    root = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["fit", *cli_args(tiny_bert, data, root, *extra)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert not (root / "checkpoints").exists(), "training started despite bad input"
    return err.splitlines()[-1]


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
        with pytest.raises(SystemExit):
            main(["test", *cli_args(tiny_bert, toy_data, tmp_path), f"--ckpt_path={path}"])
        assert expected in capsys.readouterr().err


def test_checkpoint_with_other_labels_or_task(tiny_bert, toy_data, tmp_path, capsys):
    root = tmp_path / "run"
    FtlitCLI(args=["fit", *cli_args(tiny_bert, toy_data, root, "--trainer.max_epochs=1")])
    ckpt = root / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit):
        main(["test", *cli_args(tiny_bert, toy_data, root, "--data.labels=[neg,pos,mixed]"), f"--ckpt_path={ckpt}"])
    assert "data.labels: the checkpoint was trained with labels ['neg', 'pos']" in capsys.readouterr().err

    other = torch.load(ckpt, weights_only=True)
    other["hyper_parameters"]["_class_path"] = "ftlit.models.TokenClassifier"
    torch.save(other, tmp_path / "other.ckpt")
    with pytest.raises(SystemExit):
        main(["test", *cli_args(tiny_bert, toy_data, root), f"--ckpt_path={tmp_path / 'other.ckpt'}"])
    assert "holds a ftlit.models.TokenClassifier, but model.class_path is" in capsys.readouterr().err


def test_data_module_of_another_task(tiny_bert, toy_data, tmp_path, capsys):
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, "--data=ftlit.data.TokenClassificationDataModule")
    assert err.startswith("ftlit: error: data.class_path: SequenceClassifier trains on ftlit.data.ClassificationData")
    assert err.endswith("not ftlit.data.TokenClassificationDataModule: pick the matching pair")
