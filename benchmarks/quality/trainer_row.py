"""The quality benchmark's baseline row: a plain ``transformers.Trainer`` with its defaults, as Hugging Face's examples
run it (``run_glue.py`` / ``run_classification.py`` for text, ``run_ner.py`` for NER).

Imports neither ftlit nor Lightning. ``TrainingArguments`` keeps every training default (transformers 5.23: batch 8,
lr 5e-5, 3 epochs, linear decay, no warmup, no weight decay, max_grad_norm 1.0, fused AdamW, seed = the row's
seed); the examples' own defaults are kept too: labels sorted by name, truncation to ``max_length`` (128), the final
weights evaluated (no best-checkpoint selection). Three settings that change no score are not the defaults:
``save_strategy="no"`` (no checkpoint every 500 steps), an evaluation batch of 32 and dynamic padding
(``DataCollatorWithPadding``: run_glue pads every row to 128 tokens by default, which costs CPU time, not accuracy).

    python benchmarks/quality/trainer_row.py --spec SPEC.json --result RESULT.json

SPEC is what ``run.py`` writes: task, files, backbone folder, seed, max_length, work folder.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ner"))  # run_ner's tokenization and seqeval metrics, shared with bench_ner


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def label_metrics(task: str, label_list: list[str]):
    """``compute_metrics`` of the task, with the names ``run.py`` stores (the same names as ftlit's scores)."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef

    def classification(p) -> dict[str, float]:
        preds, labels = np.argmax(p.predictions, axis=-1), p.label_ids
        every = list(range(len(label_list)))
        return {
            "accuracy": float((preds == labels).mean()),
            "f1_macro": float(f1_score(labels, preds, average="macro", labels=every, zero_division=0)),
            "mcc": float(matthews_corrcoef(labels, preds)),
        }

    def regression(p) -> dict[str, float]:
        preds, labels = np.squeeze(p.predictions).astype(float), p.label_ids.astype(float)
        constant = float(np.std(preds)) == 0.0
        return {
            "pearson": float("nan") if constant else float(pearsonr(preds, labels)[0]),
            "spearman": float("nan") if constant else float(spearmanr(preds, labels)[0]),
            "mse": float(((preds - labels) ** 2).mean()),
        }

    def multi_label(p) -> dict[str, float]:
        preds, labels = (p.predictions > 0).astype(int), p.label_ids.astype(int)  # sigmoid >= 0.5
        return {
            "f1_micro": float(f1_score(labels, preds, average="micro", zero_division=0)),
            "f1_macro": float(f1_score(labels, preds, average="macro", zero_division=0)),
            "exact_match": float((preds == labels).all(axis=1).mean()),
        }

    if task == "ner":
        from trainer_ner import seqeval_metrics

        return seqeval_metrics(label_list)
    return {"classification": classification, "regression": regression, "multi_label": multi_label}[task]


def encode(task: str, rows: dict[str, list[dict]], tokenizer, max_length: int, pair: str | None):
    """The splits as tokenized ``datasets.Dataset``s and the label list (every label of train, sorted)."""
    from datasets import Dataset

    if task == "ner":
        from trainer_ner import tokenize_and_align_labels

        label_list = sorted({t for r in rows["train"] for t in r["tags"]})
        fn = tokenize_and_align_labels(tokenizer, {n: i for i, n in enumerate(label_list)}, max_length)
        data = {
            s: Dataset.from_dict({"tokens": [r["tokens"] for r in v], "tags": [r["tags"] for r in v]})
            for s, v in rows.items()
        }
        return {s: d.map(fn, batched=True, remove_columns=["tokens", "tags"]) for s, d in data.items()}, label_list
    if task == "regression":
        label_list = []
    elif task == "multi_label":
        label_list = sorted({name for r in rows["train"] for name in r["labels"]})
    else:
        label_list = sorted({r["label"] for r in rows["train"]})
    index = {n: i for i, n in enumerate(label_list)}
    out = {}
    for split, split_rows in rows.items():
        texts = [r["text"] for r in split_rows]
        pairs = [r[pair] for r in split_rows] if pair else None
        enc = dict(tokenizer(texts, pairs, truncation=True, max_length=max_length))
        if task == "regression":
            enc["labels"] = [float(r["label"]) for r in split_rows]
        elif task == "multi_label":
            enc["labels"] = [[float(n in r["labels"]) for n in label_list] for r in split_rows]
        else:
            unknown = {r["label"] for r in split_rows} - set(index)
            if unknown:
                raise ValueError(f"{split} has labels that train lacks: {sorted(unknown)}")
            enc["labels"] = [index[r["label"]] for r in split_rows]
        out[split] = Dataset.from_dict(enc)
    return out, label_list


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Train on the spec's train file, score the final weights on validation and test; the row's result."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    started = time.time()
    task, source, seed = spec["task"], spec["backbone_path"], int(spec["seed"])
    rows = {split: read_jsonl(path) for split, path in spec["files"].items()}
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    data, label_list = encode(task, rows, tokenizer, int(spec["max_length"]), spec.get("text_pair_column"))

    set_seed(seed)
    kwargs: dict[str, Any] = {}
    if task == "regression":
        kwargs = {"num_labels": 1, "problem_type": "regression"}
    else:
        kwargs = {
            "num_labels": len(label_list),
            "id2label": dict(enumerate(label_list)),
            "label2id": {n: i for i, n in enumerate(label_list)},
        }
        if task == "multi_label":
            kwargs["problem_type"] = "multi_label_classification"
    config = AutoConfig.from_pretrained(source, **kwargs)
    auto = AutoModelForTokenClassification if task == "ner" else AutoModelForSequenceClassification
    model = auto.from_pretrained(source, config=config, dtype=torch.float32)
    args = TrainingArguments(
        output_dir=str(Path(spec["workdir"]) / "trainer"),
        seed=seed,
        per_device_eval_batch_size=32,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    collator = DataCollatorForTokenClassification(tokenizer) if task == "ner" else DataCollatorWithPadding(tokenizer)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        data_collator=collator,
        compute_metrics=label_metrics(task, label_list),
    )
    fit_start = time.time()
    out = trainer.train()
    fit_s = time.time() - fit_start
    result: dict[str, Any] = {
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "fit_s": fit_s,
        "train_loss": float(out.metrics["train_loss"]),
        "batch_size": args.per_device_train_batch_size,
        "learning_rate": args.learning_rate,
        "ckpt": "final weights",
    }
    for split in ("validation", "test"):
        metrics = trainer.evaluate(data[split], metric_key_prefix="eval")
        result["val" if split == "validation" else "test"] = {
            k.removeprefix("eval_"): float(v)
            for k, v in metrics.items()
            if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second", "_loss"))
        }
    result["run_s"] = time.time() - started
    return result


if __name__ == "__main__":
    from row_cli import main

    main(run, __doc__)
