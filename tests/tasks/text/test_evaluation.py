"""What a classification `test` records beyond its logged scores (ftlit/tasks/text/evaluation.py) equals
torchmetrics' own numbers, and every `ftlit test` writes it to test-results.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torchmetrics.classification import (
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassCalibrationError,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from conftest import cli_args, read_metrics
from ftlit.cli import main
from ftlit.core.results import thin
from ftlit.tasks.text.evaluation import Mistakes, classification_details, describe_classification, mistakes

LABELS = ["a", "b", "c"]


@pytest.fixture
def scored() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(200, 3) * 2, -1)
    # Labels that agree with the scores more often than not, so the curves are not flat.
    target = torch.where(torch.rand(200) < 0.6, probs.argmax(-1), torch.randint(0, 3, (200,)))
    return probs, target


def details_of(probs: torch.Tensor, target: torch.Tensor, batches: int = 4) -> dict:
    metrics = classification_details(3)
    for p, t in zip(probs.chunk(batches), target.chunk(batches), strict=True):
        for m in metrics.values():
            m.update(p, t)
    return describe_classification(LABELS, {k: m.compute() for k, m in metrics.items()})


def test_details_equal_torchmetrics(scored):
    probs, target = scored
    details = details_of(probs, target)
    common = {"num_classes": 3, "average": None}
    precision = MulticlassPrecision(**common)(probs, target).tolist()
    recall = MulticlassRecall(**common)(probs, target).tolist()
    f1 = MulticlassF1Score(**common)(probs, target).tolist()
    for i, row in enumerate(details["per_class"]):
        assert row["label"] == LABELS[i] and row["support"] == int((target == i).sum())
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[i], recall[i], f1[i]), abs=1e-6)
    auroc = MulticlassAUROC(**common)(probs, target).tolist()
    ap = MulticlassAveragePrecision(**common)(probs, target).tolist()
    assert [details["roc"][n]["auc"] for n in LABELS] == pytest.approx(auroc, abs=1e-6)
    assert [details["pr"][n]["ap"] for n in LABELS] == pytest.approx(ap, abs=1e-6)
    ece = MulticlassCalibrationError(num_classes=3, n_bins=15)(probs, target).item()
    assert details["calibration"]["ece"] == pytest.approx(ece, abs=1e-6)
    assert sum(details["calibration"]["count"]) == 200
    matrix = torch.tensor(details["confusion_matrix"])
    assert matrix.sum() == 200 and matrix.diag().sum() == (probs.argmax(-1) == target).sum()


def test_a_test_with_one_mistake_records_it():
    # torchmetrics squeezes a computed tensor of one element to a scalar; the mistakes are still a list.
    metric = Mistakes()
    metric.update(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0]), rows=torch.tensor([3, 7]))
    found = mistakes(["neg", "pos"], metric.compute(), lambda row: (f"text {row}", None))
    assert found == [
        {
            "row": 7,
            "text": "text 7",
            "text_pair": None,
            "gold": "neg",
            "predicted": "pos",
            "confidence": pytest.approx(0.8),
        }
    ]


def test_curves_are_thinned_keeping_their_ends():
    xs = [i / 999 for i in range(1000)]
    (short,) = thin(xs, points=11)
    assert len(short) == 11 and short[0] == 0.0 and short[-1] == 1.0
    assert thin([1.0, 2.0], points=11) == [[1.0, 2.0]]


def test_every_test_run_writes_its_results(tiny_bert, toy_data, tmp_path):
    root = tmp_path / "run"
    args = cli_args(tiny_bert, toy_data, root, "--trainer.max_epochs=1")
    main(["fit", *args])
    main(["test", *args, "--ckpt_path=last"])
    results = json.loads((root / "test-results.json").read_text())
    assert results["task"] == "ftlit.tasks.text.SequenceClassifier" and results["labels"] == ["neg", "pos"]
    assert results["ckpt_path"] == str(root / "checkpoints" / "last.ckpt")
    assert results["data"] == {"file": toy_data["test_file"], "rows": 30}
    logged = {k: float(v) for row in read_metrics(root) for k, v in row.items() if k.startswith("test/") and v}
    assert logged.keys() == results["metrics"].keys()
    assert results["metrics"] == pytest.approx(logged, abs=1e-6)
    assert {
        "test/auroc",
        "test/ap",
        "test/ece",
        "test/f1_weighted",
        "test/precision_neg",
        "test/f1_pos",
    } <= logged.keys()
    better = results["higher_is_better"]
    assert better["test/acc"] is True and better["test/f1_pos"] is True
    assert better["test/loss"] is False and better["test/ece"] is False
    per_class = {row["label"]: row for row in results["per_class"]}
    assert per_class["pos"]["f1"] == pytest.approx(logged["test/f1_pos"], abs=1e-6)
    assert sum(map(sum, results["confusion_matrix"])) == 30 and results["versions"]["torch"]
    # Validation logged the new scores every epoch too, and the fit recorded which way each is better.
    with open(root / "csv" / "version_0" / "metrics.csv") as f:
        fit_keys = {k for row in csv.DictReader(f) for k, v in row.items() if v}
    assert {"val/auroc", "val/ap", "val/precision", "val/recall_micro", "val/mcc"} <= fit_keys
    directions = json.loads((root / "metric-directions.json").read_text())
    assert directions["val/auroc"] is True and directions["val/loss"] is False and directions["train/loss"] is False

    # The most confident mistakes, with the input text they came from.
    matrix = torch.tensor(results["confusion_matrix"])
    wrong = int(matrix.sum() - matrix.diag().sum())
    rows = [json.loads(line) for line in Path(toy_data["test_file"]).read_text().splitlines()]
    assert len(results["mistakes"]) == min(10, wrong) and wrong > 0
    confidences = [m["confidence"] for m in results["mistakes"]]
    assert confidences == sorted(confidences, reverse=True)
    for m in results["mistakes"]:
        assert m["text"] == rows[m["row"]]["text"] and m["text_pair"] is None
        assert m["gold"] == rows[m["row"]]["label"] != m["predicted"]

    # The report of this real run holds every section, and its tables show the results file's numbers.
    pytest.importorskip("matplotlib")
    from ftlit.commands.report import report

    page = report([str(root)]).read_text()
    sections = ("header", "scores", "curves", "confusion", "roc", "pr", "calibration", "per-class", "mistakes")
    sections += ("config",)
    for section in sections:
        assert f'id="{section}"' in page, section
    for row in results["per_class"]:
        for key in ("precision", "recall", "f1", "support"):
            assert f'data-value="{json.dumps(row[key])}"' in page, (row["label"], key)
    for value in results["metrics"].values():
        assert f'data-value="{json.dumps(value)}"' in page
    # With --explain 2, the two most confident mistakes are explained by the tested checkpoint, toward the label it
    # wrongly predicted.
    pytest.importorskip("captum")
    page = report([str(root)], out=str(tmp_path / "explained"), explain=2).read_text()
    explained = page[page.index('id="mistakes"') :]
    assert explained.count('<p class="words">') == 2
    for m in results["mistakes"][:2]:
        assert f"predicted <b>{m['predicted']}</b>" in explained
