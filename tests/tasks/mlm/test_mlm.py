"""Masked-language-model training (domain-adaptive pretraining): packing, masking, training, resume, DDP, fill-mask
and the chain into a fine-tuning."""

from __future__ import annotations

import json
import logging
import math
import random

import pytest
import torch
from helpers.runs import ftlit
from transformers import AutoTokenizer, pipeline

from conftest import NEGATIVE, POSITIVE, cli_error, column, encoded, read_metrics, write_jsonl
from ftlit.cli import FtlitCLI
from ftlit.commands.export import export
from ftlit.tasks.mlm import MaskedLanguageModel, MaskedLMDataModule
from ftlit.tasks.text import SequenceClassifier

MLM = ("ftlit.tasks.mlm.MaskedLanguageModel", "ftlit.tasks.mlm.MaskedLMDataModule")
SUBJECTS = ["movie", "food", "service", "acting", "plot"]


def write_text(path, texts: list[str], separator: str = "\n"):
    path.write_text(separator.join(texts) + "\n")
    return path


def corpus(n: int, seed: int) -> list[str]:
    """In-domain text without labels: short reviews with a regular shape (so a tiny model learns it in a few
    epochs), some with sub-word tokens (``good ##s``)."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        subject, word = rng.choice(SUBJECTS), rng.choice(POSITIVE + NEGATIVE)
        texts.append(f"the {subject} was very {word} ." + (" goods" if i % 3 == 0 else ""))
    return texts


def mlm_args(tiny_bert: str, root, data: dict, *extra: str) -> list[str]:
    return [
        "--seed_everything=0",
        f"--trainer.default_root_dir={root}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.max_epochs=4",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        f"--model={MLM[0]}",
        f"--model.backbone={tiny_bert}",
        "--model.learning_rate=3e-3",
        "--model.scheduler=constant",
        f"--data={MLM[1]}",
        "--data.max_length=24",
        "--data.batch_size=8",
        *[f"--data.{k}={v}" for k, v in data.items()],
        *extra,
    ]


@pytest.fixture(scope="module")
def adapted(tiny_bert, tmp_path_factory) -> dict:
    """The tiny model adapted on unlabelled text for 4 epochs: its run, data and export."""
    tmp = tmp_path_factory.mktemp("mlm")
    data = {
        "train_file": str(write_text(tmp / "train.txt", corpus(240, 0))),
        "validation_file": str(write_text(tmp / "validation.txt", corpus(120, 1))),
        "cache_dir": str(tmp / "cache"),  # the autouse cache fixture is per test; this fixture is per module
    }
    root = tmp / "run"
    # The untrained model's scores, for comparison: `validate` without a checkpoint.
    FtlitCLI(args=["validate", *mlm_args(tiny_bert, tmp / "untrained", data)])
    FtlitCLI(args=["fit", *mlm_args(tiny_bert, root, data)])
    ckpt = root / "checkpoints" / "last.ckpt"
    exported = export(str(ckpt), str(tmp / "export"))
    return {"root": root, "data": data, "ckpt": ckpt, "export": exported, "untrained": tmp / "untrained"}


def make(tiny_bert: str, tmp_path, **kwargs) -> MaskedLMDataModule:
    kwargs.setdefault("train_file", str(write_text(tmp_path / "train.txt", corpus(400, 0))))
    kwargs.setdefault("val_fraction", 0)
    kwargs.setdefault("max_length", 24)
    return MaskedLMDataModule(tokenizer=tiny_bert, **kwargs)


# --- data -------------------------------------------------------------------------------------------------------


def test_documents_are_packed_into_chunks_with_the_special_tokens(tiny_bert, tmp_path):
    texts = ["good movie", "the plot was awful and the acting boring", "superb"]
    dm = make(tiny_bert, tmp_path, train_file=str(write_jsonl(tmp_path / "t.jsonl", [{"body": t} for t in texts])),
              text_column="body", max_length=8)  # fmt: skip
    chunks = encoded(dm)["input_ids"]
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    assert all(c[0] == tok.cls_token_id and c[-1] == tok.sep_token_id and len(c) <= 8 for c in chunks)
    assert [len(c) for c in chunks[:-1]] == [8] * (len(chunks) - 1)  # full chunks, the rest in the last
    inner = [t for c in chunks for t in c[1:-1]]
    expected = tok(" [SEP] ".join(texts), add_special_tokens=False)["input_ids"]
    assert inner == expected  # every token once, in order, documents separated by [SEP]


def test_text_files_hold_a_document_per_line_or_per_paragraph(tiny_bert, tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("good movie\nand plot\n\n  \nawful acting\n")
    lines = make(tiny_bert, tmp_path, train_file=str(path))
    assert lines.raw["train"]["text"] == ["good movie", "and plot", "awful acting"]
    paragraphs = make(tiny_bert, tmp_path, train_file=str(path), documents="paragraph")
    assert paragraphs.raw["train"]["text"] == ["good movie and plot", "awful acting"]


def _masking(dm: MaskedLMDataModule, batches: int) -> dict[str, float]:
    """What the training batches' masking did, over many batches."""
    rows = encoded(dm)
    mask_id = dm.tokenizer.mask_token_id
    counts = dict.fromkeys(("tokens", "chosen", "mask", "random", "kept"), 0)
    torch.manual_seed(0)
    for b in range(batches):
        features = [rows[(b * 8 + i) % len(rows)] for i in range(8)]
        batch = dm.collate(features)
        width = batch["input_ids"].shape[1]
        original = torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features])
        chosen = batch["labels"] != -100
        counts["tokens"] += sum(f["special_tokens_mask"].count(0) for f in features)
        counts["chosen"] += int(chosen.sum())
        assert torch.equal(batch["labels"][chosen], original[chosen])  # labels are the original tokens
        counts["mask"] += int((batch["input_ids"][chosen] == mask_id).sum())
        counts["kept"] += int((batch["input_ids"][chosen] == original[chosen]).sum())
        counts["random"] += int(((batch["input_ids"] != original) & (batch["input_ids"] != mask_id)).sum())
    return {k: counts[k] / counts["chosen"] for k in ("mask", "random", "kept")} | {
        "rate": counts["chosen"] / counts["tokens"]
    }


def test_masking_rate_and_the_80_10_10_split_are_what_the_config_says(tiny_bert, tmp_path):
    seen = _masking(make(tiny_bert, tmp_path), 300)
    # A random token is drawn from the whole vocabulary (33 tokens here): 1 time in 33 it is [MASK], 1 in 33 the
    # original.
    v = 33
    assert seen["rate"] == pytest.approx(0.15, abs=0.01)
    assert seen["mask"] == pytest.approx(0.8 + 0.1 / v, abs=0.015)
    assert seen["random"] == pytest.approx(0.1 * (v - 2) / v, abs=0.015)
    assert seen["kept"] == pytest.approx(0.1 + 0.1 / v, abs=0.015)
    other = _masking(
        make(tiny_bert, tmp_path, mlm_probability=0.3, mask_replace_prob=0.5, random_replace_prob=0.5), 300
    )
    assert other["rate"] == pytest.approx(0.3, abs=0.01) and other["mask"] == pytest.approx(0.5 + 0.5 / v, abs=0.015)
    assert other["kept"] == pytest.approx(0.5 / v, abs=0.01)


def test_whole_word_masking_masks_every_sub_token_of_a_chosen_word(tiny_bert, tmp_path):
    dm = make(tiny_bert, tmp_path, whole_word_mask=True, mask_replace_prob=1.0, random_replace_prob=0.0)
    rows = encoded(dm)
    suffix = dm.tokenizer.convert_tokens_to_ids("##s")
    torch.manual_seed(0)
    split = whole = 0
    for b in range(100):
        features = [rows[(b * 8 + i) % len(rows)] for i in range(8)]
        labels = dm.collate(features)["labels"]
        for row, f in zip(labels, features, strict=True):
            for i, token in enumerate(f["input_ids"]):
                if token == suffix and not f["special_tokens_mask"][i - 1]:  # "good ##s": both chosen or neither
                    whole += bool(row[i] != -100 and row[i - 1] != -100)
                    split += bool((row[i] != -100) != (row[i - 1] != -100))
    assert whole > 10 and split == 0
    # Without it, sub-tokens are chosen one by one.
    dm = make(tiny_bert, tmp_path)
    torch.manual_seed(0)
    features = [f for f in encoded(dm) if len(f["input_ids"]) == 24]  # full chunks: one width
    labels = torch.cat([dm.collate(features)["labels"] for _ in range(20)])
    tokens = torch.tensor([f["input_ids"] for f in features] * 20)
    at = (tokens == suffix).nonzero()
    assert bool(((labels[at[:, 0], at[:, 1]] != -100) != (labels[at[:, 0], at[:, 1] - 1] != -100)).any())


def test_evaluation_chunks_are_masked_once_by_the_seed(tiny_bert, tmp_path):
    def validation(seed: int, cache: str):
        dm = make(tiny_bert, tmp_path, validation_file=str(write_text(tmp_path / "v.txt", corpus(40, 1))),
                  seed=seed, cache_dir=str(tmp_path / cache))  # fmt: skip
        return encoded(dm, "validation")

    first, again, other = validation(1, "a"), validation(1, "b"), validation(2, "c")
    assert first["labels"] == again["labels"] and first["input_ids"] == again["input_ids"]
    assert first["labels"] != other["labels"]
    batch = make(tiny_bert, tmp_path).collate([first[0], first[1]])
    assert set(batch) == {"input_ids", "attention_mask", "labels"} and (batch["labels"] != -100).any()


def test_bad_input_is_one_line_before_any_work(tiny_bert, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    line = cli_error(["fit", *mlm_args(tiny_bert, tmp_path / "run", {"train_file": str(empty)})], capsys)
    assert line == f"ftlit: error: data.train_file: '{empty}' holds no text: give a file with one document per line"
    table = write_jsonl(tmp_path / "t.jsonl", [{"body": "good movie"}] * 20)
    line = cli_error(["fit", *mlm_args(tiny_bert, tmp_path / "run", {"train_file": str(table)})], capsys)
    assert line.startswith("ftlit: error: data.text_column: ") and "'text'" in line
    for key, value in (("mlm_probability", "0"), ("mask_replace_prob", "1.5"), ("random_replace_prob", "0.3")):
        line = cli_error(
            ["fit", *mlm_args(tiny_bert, tmp_path / "run", {"train_file": str(table), key: value})], capsys
        )
        assert line.startswith(f"ftlit: error: data.{key}: "), line
    ok = {"train_file": str(write_text(tmp_path / "ok.txt", corpus(20, 0)))}
    line = cli_error(["fit", *mlm_args(tiny_bert, tmp_path / "run", ok, "--model.top_k=0")], capsys)
    assert line == "ftlit: error: model.top_k: must be a positive integer, got 0"
    predict = write_jsonl(tmp_path / "p.jsonl", [{"text": "good movie"}])
    line = cli_error(["predict", *mlm_args(tiny_bert, tmp_path / "run", {"predict_file": str(predict)})], capsys)
    assert "1 of 1 texts (the first is row 0) have no [MASK] to fill" in line


# --- training ---------------------------------------------------------------------------------------------------


def test_the_loss_falls_and_perplexity_is_the_exp_of_the_validation_loss(adapted):
    rows, untrained = read_metrics(adapted["root"]), read_metrics(adapted["untrained"])
    loss, perplexity = column(rows, "val/loss"), column(rows, "val/perplexity")
    assert len(loss) == 4 and loss[-1] < column(untrained, "val/loss")[0] - 0.5, loss
    assert perplexity == pytest.approx([math.exp(v) for v in loss], rel=1e-5)
    assert column(untrained, "val/perplexity")[0] > 25  # about the vocabulary's 33 tokens: nothing learnt yet
    accuracy = column(rows, "val/accuracy")
    assert accuracy[-1] > column(untrained, "val/accuracy")[0] + 0.05 and 0 < accuracy[-1] < 1


def test_a_resumed_run_draws_the_same_masks(tiny_bert, adapted, tmp_path):
    args = mlm_args(tiny_bert, tmp_path / "whole", adapted["data"], "--trainer.max_epochs=2")
    FtlitCLI(args=["fit", *args])
    resumed = [a.replace("whole", "resumed") for a in args]
    FtlitCLI(args=["fit", *resumed, "--trainer.max_epochs=1"])
    FtlitCLI(args=["fit", *resumed, "--ckpt_path=last"])
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True) for r in ("whole", "resumed"))
    assert a["global_step"] == b["global_step"] > 0
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=0, msg=key)


def test_ddp_validation_equals_a_single_process(tiny_bert, adapted, tmp_path):
    # 60 validation documents make an odd number of chunks: the ranks get different numbers of them.
    ckpt = f"--ckpt_path={adapted['ckpt']}"
    data = {**adapted["data"], "eval_batch_size": "3"}
    ftlit("validate", *mlm_args(tiny_bert, tmp_path / "one", data), ckpt)
    ftlit("validate", *mlm_args(tiny_bert, tmp_path / "two", data, "--trainer.strategy=ddp", "--trainer.devices=2"),
          ckpt)  # fmt: skip
    for key in ("val/loss", "val/perplexity", "val/accuracy"):
        assert column(read_metrics(tmp_path / "two"), key) == pytest.approx(column(read_metrics(tmp_path / "one"), key),
                                                                            abs=1e-5), key  # fmt: skip


def test_fill_mask_on_the_export_gives_ftlit_s_top_tokens(tiny_bert, adapted, tmp_path):
    texts = ["the movie was [MASK]", "[MASK] acting and a very [MASK] plot"]
    data = {"predict_file": str(write_jsonl(tmp_path / "p.jsonl", [{"text": t} for t in texts]))}
    args = [*mlm_args(tiny_bert, adapted["root"], data), "--model.top_k=3", f"--ckpt_path={adapted['ckpt']}"]
    FtlitCLI(args=["predict", *args])
    rows = [json.loads(line) for line in (adapted["root"] / "predictions.jsonl").read_text().splitlines()]
    assert [len(r["masks"]) for r in rows] == [1, 2] and all(len(m) == 3 for r in rows for m in r["masks"])
    fill = pipeline("fill-mask", model=str(adapted["export"]), top_k=3, device="cpu")
    for text, row in zip(texts, rows, strict=True):
        got = fill(text)
        got = got if isinstance(got[0], list) else [got]  # one mask: a flat list
        for ours, theirs in zip(row["masks"], got, strict=True):
            assert [o["token_id"] for o in ours] == [t["token"] for t in theirs]
            assert [o["score"] for o in ours] == pytest.approx([t["score"] for t in theirs], abs=1e-5)


def test_the_adapted_backbone_starts_a_classifier(tiny_bert, adapted, caplog):
    mlm = MaskedLanguageModel.load_from_checkpoint(adapted["ckpt"])
    with caplog.at_level(logging.INFO):
        classifier = SequenceClassifier(tiny_bert, label_names=["neg", "pos"], init_from=str(adapted["ckpt"]))
    assert "init_from is a BertForMaskedLM, this task a BertForSequenceClassification" in caplog.text
    # A masked-LM model has no pooler: the classifier keeps model.backbone's.
    assert "init_from has no [bert.pooler.dense.bias, bert.pooler.dense.weight]: those come from" in caplog.text
    ours, theirs = classifier.model.state_dict(), mlm.model.state_dict()
    encoder = [k for k in theirs if k.startswith(("bert.embeddings.", "bert.encoder."))]
    assert len(encoder) > 20
    for key in encoder:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0, msg=key)
    pretrained = SequenceClassifier(tiny_bert, label_names=["neg", "pos"]).model.state_dict()
    torch.testing.assert_close(ours["bert.pooler.dense.weight"], pretrained["bert.pooler.dense.weight"])
