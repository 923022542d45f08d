"""Knowledge distillation (model.teacher): Hinton's loss, a frozen teacher kept out of checkpoints, and the checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.distillation import assert_cache_holds_the_teachers_logits

from conftest import cli_args, cli_error, column, make_tiny_bert, read_metrics
from ftlit.cli import FtlitCLI
from ftlit.commands.export import export
from ftlit.core.distillation import LogitCache, Teacher, kd_loss
from ftlit.errors import ConfigError
from ftlit.tasks.text import SequenceClassifier, SequenceRegressor


def fit(tiny_bert: str, data: dict, root: Path, *extra: str) -> FtlitCLI:
    return FtlitCLI(args=["fit", *cli_args(tiny_bert, data, root, "--trainer.max_epochs=1", *extra)])


@pytest.fixture(scope="module")
def teacher(tiny_bert, tmp_path_factory) -> dict[str, str]:
    """A classifier fine-tuned on the toy data (its checkpoint and its export), and that data."""
    from conftest import toy_rows, write_jsonl

    folder = tmp_path_factory.mktemp("teacher")
    data = {
        "train_file": str(write_jsonl(folder / "train.jsonl", toy_rows(96, 0))),
        "validation_file": str(write_jsonl(folder / "validation.jsonl", toy_rows(40, 1))),
    }
    fit(tiny_bert, data, folder / "run", "--trainer.max_epochs=2", "--model.learning_rate=1e-2")
    checkpoint = str(folder / "run" / "checkpoints" / "last.ckpt")
    return {"checkpoint": checkpoint, "export": str(export(checkpoint, str(folder / "export"))), "data": data}


def test_kd_loss_is_hintons_kl_with_its_gradient():
    torch.manual_seed(0)
    student, teacher, t = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3), 2.0
    p, q = F.softmax(teacher / t, -1), F.softmax(student / t, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean() * t * t
    loss = kd_loss(student, teacher, t, "softmax")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Hinton et al.: the gradient with respect to a student logit is T * (q - p) (per row, here over 5 rows).
    loss.backward()
    assert torch.allclose(student.grad, t * (q - p).detach() / 5, atol=1e-6)
    assert kd_loss(teacher, teacher, t, "softmax").item() == pytest.approx(0.0, abs=1e-7)
    # Multi-label: each label's sigmoid a two-way distribution.
    ps, qs = torch.sigmoid(teacher / t), torch.sigmoid(student.detach() / t)
    bernoulli = ps * (ps / qs).log() + (1 - ps) * ((1 - ps) / (1 - qs)).log()
    assert kd_loss(student, teacher, t, "sigmoid").item() == pytest.approx((bernoulli.mean() * t * t).item(), rel=1e-5)
    assert kd_loss(teacher, teacher, t, "sigmoid").item() == pytest.approx(0.0, abs=1e-7)


def test_alpha_one_trains_exactly_as_without_a_teacher(tiny_bert, teacher, tmp_path):
    plain = fit(tiny_bert, teacher["data"], tmp_path / "plain").model.state_dict()
    taught = fit(tiny_bert, teacher["data"], tmp_path / "alpha1", f"--model.teacher={teacher['checkpoint']}",
                 "--model.distill_alpha=1.0")  # fmt: skip
    assert all(torch.equal(plain[k], v) for k, v in taught.model.state_dict().items())
    # ... and a lower alpha changes what is learnt.
    half = fit(
        tiny_bert, teacher["data"], tmp_path / "alpha0.5", f"--model.teacher={teacher['export']}"
    ).model.state_dict()
    assert not torch.equal(plain["model.classifier.weight"], half["model.classifier.weight"])


def test_cached_teacher_logits_equal_fresh_ones(tiny_bert, teacher, tmp_path, monkeypatch):
    """model.distill_cache: the first run writes the teacher's logits of every training row; a second one never runs
    the teacher and learns, bit for bit, what the first learnt, and what a run that computes every logit afresh
    learns up to float32 rounding; a damaged cache file is recomputed."""
    forwards = []
    fresh_forward = Teacher.forward
    monkeypatch.setattr(Teacher, "forward", lambda self, inputs: forwards.append(1) or fresh_forward(self, inputs))
    cache = tmp_path / "cache"
    common = (f"--model.teacher={teacher['export']}", f"--data.cache_dir={cache}", "--trainer.max_epochs=2")
    fresh = fit(tiny_bert, teacher["data"], tmp_path / "fresh", *common, "--model.distill_cache=false")
    assert len(forwards) == 24 and not (cache / "teacher-logits").exists()  # 12 steps an epoch, each computed
    forwards.clear()
    cold = fit(tiny_bert, teacher["data"], tmp_path / "cold", *common)
    assert len(forwards) == 12  # the first epoch; the second reads the cache
    rows = {json.loads(line)["text"] for line in Path(teacher["data"]["train_file"]).read_text().splitlines()}
    # Every distinct training row, with the logits the teacher gives it alone.
    assert assert_cache_holds_the_teachers_logits(cold, cache / "teacher-logits") == len(rows)
    [saved] = (cache / "teacher-logits").glob("*-rank0.pt")
    forwards.clear()
    warm = fit(tiny_bert, teacher["data"], tmp_path / "warm", *common)
    assert forwards == []
    # A cached row keeps its first logits (a row seen twice too): the warm run reads the very values the cold one
    # used, in both epochs, and learns the same weights bit for bit on any CPU.
    assert all(torch.equal(cold.model.state_dict()[k], v) for k, v in warm.model.state_dict().items())
    # The fresh run computes each logit again in its batch of the moment, padded to another length, which float32
    # rounds otherwise on some CPUs (a few units in the last place). Such rounding (1e-6 relative noise on every
    # teacher logit) moves these weights by up to 8e-7; cached logits of another row of the batch move them by 1.6e-4.
    for k, v in cold.model.state_dict().items():
        torch.testing.assert_close(v, fresh.model.state_dict()[k], rtol=0, atol=1e-5, msg=k)
    saved.write_bytes(b"not a cache")
    with pytest.warns(UserWarning, match="ignoring the teacher's logit cache"):
        fit(tiny_bert, teacher["data"], tmp_path / "damaged", *common)
    assert len(forwards) == 12 and len(torch.load(saved, weights_only=True)["keys"]) == len(rows)


def test_a_cached_row_keeps_its_first_logits(tiny_bert, teacher, tmp_path):
    """A batch padded to another length can round a row's logits otherwise (here each forward is shifted by its
    count, to show it on any CPU): once a row is cached, every later batch, and run, gets its first logits."""
    from ftlit import backbone

    tokenizer = backbone.load_tokenizer(tiny_bert)
    taught = Teacher.load(teacher["export"], ["neg", "pos"], tokenizer, 1, ["input_ids", "attention_mask"])
    taught.cache = LogitCache(tmp_path, taught.fingerprint(), 0)
    forward, calls = taught.forward, []

    def rounded_otherwise(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        calls.append(1)
        return forward(inputs) + 1e-3 * len(calls)

    taught.forward = rounded_otherwise  # type: ignore[method-assign]

    def batch(*texts: str) -> dict[str, torch.Tensor]:
        encoded = tokenizer(list(texts), return_tensors="pt", padding=True)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    first = taught.logits(batch("good movie", "awful plot"))
    again = taught.logits(batch("the acting was very boring", "good movie"))  # a miss: the teacher runs
    assert len(calls) == 2 and torch.equal(again[1], first[0])  # not the second forward's logits of "good movie"
    assert torch.equal(taught.logits(batch("awful plot", "good movie")), first.flip(0)) and len(calls) == 2
    taught.cache.save()
    read = LogitCache(tmp_path, taught.fingerprint(), 1).rows[LogitCache.keys(batch("good movie"))[0]]
    assert torch.equal(read, first[0])


def test_the_teacher_is_frozen_gets_no_gradient_and_stays_out_of_checkpoints(tiny_bert, teacher, tmp_path):
    cli = fit(tiny_bert, teacher["data"], tmp_path, f"--model.teacher={teacher['export']}", "--model.distill_alpha=0.3",
              "--model.distill_temperature=4")  # fmt: skip
    model = cli.model.teacher.model
    assert not model.training and all(not p.requires_grad and p.grad is None for p in model.parameters())
    from safetensors.torch import load_file

    exported = load_file(Path(teacher["export"]) / "model.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in model.state_dict().items() if k in exported)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert not [k for k in checkpoint["state_dict"] if "teacher" in k]
    assert len(checkpoint["state_dict"]) == len(SequenceClassifier(backbone=tiny_bert, label_names=["neg", "pos"])
                                                .state_dict())  # fmt: skip
    assert len(column(read_metrics(tmp_path), "train/distill_loss")) == 12
    in_optimizer = {id(p) for g in cli.trainer.optimizers[0].param_groups for p in g["params"]}
    assert in_optimizer.isdisjoint(id(p) for p in model.parameters())


def test_a_teacher_with_the_labels_in_another_order_is_reordered(tiny_bert, teacher):
    from ftlit import backbone

    tokenizer = backbone.load_tokenizer(tiny_bert)
    straight = Teacher.load(teacher["export"], ["neg", "pos"], tokenizer, 1, ["input_ids", "attention_mask"])
    swapped = Teacher.load(teacher["export"], ["pos", "neg"], tokenizer, 1, ["input_ids", "attention_mask"])
    batch = tokenizer(["good movie", "awful plot"], return_tensors="pt", padding=True)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    assert straight.order is None and swapped.order == [1, 0]
    assert torch.equal(swapped.logits(inputs), straight.logits(inputs).flip(-1))


def edited_copy(source: str, folder: Path, edit) -> str:
    out = Path(shutil.copytree(source, folder))
    edit(out)
    return str(out)


def set_config(**values):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **values}))

    return edit


def other_vocabulary(folder: Path) -> None:
    """Two words swap their ids: the same words, another vocabulary."""
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    a, b = sorted(vocab)[-2:]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))


def test_bad_teachers_and_values_are_one_line_before_any_work(tiny_bert, teacher, tmp_path, capsys):
    three = edited_copy(teacher["export"], tmp_path / "three", set_config(id2label={"0": "a", "1": "b", "2": "c"},
                        label2id={"a": 0, "b": 1, "c": 2}))  # fmt: skip
    ner = edited_copy(teacher["export"], tmp_path / "ner", set_config(architectures=["BertForTokenClassification"]))
    vocab = edited_copy(teacher["export"], tmp_path / "vocab", other_vocabulary)
    cases = {
        three: "model.teacher: '{}' predicts ['a', 'b', 'c'], the data has ['neg', 'pos']",
        ner: "model.teacher: '{}' is a BertForTokenClassification, not a sequence classifier",
        vocab: "model.teacher: '{}' reads text with another tokenizer than model.backbone's",
        str(tmp_path / "nothing.ckpt"): "model.teacher: '{}' does not exist",
    }
    for source, message in cases.items():
        args = cli_args(tiny_bert, teacher["data"], tmp_path / "run", f"--model.teacher={source}")
        assert message.format(source) in cli_error(["fit", *args], capsys)
    for extra, message in {
        "--model.distill_alpha=1.5": "model.distill_alpha: must be in [0, 1], got 1.5",
        "--model.distill_temperature=0": "model.distill_temperature: must be above 0, got 0.0",
    }.items():
        args = cli_args(tiny_bert, teacher["data"], tmp_path / "run", f"--model.teacher={teacher['export']}", extra)
        assert message in cli_error(["fit", *args], capsys)
    with pytest.raises(ConfigError, match="model.teacher: SequenceRegressor cannot be distilled yet"):
        SequenceRegressor(backbone=tiny_bert, teacher=teacher["export"])


def test_a_student_larger_than_its_teacher_is_warned_about(teacher, tmp_path):
    deep = make_tiny_bert(tmp_path / "deep", layers=4)
    with pytest.warns(UserWarning, match="the teacher .* is smaller than the student"):
        SequenceClassifier(backbone=str(deep), label_names=["neg", "pos"], teacher=teacher["export"])
