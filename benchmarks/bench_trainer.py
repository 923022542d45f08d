"""One baseline run, in its own process: plain ``transformers.Trainer`` with the profile's settings.

Imports neither ftlit nor Lightning (they would inflate its memory). Usage (``run.py`` does this):
``python benchmarks/bench_trainer.py --spec SPEC.json --result RESULT.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_timing import StepTimer, cuda_sync, device_name, loader_throughput, peak_memory_mib
from datasets import load_dataset
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)


class CountingCollator:
    """``DataCollatorWithPadding`` that queues (rows, non-padding tokens, tokens with padding) of every batch it builds
    while recording.

    The Trainer hands its callbacks no batch, so the timing callback pops one entry per optimizer step: the loader
    builds batches in the order the steps consume them (one batch ahead at most), so the queue lines them up.
    """

    def __init__(self, inner: DataCollatorWithPadding) -> None:
        self.inner = inner
        self.queue: deque[tuple[int, int, int]] = deque()
        self.recording = True

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.inner(features)
        if self.recording:
            ids = batch["input_ids"]
            self.queue.append((int(ids.shape[0]), int(batch["attention_mask"].sum()), ids.numel()))
        return batch


class StepTimingCallback(TrainerCallback):
    """The Trainer-side twin of ``bench_lightning.StepTiming``."""

    def __init__(self, collator: CountingCollator, device: str, warmup_steps: int = 1) -> None:
        self.collator = collator
        self.timer = StepTimer(cuda_sync(device), warmup_steps)

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self.timer.epoch_start()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self.timer.step_end(*self.collator.queue.popleft())

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self.timer.epoch_end()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self.timer.train_end()
        self.collator.recording = False


def accuracy(pred: EvalPrediction) -> dict[str, float]:
    """Share of rows whose arg-max logit is the label."""
    return {"accuracy": float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())}


def main() -> None:
    """Tokenize, train, evaluate, time the loader and write the result JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--result", required=True, type=Path)
    ns = parser.parse_args()
    spec = json.loads(ns.spec.read_text())
    p = spec["profile"]
    variant = spec["variant"]  # the speed option's Trainer equivalent (bench_profiles.VARIANTS); none by default
    workdir = Path(spec["workdir"])
    spawned = float(os.environ.get("BENCH_SPAWN_TIME", time.time()))
    source = spec["backbone_path"]

    # The same tokenization as ftlit's: the backbone's fast tokenizer, truncation to max_length, no padding
    # (batches are padded to their longest row by the collator); labels sorted by name, as ftlit orders them.
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    raw = load_dataset(
        "json",
        data_files={"train": spec["train_file"], "validation": spec["validation_file"]},
        cache_dir=str(workdir / "datasets"),
    )
    labels = sorted(set(raw["train"]["label"]))
    label2id = {name: i for i, name in enumerate(labels)}

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        out = tokenizer(batch["text"], truncation=True, max_length=p["max_length"])
        out["labels"] = [label2id[v] for v in batch["label"]]
        return out

    encoded = raw.map(tokenize, batched=True, remove_columns=raw["train"].column_names)

    set_seed(p["seed"])
    config = AutoConfig.from_pretrained(
        source,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label2id,
        problem_type="single_label_classification",
    )
    model = AutoModelForSequenceClassification.from_pretrained(
        source, config=config, dtype=torch.float32, attn_implementation="sdpa"
    )
    on_gpu = p["device"] == "cuda"
    settings: dict[str, Any] = dict(
        output_dir=str(workdir / "trainer"),
        per_device_train_batch_size=p["batch_size"],
        per_device_eval_batch_size=p["batch_size"],
        learning_rate=p["learning_rate"],
        weight_decay=p["weight_decay"],  # the Trainer, like ftlit, spares biases and LayerNorm weights
        lr_scheduler_type="linear",
        warmup_steps=p["warmup_ratio"],  # a float below 1 is a ratio of the total steps, rounded up like ftlit's
        max_grad_norm=p["gradient_clip"],
        num_train_epochs=p["epochs"],
        max_steps=spec.get("max_steps") or -1,
        # The Trainer's default optimizer, as ftlit's: torch's fused AdamW on any device (betas and eps as torch's).
        optim="adamw_torch_fused",
        bf16=p["precision"] == "bf16-mixed",
        use_cpu=not on_gpu,
        seed=p["seed"],
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=p["log_every_n_steps"],
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
    )
    args = TrainingArguments(**{**settings, **variant["trainer_args"]})
    collator = CountingCollator(DataCollatorWithPadding(tokenizer, **variant["collator_args"]))
    timing = StepTimingCallback(collator, p["device"])
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        data_collator=collator,
        compute_metrics=accuracy,
        callbacks=[timing],
    )
    trainer.train()
    fit_done = time.time()
    result: dict[str, Any] = {"system": "trainer", **timing.timer.summary()}
    result["time_to_first_step_s"] = result.pop("train_start_unix") - spawned
    result["fit_wall_s"] = fit_done - spawned

    start = time.perf_counter()
    metrics = trainer.evaluate()
    result["eval_s"] = time.perf_counter() - start
    result["val_accuracy"] = float(metrics["eval_accuracy"])
    result["val_loss"] = float(metrics["eval_loss"])

    result.update(loader_throughput(trainer.get_train_dataloader()))
    result["params"] = sum(q.numel() for q in model.parameters() if q.requires_grad)
    result["torch_threads"] = torch.get_num_threads()
    result["device_name"] = device_name(spec["profile"]["device"])
    result.update(peak_memory_mib(p["device"]))
    ns.result.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
