"""The baseline: a plain ``transformers.Trainer`` token-classification run, as Hugging Face's ``run_ner.py`` does it.

Imports neither ftlit nor Lightning. The recipe is run_ner's: words tokenized with ``is_split_into_words=True``,
each word's tag on its first sub-token and -100 on the others and on special tokens, truncation to
``max_length``, ``DataCollatorForTokenClassification`` (each batch padded to its longest row, labels with -100),
``AutoModelForTokenClassification``, and seqeval's entity-level precision, recall and F1 (default mode) on the
first sub-token of every word. Labels are every tag seen in train, sorted (run_ner's ``get_label_list``).

    python benchmarks/ner/trainer_ner.py --spec SPEC.json --result RESULT.json

SPEC is the JSON ``bench_ner.py`` writes: files, backbone folder, settings (see ``bench_ner.SETTINGS``), seed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    EvalPrediction,
    Trainer,
    TrainingArguments,
    set_seed,
)


def read_conll(path: str) -> dict[str, list[list[str]]]:
    """Token and tag columns of a CoNLL file (first and last column), a blank line between sentences."""
    tokens, tags, words, labels = [], [], [], []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines:
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if words:
                tokens.append(words)
                tags.append(labels)
                words, labels = [], []
            continue
        words.append(cols[0])
        labels.append(cols[-1])
    if words:
        tokens.append(words)
        tags.append(labels)
    return {"tokens": tokens, "tags": tags}


def tokenize_and_align_labels(tokenizer, label_to_id: dict[str, int], max_length: int):
    """run_ner.py's ``tokenize_and_align_labels`` with ``label_all_tokens=False``."""

    def tokenize(examples: dict[str, list]) -> dict[str, list]:
        tokenized = tokenizer(
            examples["tokens"], padding=False, truncation=True, max_length=max_length, is_split_into_words=True
        )
        labels = []
        for i, label in enumerate(examples["tags"]):
            word_ids = tokenized.word_ids(batch_index=i)
            previous_word_idx = None
            label_ids = []
            for word_idx in word_ids:
                if word_idx is None:
                    label_ids.append(-100)
                elif word_idx != previous_word_idx:
                    label_ids.append(label_to_id[label[word_idx]])
                else:
                    label_ids.append(-100)
                previous_word_idx = word_idx
            labels.append(label_ids)
        tokenized["labels"] = labels
        return tokenized

    return tokenize


def seqeval_metrics(label_list: list[str], per_type: bool = False):
    """run_ner.py's ``compute_metrics``: predictions and labels at labelled positions only, seqeval default mode."""

    def compute(p: EvalPrediction) -> dict[str, float]:
        predictions = np.argmax(p.predictions, axis=2)
        true_predictions = [
            [label_list[q] for (q, lab) in zip(prediction, label, strict=True) if lab != -100]
            for prediction, label in zip(predictions, p.label_ids, strict=True)
        ]
        true_labels = [
            [label_list[lab] for (q, lab) in zip(prediction, label, strict=True) if lab != -100]
            for prediction, label in zip(predictions, p.label_ids, strict=True)
        ]
        out = {
            "precision": precision_score(true_labels, true_predictions),
            "recall": recall_score(true_labels, true_predictions),
            "f1": f1_score(true_labels, true_predictions),
        }
        if per_type:
            report = classification_report(true_labels, true_predictions, output_dict=True, zero_division=0)
            for type_, scores in report.items():
                if type_.endswith(" avg"):
                    continue
                out[f"f1_{type_}"] = scores["f1-score"]
        return {k: float(v) for k, v in out.items()}

    return compute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--result", required=True, type=Path)
    ns = parser.parse_args()
    spec = json.loads(ns.spec.read_text())
    s = spec["settings"]
    started = time.time()

    raw = DatasetDict({split: Dataset.from_dict(read_conll(spec["files"][split])) for split in spec["files"]})
    label_list = sorted({t for tags in raw["train"]["tags"] for t in tags})
    label_to_id = {name: i for i, name in enumerate(label_list)}
    tokenizer = AutoTokenizer.from_pretrained(spec["backbone_path"], use_fast=True)
    encoded = raw.map(
        tokenize_and_align_labels(tokenizer, label_to_id, s["max_length"]),
        batched=True,
        remove_columns=raw["train"].column_names,
        load_from_cache_file=False,
    )

    set_seed(spec["seed"])
    config = AutoConfig.from_pretrained(
        spec["backbone_path"], num_labels=len(label_list), id2label=dict(enumerate(label_list)), label2id=label_to_id
    )
    model = AutoModelForTokenClassification.from_pretrained(
        spec["backbone_path"], config=config, dtype=torch.float32, attn_implementation="sdpa"
    )
    args = TrainingArguments(
        output_dir=str(Path(spec["workdir"]) / "trainer"),
        per_device_train_batch_size=s["batch_size"],
        per_device_eval_batch_size=s["batch_size"],
        learning_rate=s["learning_rate"],
        weight_decay=s["weight_decay"],  # not on biases and LayerNorm weights (get_decay_parameter_names)
        lr_scheduler_type="linear",
        warmup_steps=s["warmup_ratio"],  # a float below 1: a ratio of the total steps, rounded up
        max_grad_norm=s["gradient_clip"],
        num_train_epochs=s["epochs"],
        max_steps=spec.get("max_steps") or -1,
        optim="adamw_torch_fused",
        use_cpu=not torch.cuda.is_available(),
        seed=spec["seed"],
        eval_strategy="steps" if spec.get("max_steps") else "epoch",
        eval_steps=spec.get("max_steps") or None,
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=10,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        # transformers 5's name for group_by_length=True (bench_ner.py --group-by-length; ftlit's
        # data.group_by_length): length-grouped batches, in random order.
        train_sampling_strategy="group_by_length" if spec.get("group_by_length") else "random",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        data_collator=DataCollatorForTokenClassification(tokenizer),
        compute_metrics=seqeval_metrics(label_list),
    )
    train_out = trainer.train()
    result: dict[str, Any] = {
        "system": "trainer",
        "steps": trainer.state.global_step,
        "train_s": float(train_out.metrics["train_runtime"]),  # includes the per-epoch evaluations, as ftlit's
        "train_loss": float(train_out.metrics["train_loss"]),
        "per_epoch": [
            {
                "epoch": round(h["epoch"], 3),
                "val_f1": h["eval_f1"],
                "val_precision": h["eval_precision"],
                "val_recall": h["eval_recall"],
            }
            for h in trainer.state.log_history
            if "eval_f1" in h
        ],
    }
    # The final weights: validation as scored after the last epoch, and test (no best-checkpoint selection, in
    # either system).
    result.update({k: v for k, v in result["per_epoch"][-1].items() if k.startswith("val_")})
    trainer.compute_metrics = seqeval_metrics(label_list, per_type=True)
    start = time.time()
    metrics = trainer.evaluate(encoded["test"], metric_key_prefix="test")
    scores = ("test_f1", "test_precision", "test_recall")
    result.update({k: float(v) for k, v in metrics.items() if k.startswith(scores)})
    result["eval_s"] = time.time() - start
    result["wall_s"] = time.time() - started
    result["labels"] = label_list
    ns.result.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
