"""Nothing breaks for users across the move to ftlit/core, ftlit/tasks and ftlit/commands: the old class paths name
the same classes, and checkpoints written by the old layout (tests/fixtures/checkpoints, ftlit 12d4bf2) still load,
test, predict, export and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.ner import DEFAULTS as NER_DEFAULTS
from helpers.ner import toy_ner_rows, write_conll
from helpers.qa import toy_qa_rows
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import TEST_FIXTURES, cli_args, read_metrics, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI, main
from ftlit.commands.export import export
from ftlit.core.module import FineTuneModule
from ftlit.tasks.ner import TokenClassifier
from ftlit.tasks.qa import QuestionAnswering
from ftlit.tasks.text import SequenceClassifier

CHECKPOINTS = TEST_FIXTURES / "checkpoints"

# Every class path today's README and configs name, and the ones configs named before the move.
OLD_PATHS = {
    "ftlit.models.SequenceClassifier": "ftlit.tasks.text.SequenceClassifier",
    "ftlit.models.MultiLabelClassifier": "ftlit.tasks.text.MultiLabelClassifier",
    "ftlit.models.SequenceRegressor": "ftlit.tasks.text.SequenceRegressor",
    "ftlit.models.TokenClassifier": "ftlit.tasks.ner.TokenClassifier",
    "ftlit.models.QuestionAnswering": "ftlit.tasks.qa.QuestionAnswering",
    "ftlit.models.FineTuneModule": "ftlit.core.module.FineTuneModule",
    "ftlit.models.token_classification.TokenClassifier": "ftlit.tasks.ner.TokenClassifier",
    "ftlit.models.sequence_classification.SequenceClassifier": "ftlit.tasks.text.SequenceClassifier",
    "ftlit.data.ClassificationDataModule": "ftlit.tasks.text.ClassificationDataModule",
    "ftlit.data.MultiLabelDataModule": "ftlit.tasks.text.MultiLabelDataModule",
    "ftlit.data.RegressionDataModule": "ftlit.tasks.text.RegressionDataModule",
    "ftlit.data.TokenClassificationDataModule": "ftlit.tasks.ner.TokenClassificationDataModule",
    "ftlit.data.QuestionAnsweringDataModule": "ftlit.tasks.qa.QuestionAnsweringDataModule",
    "ftlit.data.TaskDataModule": "ftlit.core.datamodule.TaskDataModule",
    "ftlit.data.token_classification.TokenClassificationDataModule": "ftlit.tasks.ner.TokenClassificationDataModule",
    "ftlit.callbacks.GradualUnfreezing": "ftlit.core.callbacks.GradualUnfreezing",
    "ftlit.callbacks.PredictionWriter": "ftlit.core.callbacks.PredictionWriter",
    "ftlit.metrics.SpanF1": "ftlit.tasks.ner.SpanF1",
    "ftlit.metrics.SquadMetric": "ftlit.tasks.qa.SquadMetric",
}


def _load(path: str) -> type:
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_old_class_paths_name_the_same_classes(old):
    assert _load(old) is _load(OLD_PATHS[old])


def split_files(folder: Path, make, sizes: tuple[int, int, int], write=write_jsonl, suffix=".jsonl") -> dict[str, str]:
    """The fixture's own data: ``make(n, seed)`` with seeds 0, 1, 2 for train, validation and test."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = ("train", "validation", "test")
    return {
        f"{s}_file": str(write(folder / f"{s}{suffix}", make(n, seed)))
        for seed, (s, n) in enumerate(zip(splits, sizes, strict=True))
    }


def old_run(name: str, root: Path) -> Path:
    """A run folder holding the old checkpoint as its last.ckpt, as a run of the old version left it."""
    (root / "checkpoints").mkdir(parents=True)
    return Path(shutil.copy(CHECKPOINTS / f"{name}-12d4bf2.ckpt", root / "checkpoints" / "last.ckpt"))


def test_an_old_classification_checkpoint_tests_predicts_exports_and_resumes(tiny_bert, tmp_path):
    data = split_files(tmp_path / "data", toy_rows, (24, 24, 24))
    texts = ["good movie", "the plot was awful", "a very lovely and superb film ."]
    predict = write_jsonl(tmp_path / "predict.jsonl", [{"text": t} for t in texts])
    root = tmp_path / "run"
    ckpt = old_run("classification", root)
    # The config keeps the old class paths, as a user's YAML from before the move does.
    old = ("ftlit.models.SequenceClassifier", "ftlit.data.ClassificationDataModule")
    args = cli_args(tiny_bert, {**data, "predict_file": str(predict)}, root, task=old)

    main(["test", *args, "--ckpt_path=last"])
    assert any(r.get("test/acc") for r in read_metrics(root))
    main(["predict", *args, "--ckpt_path=last"])
    rows = [json.loads(line) for line in (root / "predictions.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] and all(r["label"] in ("neg", "pos") for r in rows) and len(rows) == 3

    # The Python API and the export rebuild it offline, as the new class; the export's logits are the module's.
    module = FineTuneModule.load_from_checkpoint(ckpt)
    assert type(module) is SequenceClassifier and module.label_names == ["neg", "pos"]
    folder = export(str(ckpt), str(tmp_path / "export"))
    hf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(hf(**batch).logits, module.eval()(dict(batch)), atol=1e-5)
    probs = hf(**batch).logits.softmax(-1).tolist()
    assert [hf.config.id2label[max(range(2), key=p.__getitem__)] for p in probs] == [r["label"] for r in rows]

    # Resuming the old run (stopped at step 2 of its first epoch of 3 steps) continues there with the new code.
    before = {k: v.clone() for k, v in module.state_dict().items()}
    # (Its schedule ended at step 2, so step 3 runs at learning rate 0, as the saved optimizer state says.)
    cli = FtlitCLI(args=["fit", *args, "--ckpt_path=last", "--trainer.max_steps=5", "--trainer.max_epochs=3"])
    assert cli.trainer.global_step == 5
    after = cli.model.state_dict()
    assert any(not torch.equal(before[k], after[k].cpu()) for k in before)


@pytest.mark.parametrize("name", ["ner", "qa"])
def test_old_ner_and_qa_checkpoints_test_and_predict(name, tiny_bert, tmp_path):
    if name == "ner":
        data = split_files(tmp_path / "data", toy_ner_rows, (16, 16, 16), write_conll, ".conll")
        task, defaults, cls, metric = (
            ("ftlit.models.TokenClassifier", "ftlit.data.TokenClassificationDataModule"),
            NER_DEFAULTS,
            TokenClassifier,
            "test/f1",
        )
        data["predict_file"] = str(write_jsonl(tmp_path / "predict.jsonl", [{"text": "the food service was good"}]))
    else:
        data = split_files(tmp_path / "data", toy_qa_rows, (12, 12, 12))
        task, cls, metric = (
            ("ftlit.models.QuestionAnswering", "ftlit.data.QuestionAnsweringDataModule"),
            QuestionAnswering,
            "test/f1",
        )
        defaults = ("--data.max_length=32", "--data.doc_stride=8")
        data["predict_file"] = data["test_file"]
    root = tmp_path / "run"
    ckpt = old_run(name, root)
    args = cli_args(tiny_bert, data, root, task=task, defaults=defaults)
    main(["test", *args, "--ckpt_path=last"])
    assert any(r.get(metric) for r in read_metrics(root))
    main(["predict", *args, "--ckpt_path=last"])
    assert (root / "predictions.jsonl").read_text().strip()
    assert type(FineTuneModule.load_from_checkpoint(ckpt)) is cls
