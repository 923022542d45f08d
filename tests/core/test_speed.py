"""Speed options: length-grouped batching, torch.compile, fused optimizers, bf16, tokenization cost."""

from __future__ import annotations

import os
import shutil
import sys

import datasets
import pytest
import torch

from conftest import cli_args, make_tiny_bert, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI
from ftlit.core.module import FineTuneModule, WeightedMean
from ftlit.core.samplers import LengthGroupedSampler
from ftlit.tasks.text import ClassificationDataModule, MultiLabelClassifier, SequenceClassifier, SequenceRegressor


def test_length_grouped_batches_are_homogeneous_random_and_sharded():
    lengths = [(i * 37) % 101 + 1 for i in range(400)]
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3, mega=5)
    batches = sampler.batches()
    assert sorted(i for b in batches for i in b) == list(range(400))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    shuffled = [list(range(400))[i : i + 8] for i in range(0, 400, 8)]
    random_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in shuffled) / len(shuffled)
    assert spread < 0.5 * random_spread  # far less padding than unsorted batches
    again = LengthGroupedSampler(lengths, batch_size=8, seed=3, mega=5).batches()
    assert again == batches  # a pure function of (seed, epoch): resumable
    sampler.set_epoch(1)
    assert sampler.batches() != batches
    ranks = [list(LengthGroupedSampler(lengths, 8, seed=3, num_replicas=2, rank=r, mega=5)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 200
    assert set(ranks[0]).isdisjoint(ranks[1])


def test_group_by_length_reaches_the_train_loader(tiny_bert, tmp_path):
    rows = toy_rows(64, 0)
    dm = ClassificationDataModule(
        tokenizer=tiny_bert,
        train_file=str(write_jsonl(tmp_path / "t.jsonl", rows)),
        val_fraction=0,
        batch_size=8,
        group_by_length=True,
    )
    dm.prepare_data()
    dm.setup()
    widths = [b["input_ids"].shape[1] for b in dm.train_dataloader()]
    plain = ClassificationDataModule(
        tokenizer=tiny_bert, train_file=str(tmp_path / "t.jsonl"), val_fraction=0, batch_size=8
    )
    plain.prepare_data()
    plain.setup()
    assert sum(widths) < sum(b["input_ids"].shape[1] for b in plain.train_dataloader())


def test_compile_wraps_the_forward_and_keeps_checkpoint_names(tiny_bert):
    model = SequenceClassifier(backbone=tiny_bert, label_names=["neg", "pos"], compile=True)
    names = list(model.state_dict())
    model.configure_model()
    assert hasattr(model.model.forward, "_torchdynamo_orig_callable")
    assert list(model.state_dict()) == names
    plain = SequenceClassifier(backbone=tiny_bert, label_names=["neg", "pos"])
    plain.configure_model()
    assert not hasattr(plain.model.forward, "_torchdynamo_orig_callable")
    assert isinstance(plain.model.forward.__self__, torch.nn.Module)


def test_a_compiled_training_step_runs_on_the_cpu(tmp_path, monkeypatch):
    """`--model.compile true` for real: dynamo captures the forward and inductor builds the forward's and the
    backward's kernels with the C++ compiler (a cold cache: nothing is loaded ready-made), and the step trains."""
    compiler = os.environ.get("CXX", "g++")  # what inductor runs (torch._inductor.config.cpp.cxx)
    if shutil.which(compiler) is None:
        pytest.skip(f"torch.compile's inductor builds C++ kernels on the CPU: needs a C++ compiler ({compiler})")
    from torch._dynamo.utils import counters

    cache = tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    backbone = str(make_tiny_bert(tmp_path / "bert", layers=1))  # one layer: half the kernels to build
    data = {"train_file": str(write_jsonl(tmp_path / "train.jsonl", toy_rows(16, 0)))}
    extra = ("--model.compile=true", "--trainer.max_steps=1", "--trainer.limit_val_batches=0")
    cli = FtlitCLI(args=cli_args(backbone, data, tmp_path / "run", *extra), run=False)
    before = {k: v.detach().clone() for k, v in cli.model.state_dict().items()}
    torch._dynamo.reset()
    counters.clear()
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        captured = {k: dict(v) for k, v in counters.items() if v}
    finally:
        torch._dynamo.reset()
    graphs, built = captured.get("stats", {}).get("unique_graphs", 0), captured.get("inductor", {})
    assert graphs >= 1, f"dynamo captured no graph: {captured}"
    assert built.get("fxgraph_cache_miss", 0) >= 2, f"inductor did not build the forward and backward: {captured}"
    assert list(cache.rglob("*.so")), "inductor built no kernel"
    assert cli.trainer.global_step == 1
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and "perf/first_step_seconds" in metrics
    after = cli.model.state_dict()
    assert list(after) == list(before)  # checkpoint names unchanged
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert "model.classifier.weight" in moved and any(".encoder.layer.0." in k for k in moved), moved


def test_group_size_follows_hugging_face_rule():
    # len // (4 * batch), at most 50, at least 1: a small data set is still sorted in several random groups.
    assert LengthGroupedSampler([1] * 2402, batch_size=32).mega == 18
    assert LengthGroupedSampler([1] * 100_000, batch_size=32).mega == 50
    assert LengthGroupedSampler([1] * 10, batch_size=32).mega == 1


@pytest.mark.parametrize("optimizer", ["AdamW", "SGD"])
def test_optimizers_with_a_fused_kernel_run_it_on_the_cpu(tiny_bert, toy_data, tmp_path, optimizer):
    extra = (f"--model.optimizer={optimizer}", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2")
    cli = FtlitCLI(args=["fit", *cli_args(tiny_bert, toy_data, tmp_path, *extra)])
    (trained,) = cli.trainer.optimizers
    assert type(trained).__name__ == optimizer and trained.defaults["fused"] is True


def test_tokenizing_skips_datasets_fingerprint_of_the_function(tiny_bert, toy_data, monkeypatch):
    # Hashing the function pickles its closure, tokenizer included (0.3 s a split for MiniLM); ftlit keys the
    # tokenized splits itself, so none of datasets' hashing may run while tokenizing.
    dm = ClassificationDataModule(tokenizer=tiny_bert, **toy_data)
    dm.validate()  # reading the files may fingerprint them: that is not the function

    hash_transform = datasets.fingerprint.update_fingerprint
    hashed = []

    def watch(fingerprint, transform, transform_args):
        hashed.extend(v for v in transform_args.values() if callable(v))
        return hash_transform(fingerprint, transform, transform_args)

    for module in (datasets.fingerprint, datasets.arrow_dataset):  # map hashes through its own import
        monkeypatch.setattr(module, "update_fingerprint", watch)
    dm.prepare_data()
    dm.setup()
    assert len(dm.datasets["train"]) == len(dm.raw["train"])
    assert hashed == []


def test_bf16_mixed_precision_trains_and_evaluates_on_the_cpu(tiny_bert, toy_data, tmp_path):
    cli = FtlitCLI(
        args=cli_args(tiny_bert, toy_data, tmp_path, "--trainer.precision=bf16-mixed", "--trainer.max_epochs=1"),
        run=False,
    )
    dtypes = []
    cli.model.model.classifier.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    before = cli.model.model.classifier.weight.detach().clone()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert set(dtypes) == {torch.bfloat16}  # the head ran under bf16 autocast, in training and validation
    assert cli.model.model.classifier.weight.dtype == torch.float32  # master weights stay fp32
    assert not torch.equal(cli.model.model.classifier.weight.detach(), before)
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["val/acc"]) <= 1.0 and torch.isfinite(metrics["val/loss"])


def classification_batch(tiny_bert: str, task: str) -> tuple[FineTuneModule, torch.Tensor, torch.Tensor]:
    """A model of one classification-family task, with logits and labels of a 4-row batch for it."""
    if task == "classification":
        return (
            SequenceClassifier(backbone=tiny_bert, label_names=["neg", "pos"]),
            torch.randn(4, 2),
            torch.tensor([0, 1, 1, 0]),
        )
    if task == "regression":
        return SequenceRegressor(backbone=tiny_bert), torch.randn(4, 1), torch.rand(4)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    return MultiLabelClassifier(backbone=tiny_bert, label_names=["a", "b", "c"]), torch.randn(4, 3), labels


@pytest.mark.parametrize("task", ["classification", "regression", "multi_label"])
def test_evaluation_updates_never_wait_for_values(tiny_bert, task, monkeypatch):
    # The meta device has shapes but no values: a step that reads a value back to the host (.item(), .tolist(),
    # bool(tensor), torch.unique, tensor[mask], .cpu()) raises there, so on a GPU evaluation does not wait for the
    # device per batch. The task's own validation_step and test_step run (loss, metrics and the test's details),
    # not a copy of them; only the backbone is replaced by fixed logits, and self.log (no trainer here).
    # One exception, torchmetrics' own: the confusion counts of macro F1 and MCC use torch.bincount, which sizes
    # its output from the data (on a GPU it reads the maximum back); called from torchmetrics it gets a shape-only
    # stand-in, called from anywhere else it is the real one, which refuses meta tensors.
    bincount = torch.bincount

    def torchmetrics_bincount(x, weights=None, minlength=0):
        if x.is_meta and sys._getframe(1).f_globals.get("__name__", "").startswith("torchmetrics."):
            return torch.zeros(minlength, dtype=x.dtype, device=x.device)
        return bincount(x, weights, minlength)

    monkeypatch.setattr(torch, "bincount", torchmetrics_bincount)
    model, logits, labels = classification_batch(tiny_bert, task)
    monkeypatch.setattr(model, "forward", lambda batch: logits.to(batch["input_ids"].device))
    monkeypatch.setattr(model, "log", lambda *args, **kwargs: None)
    batch = {"input_ids": torch.ones(4, 7, dtype=torch.long), "labels": labels}
    metrics = [model.val_loss, model.val_metrics, model.test_loss, model.test_metrics, model.test_details()]
    model.validation_step(batch, 0)  # the first batch settles torchmetrics' compute groups, once, by comparing states
    model.test_step(batch, 0)
    for metric in metrics:
        metric.to("meta")
    on_meta = {k: v.to("meta") for k, v in batch.items()}
    model.validation_step(on_meta, 1)
    model.test_step(on_meta, 1)
    # The meta updates ran: every metric counted them, and its states stayed shapes on the meta device.
    for metric in metrics:
        members = metric.items(keep_base=True, copy_state=False) if hasattr(metric, "items") else [("loss", metric)]
        for name, one in members:
            assert one._update_count == 2, name
            states = [getattr(one, s) for s in one._defaults]
            assert all(t.is_meta for s in states for t in (s if isinstance(s, list) else [s])), name


def test_evaluation_loss_is_a_weighted_mean_that_shows_nan():
    mean = WeightedMean()
    mean.update(torch.tensor(1.0), weight=3)
    mean.update(torch.tensor(3.0), weight=1)
    assert mean.compute() == pytest.approx(1.5)  # (3 * 1 + 1 * 3) / 4: rows, not batches, weigh
    mean.update(torch.tensor(float("nan")), weight=2)
    assert torch.isnan(mean.compute())  # a NaN evaluation loss is reported, not dropped
