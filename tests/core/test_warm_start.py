"""Cascaded fine-tuning: ``model.init_from`` starts a fine-tuning from an ftlit checkpoint or an exported folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from conftest import cli_args, cli_error, make_tiny_bert, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI
from ftlit.commands.export import export
from ftlit.tasks.ner import TokenClassifier
from ftlit.tasks.text import SequenceClassifier

TEXTS = ["good movie", "the plot was awful and boring", "a very fine service"]


@pytest.fixture(scope="module")
def source(tiny_bert, tmp_path_factory) -> dict:
    """A classifier fine-tuned for one epoch (the first stage), its checkpoint and its export."""
    tmp = tmp_path_factory.mktemp("stage-1")
    data = {
        "train_file": str(write_jsonl(tmp / "train.jsonl", toy_rows(64, 0))),
        "validation_file": str(write_jsonl(tmp / "validation.jsonl", toy_rows(16, 1))),
        "cache_dir": str(tmp / "cache"),  # the autouse cache fixture is per test; this fixture is per module
    }
    FtlitCLI(args=["fit", *cli_args(tiny_bert, data, tmp / "run", "--trainer.max_epochs=1")])
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    return {"ckpt": ckpt, "exported": export(str(ckpt), str(tmp / "exported")), "data": data, "tmp": tmp}


def logits(module: torch.nn.Module, tiny_bert: str) -> torch.Tensor:
    batch = dict(AutoTokenizer.from_pretrained(tiny_bert)(TEXTS, padding=True, return_tensors="pt"))
    module.eval()
    with torch.no_grad():
        return module(batch)


def encoder(module: torch.nn.Module, pooler: bool = True) -> dict[str, torch.Tensor]:
    """The backbone's weights (the head left out; the pooler too unless ``pooler``), by name."""
    kept = ("bert.",) if pooler else ("bert.embeddings.", "bert.encoder.")
    return {k: v for k, v in module.model.state_dict().items() if k.startswith(kept)}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("kind", ["ckpt", "exported"])
def test_a_start_with_the_same_labels_predicts_what_the_source_predicts(source, tiny_bert, kind, caplog):
    trained = SequenceClassifier.load_from_checkpoint(source["ckpt"])
    expected = logits(trained, tiny_bert)
    with caplog.at_level(logging.INFO):
        same = SequenceClassifier(tiny_bert, label_names=["neg", "pos"], init_from=str(source[kind]))
    assert "the same labels: backbone and head carry over" in caplog.text
    torch.testing.assert_close(logits(same, tiny_bert), expected)
    assert_same(encoder(same), encoder(trained))
    # The same labels in another order: the head's rows follow the names.
    swapped = SequenceClassifier(tiny_bert, label_names=["pos", "neg"], init_from=str(source[kind]))
    torch.testing.assert_close(logits(swapped, tiny_bert), expected[:, [1, 0]])
    # The fine-tuned weights are really another start than the pretrained backbone.
    assert not torch.equal(logits(SequenceClassifier(tiny_bert, label_names=["neg", "pos"]), tiny_bert), expected)


def test_other_labels_get_a_new_head_and_keep_the_backbone(source, tiny_bert, caplog):
    trained = SequenceClassifier.load_from_checkpoint(source["ckpt"])
    with caplog.at_level(logging.INFO):
        more = SequenceClassifier(tiny_bert, label_names=["neg", "pos", "mixed"], init_from=str(source["ckpt"]))
    assert "the head is new (kept [neg, pos], added [mixed], dropped [])" in caplog.text
    assert_same(encoder(more), encoder(trained))
    # Two other labels: the head's shape fits, but a fitting shape is no reason to load it.
    other = SequenceClassifier(tiny_bert, label_names=["bad", "good"], init_from=str(source["ckpt"]))
    assert_same(encoder(other), encoder(trained))
    assert not torch.equal(other.model.classifier.weight, trained.model.classifier.weight)
    assert "kept [], added [bad, good], dropped [neg, pos]" in caplog.text


def test_a_classifier_starts_a_ner_model_and_a_ner_model_a_classifier(source, tiny_bert, tmp_path, caplog):
    trained = SequenceClassifier.load_from_checkpoint(source["ckpt"])
    tags = ["O", "B-PER", "I-PER"]
    with caplog.at_level(logging.INFO):
        ner = TokenClassifier(tiny_bert, label_names=tags, init_from=str(source["ckpt"]))
    assert "init_from is a BertForSequenceClassification, this task a BertForTokenClassification" in caplog.text
    assert_same(encoder(ner), encoder(trained, pooler=False))  # a token classifier has no pooler

    folder = tmp_path / "ner"
    ner.model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    back = SequenceClassifier(tiny_bert, label_names=["neg", "pos"], init_from=str(folder))
    assert_same(encoder(back, pooler=False), encoder(ner))


def test_lora_adapters_of_the_source_are_merged(source, tiny_bert, tmp_path):
    pytest.importorskip("peft")
    root = tmp_path / "lora"
    FtlitCLI(args=["fit", *cli_args(tiny_bert, source["data"], root, "--trainer.max_steps=4", "--model.lora_rank=4")])
    lora = SequenceClassifier.load_from_checkpoint(root / "checkpoints" / "last.ckpt")
    start = SequenceClassifier(tiny_bert, label_names=["neg", "pos"], init_from=str(root / "checkpoints" / "last.ckpt"))
    assert not any("lora" in name for name, _ in start.named_parameters())
    torch.testing.assert_close(logits(start, tiny_bert), logits(lora, tiny_bert))


def test_l2sp_anchors_to_the_init_from_weights(source, tiny_bert):
    trained = SequenceClassifier.load_from_checkpoint(source["ckpt"])
    start = SequenceClassifier(tiny_bert, label_names=["neg", "pos"], init_from=str(source["ckpt"]), l2sp_alpha=1.0)
    assert float(start.l2sp()) == 0.0  # at the source's weights, not the pretrained ones
    pretrained = SequenceClassifier(tiny_bert, label_names=["neg", "pos"], l2sp_alpha=1.0)
    with torch.no_grad():
        for p, q in zip(pretrained.model.bert.parameters(), trained.model.bert.parameters(), strict=True):
            p.copy_(q)
    assert float(pretrained.l2sp()) > 0  # the source is not the pretrained backbone, so the anchor matters


def test_a_second_stage_records_its_start_and_resumes_exactly(source, tiny_bert, tmp_path):
    # A constant schedule, so that stopping after the first of 2 epochs changes nothing but the stop.
    args = [
        *cli_args(tiny_bert, source["data"], tmp_path / "straight", "--model.scheduler=constant"),
        f"--model.init_from={source['ckpt']}",
    ]
    FtlitCLI(args=["fit", *args])
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    assert straight["ftlit"]["init_from"]["path"] == str(source["ckpt"].resolve())
    assert straight["hyper_parameters"]["init_from"] == str(source["ckpt"])

    resumed = [a.replace("straight", "resumed") for a in args]
    FtlitCLI(args=["fit", *resumed, "--trainer.max_epochs=1"])
    FtlitCLI(args=["fit", *resumed, "--ckpt_path=last"])
    again = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert again["global_step"] == straight["global_step"] == 16
    assert_same(again["state_dict"], straight["state_dict"])
    assert again["ftlit"]["init_from"] == straight["ftlit"]["init_from"]


def test_through_the_cli_a_checkpoint_start_is_read_with_its_own_settings_not_the_new_run_s(source, tmp_path):
    """LightningCLI builds the model inside a context that hands every ``save_hyperparameters`` its config: the
    init_from checkpoint, loaded inside that build, was rebuilt with the new run's labels and pruned heads and then
    refused its own weights ("size mismatch"). Python-built models never showed it."""
    wide = make_tiny_bert(tmp_path / "bert-4-heads", heads=4)
    first = tmp_path / "first"
    FtlitCLI(args=["fit", *cli_args(str(wide), source["data"], first, "--trainer.max_epochs=1")])
    three = {**source["data"], "labels": "[neg, pos, mixed]"}
    args = ["--trainer.max_epochs=1", f"--model.init_from={first / 'checkpoints' / 'last.ckpt'}"]
    FtlitCLI(args=["fit", *cli_args(str(wide), three, tmp_path / "more", *args)])
    more = torch.load(tmp_path / "more" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert more["model.classifier.weight"].shape[0] == 3
    FtlitCLI(
        args=["fit", *cli_args(str(wide), source["data"], tmp_path / "pruned", *args, "--model.prune_heads={0: [1]}")]
    )
    pruned = torch.load(tmp_path / "pruned" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert pruned["model.bert.encoder.layer.0.attention.self.query.weight"].shape == (24, 32)


def test_bad_init_from_is_one_line_before_any_work(source, tiny_bert, tmp_path, capsys):
    base = cli_args(tiny_bert, source["data"], tmp_path / "run")
    missing = tmp_path / "nope.ckpt"
    assert cli_error(["fit", *base, f"--model.init_from={missing}"], capsys) == (
        f"ftlit: error: model.init_from: '{missing}' does not exist: give an ftlit checkpoint (.ckpt) or a model "
        "folder written by ftlit export"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "is a folder without config.json" in cli_error(["fit", *base, f"--model.init_from={empty}"], capsys)
    text = tmp_path / "model.ckpt"
    text.write_text("not a checkpoint")
    line = cli_error(["fit", *base, f"--model.init_from={text}"], capsys)
    assert line.startswith("ftlit: error: model.init_from: ") and "is not a readable checkpoint" in line

    deeper = str(make_tiny_bert(tmp_path / "deeper", layers=3))
    args = [*cli_args(deeper, source["data"], tmp_path / "run"), f"--model.init_from={source['ckpt']}"]
    line = cli_error(["fit", *args], capsys)
    assert line == (
        f"ftlit: error: model.init_from: '{source['ckpt']}' has num_hidden_layers 2, but model.backbone '{deeper}' "
        "has num_hidden_layers 3: set model.backbone to the model init_from was fine-tuned from"
    )
    assert not Path(tmp_path / "run" / "checkpoints").exists()
