"""Distillation of a token classifier (model.teacher on NER): a KL per labelled token, the teacher's token logits
cached per row and padded again as each batch needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import ner
from helpers.distillation import assert_cache_holds_the_teachers_logits

from conftest import cli_error, column, read_metrics
from ftlit.cli import FtlitCLI
from ftlit.core.distillation import Teacher, kd_loss


def fit(tiny_bert: str, data: dict, root: Path, *extra: str) -> FtlitCLI:
    return FtlitCLI(args=["fit", *ner.fit_args(tiny_bert, root, data, "--trainer.max_epochs=2", *extra)])


@pytest.fixture(scope="module")
def ner_teacher(tiny_bert, tmp_path_factory) -> dict:
    """A token classifier fine-tuned on the toy NER data (its checkpoint), and that data."""
    folder = tmp_path_factory.mktemp("ner-teacher")
    data = {"train_file": str(ner.write_conll(folder / "train.conll", ner.toy_ner_rows(64, 0)))}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTLIT_CACHE", str(folder / "cache"))
        fit(tiny_bert, data, folder / "run", "--model.learning_rate=1e-2")
    return {"checkpoint": str(folder / "run" / "checkpoints" / "last.ckpt"), "data": data}


def test_token_kd_loss_is_the_kl_of_the_labelled_tokens_only():
    torch.manual_seed(0)
    student, teacher, t = torch.randn(2, 5, 3, requires_grad=True), torch.randn(2, 5, 3), 2.0
    mask = torch.tensor([[False, True, True, False, False], [False, True, False, True, False]])
    p, q = F.softmax(teacher[mask] / t, -1), F.softmax(student[mask] / t, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean() * t * t  # a mean over the 4 labelled tokens
    assert kd_loss(student, teacher, t, "token-softmax", mask).item() == pytest.approx(expected.item(), rel=1e-5)
    # What the other positions (padding, later sub-tokens, [CLS]) hold does not matter, nor gets a gradient.
    noisy = teacher.clone()
    noisy[~mask] = 100.0
    loss = kd_loss(student, noisy, t, "token-softmax", mask)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert (student.grad[~mask] == 0).all() and (student.grad[mask] != 0).any()
    assert kd_loss(student, teacher, t, "token-softmax", torch.zeros_like(mask)).item() == 0.0


def test_an_ner_student_learns_from_its_teacher_and_its_cached_logits(tiny_bert, ner_teacher, tmp_path, monkeypatch):
    forwards = []
    fresh_forward = Teacher.forward
    monkeypatch.setattr(Teacher, "forward", lambda self, inputs: forwards.append(1) or fresh_forward(self, inputs))
    data, teacher = ner_teacher["data"], f"--model.teacher={ner_teacher['checkpoint']}"
    plain = fit(tiny_bert, data, tmp_path / "plain").model.state_dict()
    alpha1 = fit(tiny_bert, data, tmp_path / "alpha1", teacher, "--model.distill_alpha=1.0").model.state_dict()
    assert all(torch.equal(plain[k], v) for k, v in alpha1.items())  # alpha 1: the labels' loss alone
    cache = f"--data.cache_dir={tmp_path / 'logits'}"
    forwards.clear()
    fresh = fit(tiny_bert, data, tmp_path / "fresh", teacher, cache, "--model.distill_cache=false")
    assert len(forwards) == 8  # 4 steps an epoch, 2 epochs
    assert len(column(read_metrics(tmp_path / "fresh"), "train/distill_loss")) == 8
    model = fresh.model.teacher.model
    assert not model.training and all(not p.requires_grad and p.grad is None for p in model.parameters())
    forwards.clear()
    cold = fit(tiny_bert, data, tmp_path / "cold", teacher, cache)
    assert len(forwards) == 4  # the second epoch's batches (other rows together, other padding) read the cache
    # Each row's token logits, cut from its padded batch, are those the teacher gives the row alone.
    assert_cache_holds_the_teachers_logits(cold, tmp_path / "logits" / "teacher-logits")
    warm = fit(tiny_bert, data, tmp_path / "warm", teacher, cache)
    assert len(forwards) == 4
    # A cached row keeps its first logits: the warm run reads the very values the cold one used, bit for bit.
    assert all(torch.equal(cold.model.state_dict()[k], v) for k, v in warm.model.state_dict().items())
    # The fresh run computes each logit again in its batch of the moment, under other padding, which float32 rounds
    # otherwise on some CPUs. Such rounding (1e-6 relative noise on every teacher logit) moves these weights by up to
    # 7e-7; cached token logits placed one token off move them by 1.5e-2.
    taught = fresh.model.state_dict()
    for k, v in cold.model.state_dict().items():
        torch.testing.assert_close(v, taught[k], rtol=0, atol=1e-5, msg=k)
    # The teacher changed what was learnt.
    assert not torch.equal(plain["model.classifier.weight"], taught["model.classifier.weight"])


def test_an_ner_student_needs_a_token_classifier_teacher(tiny_bert, ner_teacher, tmp_path, capsys):
    args = ner.fit_args(tiny_bert, tmp_path, ner_teacher["data"], f"--model.teacher={tiny_bert}")
    err = cli_error(["fit", *args], capsys)
    assert err == (
        f"ftlit: error: model.teacher: '{tiny_bert}' is a BertModel, not a token classifier: distil from one of the "
        "same labels"
    )
