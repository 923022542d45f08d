"""Domain-adversarial training (DANN): gradient reversal, its schedule, the domain data, and weight 0."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import cli_args, cli_error, read_metrics, tokenized, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI
from ftlit.core.adversarial import DomainHead, reversal_scale
from ftlit.tasks.text import ClassificationDataModule
from ftlit.tasks.text.data import DOMAIN

DOMAINS = ["--data.domain_column=source", "--data.target_domain=movies"]


def domain_rows(n: int, seed: int) -> list[dict]:
    """Toy reviews from two domains; the target domain's labels are empty, as unlabelled data has none."""
    rows = []
    for i, row in enumerate(toy_rows(n, seed)):
        target = i % 3 == 0
        rows.append({**row, "source": "movies" if target else "food", "label": None if target else row["label"]})
    return rows


@pytest.fixture
def domain_data(tmp_path) -> dict[str, str]:
    return {
        "train_file": str(write_jsonl(tmp_path / "train.jsonl", domain_rows(96, 0))),
        "validation_file": str(write_jsonl(tmp_path / "validation.jsonl", toy_rows(24, 1))),
    }


def test_the_domain_gradient_reaches_the_encoder_reversed_and_scaled():
    head = DomainHead(8)
    features = torch.randn(5, 8, requires_grad=True)
    domains = torch.tensor([0, 1, 1, 0, 1])
    plain = torch.autograd.grad(torch.nn.functional.cross_entropy(head.layers(features), domains), features)[0]
    for scale in (1.0, 0.25):
        reversed_ = torch.autograd.grad(torch.nn.functional.cross_entropy(head(features, scale), domains), features)[0]
        torch.testing.assert_close(reversed_, -scale * plain)
    # The domain classifier itself still descends its own loss: its gradient is not reversed.
    head.zero_grad()
    torch.nn.functional.cross_entropy(head(features, 1.0), domains).backward()
    own = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    torch.nn.functional.cross_entropy(head.layers(features), domains).backward()
    for a, b in zip(own, (p.grad for p in head.parameters()), strict=True):
        torch.testing.assert_close(a, b)


def test_the_reversal_ramps_up_as_in_the_paper():
    ramp = [reversal_scale(1.0, "dann", p / 10) for p in range(11)]
    assert ramp[0] == 0.0 and ramp == sorted(ramp) and ramp[-1] == pytest.approx(1.0, abs=1e-4)
    assert ramp[1] == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    assert reversal_scale(0.5, "dann", 1.0) == pytest.approx(0.5, abs=1e-4)
    assert reversal_scale(0.3, "constant", 0.0) == 0.3


def test_target_domain_rows_train_without_labels(tiny_bert, tmp_path):
    rows = domain_rows(30, 0)
    dm = ClassificationDataModule(
        tokenizer=tiny_bert, train_file=str(write_jsonl(tmp_path / "t.jsonl", rows)), val_fraction=0.2,
        domain_column="source", target_domain="movies",
    )  # fmt: skip
    dm.prepare_data()
    dm.setup()
    train, validation = dm.datasets["train"], dm.datasets["validation"]
    assert set(train[DOMAIN]) == {0, 1}
    assert all((label == -100) == (domain == 1) for label, domain in zip(train["labels"], train[DOMAIN], strict=True))
    assert dm.raw["validation"]["source"] == ["food"] * len(validation)  # model selection sees no target labels
    batch = dm.collate([train[i] for i in range(6)])
    assert batch["meta"][DOMAIN].tolist() == train[DOMAIN][:6]


def test_domain_weight_0_trains_exactly_what_plain_fine_tuning_trains(tiny_bert, domain_data, tmp_path):
    # No clipping: the domain classifier's gradient would join the clipped norm.
    common = [*DOMAINS, "--trainer.max_epochs=1", "--trainer.gradient_clip_val=null"]
    plain = FtlitCLI(args=["fit", *cli_args(tiny_bert, domain_data, tmp_path / "plain", *common)])
    zero = FtlitCLI(
        args=["fit", *cli_args(tiny_bert, domain_data, tmp_path / "zero", *common, "--model.domain_weight=0")]
    )
    a, b = plain.model.model.state_dict(), zero.model.model.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    assert any(r.get("train/domain_loss") for r in read_metrics(tmp_path / "zero"))  # the head was on
    # And on: the encoder moves elsewhere, and the reversal's strength ramps up over the run.
    on = FtlitCLI(args=["fit", *cli_args(tiny_bert, domain_data, tmp_path / "on", *common, "--model.domain_weight=1")])
    assert not torch.equal(on.model.model.bert.encoder.layer[0].output.dense.weight,
                           a["bert.encoder.layer.0.output.dense.weight"])  # fmt: skip
    scales = [float(r["train/domain_scale"]) for r in read_metrics(tmp_path / "on") if r.get("train/domain_scale")]
    assert scales[0] == 0.0 and scales == sorted(scales) and scales[-1] > 0.5
    accuracy = [float(r["train/domain_acc"]) for r in read_metrics(tmp_path / "on") if r.get("train/domain_acc")]
    assert all(0 <= a <= 1 for a in accuracy)


def test_bad_domain_settings_are_one_line_before_any_work(tiny_bert, domain_data, tmp_path, capsys):
    base = cli_args(tiny_bert, domain_data, tmp_path / "run")
    line = cli_error(["fit", *base, "--data.domain_column=source"], capsys)
    assert (
        line == "ftlit: error: data.target_domain: domain-adversarial data needs both domain_column and target_domain"
    )
    line = cli_error(["fit", *base, "--data.domain_column=source", "--data.target_domain=books"], capsys)
    assert line == (
        "ftlit: error: data.target_domain: no train row has source 'books': the train split's domains are food, movies"
    )
    line = cli_error(["fit", *base, "--data.domain_column=origin", "--data.target_domain=books"], capsys)
    assert line.startswith("ftlit: error: data.domain_column: ") and "'origin'" in line
    line = cli_error(["fit", *base, *DOMAINS, "--model.domain_weight=-1"], capsys)
    assert line.startswith("ftlit: error: model.domain_weight: must be >= 0")
    line = cli_error(["fit", *base, *DOMAINS, "--model.domain_weight=1", "--model.domain_schedule=cosine"], capsys)
    assert line.startswith("ftlit: error: ") and "domain_schedule" in line


def test_domain_weight_without_domains_is_one_line_before_any_work(tiny_bert, toy_data, tmp_path, capsys):
    line = cli_error(["fit", *cli_args(tiny_bert, toy_data, tmp_path / "run", "--model.domain_weight=1")], capsys)
    assert line == (
        "ftlit: error: model.domain_weight: domain-adversarial training needs data.domain_column and data.target_domain"
    )
    assert not tokenized(tmp_path / "cache")  # nothing tokenized
