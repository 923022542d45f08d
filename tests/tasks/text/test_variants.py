"""Regression and multi-label classification: data checks, losses, metrics, predictions and exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from helpers.text import FAST, MULTI_LABEL, REGRESSION, REGRESSION_FIT, TOPICS, read_jsonl, scored_rows, tagged_rows
from transformers import pipeline

from conftest import cli_args, cli_error, column, write_jsonl
from ftlit.cli import FtlitCLI
from ftlit.commands.export import export


def split_files(folder: Path, make, sizes=(96, 40, 30)) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    return {
        f"{split}_file": str(write_jsonl(folder / f"{split}.jsonl", make(n, seed)))
        for seed, (split, n) in enumerate(zip(("train", "validation", "test"), sizes, strict=True))
    }


def run_metrics(root: Path, version: int) -> list[dict[str, str]]:
    """metrics.csv of one logger version: 0 is the fit, 1 the test that follows it."""
    with open(root / "csv" / f"version_{version}" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- regression ---------------------------------------------------------------------------------------------


def fit_test_predict(tiny_bert: str, tmp: Path, make, *flags: str) -> dict:
    """Fit on ``make``'s rows, then test and predict with the last checkpoint: the run every task test reads."""
    data = split_files(tmp / "data", make)
    data["predict_file"] = str(write_jsonl(tmp / "predict.jsonl", [{"text": r["text"]} for r in make(12, 9)]))
    root = tmp / "run"
    args = cli_args(tiny_bert, data, root, *flags)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTLIT_CACHE", str(tmp / "cache"))
        FtlitCLI(args=["fit", *args])
        FtlitCLI(args=["test", *args, "--ckpt_path=last"])
        FtlitCLI(args=["predict", *args, "--ckpt_path=last"])
    return {"root": root, "tmp": tmp, "data": data, "args": args}


@pytest.fixture(scope="module")
def regression_run(tiny_bert, tmp_path_factory) -> dict:
    flags = (*REGRESSION, "--data.label_column=score", *REGRESSION_FIT)
    return fit_test_predict(tiny_bert, tmp_path_factory.mktemp("regression"), scored_rows, *flags)


def test_regression_learns_the_scores(regression_run):
    rows = run_metrics(regression_run["root"], 0)
    pearson, mse = column(rows, "val/pearson"), column(rows, "val/mse")
    assert len(pearson) == 8 and len(column(rows, "val/spearman")) == 8
    assert pearson[-1] > 0.7 and mse[-1] < 0.6 * mse[0], (pearson, mse)
    losses = column(rows, "train/loss")
    assert sum(losses[-6:]) < 0.5 * sum(losses[:6]), losses
    test = {
        k: column(run_metrics(regression_run["root"], 1), f"test/{k}") for k in ("pearson", "spearman", "mse", "loss")
    }
    assert all(len(v) == 1 for v in test.values()), test
    # The loss is the mean squared error, over the same rows as the metric.
    assert test["loss"][0] == pytest.approx(test["mse"][0], rel=1e-5)


def test_regression_predictions_and_export(regression_run):
    predictions = read_jsonl(regression_run["root"] / "predictions.jsonl")
    texts = [r["text"] for r in scored_rows(12, 9)]
    assert len(predictions) == len(texts) and all(set(p) == {"value"} for p in predictions)
    values = [p["value"] for p in predictions]
    assert max(values) - min(values) > 0.5, values
    out = export(str(regression_run["root"] / "checkpoints" / "last.ckpt"), str(regression_run["tmp"] / "hf"))
    # The pipeline reads problem_type=regression and returns the raw output, no sigmoid.
    got = pipeline("text-classification", model=str(out), device="cpu")(texts)
    assert [g["score"] for g in got] == pytest.approx(values, abs=1e-4)


def fit_error(args: list[str], capsys) -> str:
    """Run `ftlit fit` on bad input and return its one error line (see ``conftest.cli_error``)."""
    return cli_error(["fit", *args], capsys)


@pytest.mark.parametrize(("value", "shown"), [("high", "'high'"), (None, "None"), (float("nan"), "None")])
def test_regression_target_that_is_not_a_number(tiny_bert, tmp_path, capsys, value, shown):
    rows = scored_rows(10, 0)
    rows[3]["score"] = value
    # A CSV: a NaN there is a real float NaN (JSON has no NaN), a word makes the column text.
    data = {"train_file": str(write_csv(tmp_path / "t.csv", rows))}
    err = fit_error(cli_args(tiny_bert, data, tmp_path / "run", *REGRESSION, "--data.label_column=score"), capsys)
    assert err.endswith(
        f"data.label_column: row 3 of the train split has target {shown}: regression needs a finite number"
    )


def test_a_classifier_refuses_regression_data(tiny_bert, tmp_path, capsys):
    data = {"train_file": str(write_jsonl(tmp_path / "t.jsonl", scored_rows(10, 0)))}
    err = fit_error(cli_args(tiny_bert, data, tmp_path / "run", "--data=ftlit.tasks.text.RegressionDataModule"), capsys)
    assert "data.class_path: SequenceClassifier trains on ftlit.tasks.text.ClassificationDataModule" in err


# --- multi-label --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multi_label_run(tiny_bert, tmp_path_factory) -> dict:
    # A shuffle under which 4 epochs of the tiny model clear the learning thresholds below (they hold for some
    # orders of the 32 toy rows, not all).
    flags = (*MULTI_LABEL, "--data.label_column=topics", *FAST, "--data.seed=4")
    return fit_test_predict(tiny_bert, tmp_path_factory.mktemp("multi-label"), tagged_rows, *flags)


def test_multi_label_learns_and_reports_per_label_f1_in_test(multi_label_run):
    rows = run_metrics(multi_label_run["root"], 0)
    micro = column(rows, "val/f1_micro")
    assert len(micro) == 4 and len(column(rows, "val/f1_macro")) == 4 and len(column(rows, "val/exact_match")) == 4
    # Punctuation is all the tiny random BERT has to learn from: well above chance, not perfect, in 4 epochs.
    assert micro[-1] > 0.6 and micro[-1] > micro[0] + 0.3, micro
    assert not any(k.startswith("val/f1_comma") for r in rows for k, v in r.items() if v)  # per label in test only
    test = run_metrics(multi_label_run["root"], 1)
    per_label = {t: column(test, f"test/f1_{t}") for t in TOPICS}
    assert all(len(v) == 1 for v in per_label.values()) and max(v[0] for v in per_label.values()) > 0.7, per_label
    macro = column(test, "test/f1_macro")[0]
    assert macro == pytest.approx(sum(v[0] for v in per_label.values()) / len(TOPICS), abs=1e-6)


def test_multi_label_predictions_and_export(multi_label_run):
    predictions = [
        json.loads(line) for line in (multi_label_run["root"] / "predictions.jsonl").read_text().splitlines()
    ]
    gold = tagged_rows(12, 9)
    assert all(p["labels"] == [t for t in TOPICS if p["probs"][t] >= 0.5] for p in predictions)
    hits = sum(p["labels"] == g["topics"] for p, g in zip(predictions, gold, strict=True))
    assert hits >= 5, (predictions, gold)
    out = export(str(multi_label_run["root"] / "checkpoints" / "last.ckpt"), str(multi_label_run["tmp"] / "hf"))
    # problem_type=multi_label_classification: the pipeline applies a sigmoid per label, as ftlit does.
    got = pipeline("text-classification", model=str(out), top_k=None, device="cpu")([g["text"] for g in gold])
    for expected, rows in zip(predictions, got, strict=True):
        assert {r["label"]: r["score"] for r in rows} == pytest.approx(expected["probs"], abs=1e-4)


def test_threshold_decides_the_predicted_labels(multi_label_run, tmp_path):
    out = tmp_path / "low.jsonl"
    args = [*multi_label_run["args"], "--model.threshold=0.001", f"--predictions.output={out}", "--ckpt_path=last"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTLIT_CACHE", str(multi_label_run["tmp"] / "cache"))
        FtlitCLI(args=["predict", *args])
    low = read_jsonl(out)
    assert all(p["labels"] == [t for t in TOPICS if p["probs"][t] >= 0.001] for p in low)
    assert sum(len(p["labels"]) for p in low) > sum(len(g["topics"]) for g in tagged_rows(12, 9))


def test_a_multi_label_student_learns_its_teacher_s_per_label_probabilities(multi_label_run, tiny_bert, tmp_path):
    """Distillation with a sigmoid per label: on the teacher's soft targets alone (alpha 0), the KL falls."""
    teacher = multi_label_run["root"] / "checkpoints" / "last.ckpt"
    root = tmp_path / "student"
    args = [*multi_label_run["args"], f"--trainer.default_root_dir={root}", f"--model.teacher={teacher}",
            "--model.distill_alpha=0", "--model.distill_temperature=1", "--overwrite=true"]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTLIT_CACHE", str(multi_label_run["tmp"] / "cache"))
        FtlitCLI(args=["fit", *args])
    kl = column(run_metrics(root, 0), "train/distill_loss")
    assert len(kl) > 10 and sum(kl[-4:]) < 0.5 * sum(kl[:4]), kl


def test_label_layouts_give_the_same_multi_hot_targets(tiny_bert, tmp_path):
    """A list column, a separated string in a CSV, and one 0/1 column per label encode alike."""
    rows = tagged_rows(20, 3)
    columns = [{"text": r["text"], **{t: int(t in r["topics"]) for t in TOPICS}} for r in rows]
    layouts = {
        "list": (write_jsonl(tmp_path / "a.jsonl", rows), ["--data.label_column=topics"]),
        "string": (
            write_csv(tmp_path / "b.csv", [{"text": r["text"], "topics": "|".join(r["topics"])} for r in rows]),
            ["--data.label_column=topics", "--data.label_separator=|", f"--data.labels=[{','.join(TOPICS)}]"],
        ),
        "columns": (
            write_csv(tmp_path / "c.csv", columns),
            [f"--data.label_columns=[{','.join(TOPICS)}]"],
        ),
    }
    targets = {}
    for name, (path, extra) in layouts.items():
        data = {"train_file": str(path)}
        cli = FtlitCLI(
            args=cli_args(tiny_bert, data, tmp_path / name, *MULTI_LABEL, "--data.val_fraction=0", *extra), run=False
        )
        assert cli.model.label_names == TOPICS and cli.model.model.config.problem_type == "multi_label_classification"
        cli.datamodule.prepare_data()
        cli.datamodule.setup("fit")
        targets[name] = cli.datamodule.datasets["train"]["labels"]
    expected = [[float(t in r["topics"]) for t in TOPICS] for r in rows]
    assert targets["list"] == targets["string"] == targets["columns"] == expected


@pytest.mark.parametrize(
    ("rows_patch", "extra", "message"),
    [
        (
            {"topics": ["comma", "sport"]},
            ["--data.labels=[comma,question]"],
            "data.labels: row 5 of the train split has labels not in data.labels: ['sport']",
        ),
        ({"topics": 3}, [], "data.label_column: row 5 of the train split has 3: give a list of labels"),
    ],
)
def test_multi_label_bad_labels(tiny_bert, tmp_path, capsys, rows_patch, extra, message):
    rows = tagged_rows(10, 0)
    rows[5] |= rows_patch
    data = {"train_file": str(write_jsonl(tmp_path / "t.jsonl", rows))}
    args = cli_args(tiny_bert, data, tmp_path / "run", *MULTI_LABEL, "--data.label_column=topics", *extra)
    err = fit_error([*args, "--data.val_fraction=0"], capsys)
    assert err.startswith(f"ftlit: error: {message}")


def test_zero_one_columns_must_hold_zero_or_one(tiny_bert, tmp_path, capsys):
    rows = [{"text": r["text"], **{t: int(t in r["topics"]) for t in TOPICS}} for r in tagged_rows(10, 0)]
    rows[4]["question"] = 2
    data = {"train_file": str(write_csv(tmp_path / "t.csv", rows))}
    args = cli_args(tiny_bert, data, tmp_path / "run", *MULTI_LABEL, f"--data.label_columns=[{','.join(TOPICS)}]")
    err = fit_error([*args, "--data.val_fraction=0"], capsys)
    assert err == "ftlit: error: data.label_columns: row 4 of the train split has 2 in 'question': give 0 or 1"


def test_pos_weight_scales_the_positive_terms_of_the_loss(tiny_bert, tmp_path, capsys):
    data = {"train_file": str(write_jsonl(tmp_path / "t.jsonl", tagged_rows(10, 0)))}
    base = cli_args(tiny_bert, data, tmp_path / "run", *MULTI_LABEL, "--data.label_column=topics")
    plain = FtlitCLI(args=base, run=False).model
    weighted = FtlitCLI(args=[*base, "--model.pos_weight=[3.0,1.0]"], run=False).model
    logits = torch.randn(4, 2)
    labels = torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]])
    batch = {"labels": labels}
    # BCE's positive term of label 0 counts three times; every other term is unchanged.
    positive0 = -torch.nn.functional.logsigmoid(logits[:, 0]) * labels[:, 0]
    expected = plain.loss(logits, batch) + 2 * positive0.sum() / labels.numel()
    assert weighted.loss(logits, batch) == pytest.approx(expected.item(), rel=1e-5)
    err = fit_error([*base, "--model.pos_weight=[3.0]"], capsys)
    assert err == "ftlit: error: model.pos_weight: 1 weights for 2 labels"


def test_hub_list_of_classlabel_ids_uses_the_classlabel_names(tiny_bert, tmp_path):
    """GoEmotions' layout: ``labels`` is a ``Sequence(ClassLabel)``; ids become names, in the ClassLabel's order."""
    import datasets

    from ftlit.tasks.text import MultiLabelDataModule

    names = ["question", "comma", "never-seen"]
    features = datasets.Features(
        {"text": datasets.Value("string"), "labels": datasets.List(datasets.ClassLabel(names=names))}
    )
    folder = tmp_path / "hub-like"
    for split in ("train", "validation"):
        ds = datasets.Dataset.from_dict({"text": ["good ?", "bad , ."], "labels": [[0], [1]]}, features=features)
        (folder / split).mkdir(parents=True)
        ds.to_parquet(str(folder / split / "data.parquet"))
    dm = MultiLabelDataModule(tokenizer=tiny_bert, dataset=str(folder), cache_dir=str(tmp_path / "cache"))
    assert dm.label_names == names
    dm.prepare_data()
    dm.setup("fit")
    assert dm.datasets["validation"]["labels"] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
