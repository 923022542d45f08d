"""Magnitude pruning (ftlit.core.callbacks.MagnitudePruning): the schedule's zeros, kept, exported and resumed."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import cli_args, cli_error, column, read_metrics
from ftlit.cli import FtlitCLI
from ftlit.commands.export import export
from ftlit.core.callbacks.pruning import sparsity_of

PRUNE = "--trainer.callbacks+=ftlit.core.callbacks.MagnitudePruning"


def pruning(*options: str) -> list[str]:
    return [PRUNE, *(f"--trainer.callbacks.{o}" for o in options)]


def zeros(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v == 0 for k, v in state.items() if ".encoder.layer." in k and k.endswith(".weight") and v.dim() == 2}


def test_weights_pruned_on_schedule_stay_zero_and_export_as_zeros(tiny_bert, toy_data, tmp_path):
    # 12 steps an epoch, 2 epochs: 50% sparsity reached at step 12 (pruning every 2 steps), then 12 more steps.
    args = cli_args(tiny_bert, toy_data, tmp_path, *pruning("sparsity=0.5", "end_step=12", "every_n_steps=2"),
                    "--checkpoint.save_top_k=-1", "--checkpoint.every_n_epochs=1")  # fmt: skip
    cli = FtlitCLI(args=["fit", *args])
    assert sparsity_of(cli.model.model) == pytest.approx(0.5, abs=1e-3)
    rows = read_metrics(tmp_path)
    logged = {int(r["step"]) + 1: float(r["pruning/sparsity"]) for r in rows if r.get("pruning/sparsity")}
    # The cubic schedule: pruned at steps 2, 4, ..., 12 to 0.5 * (1 - (1 - t/12)^3), then held.
    expected = {t: 0.5 * (1 - (1 - min(t - t % 2, 12) / 12) ** 3) for t in logged}
    assert len(logged) > 20 and logged == pytest.approx(expected, abs=2e-3)
    assert column(rows, "pruning/sparsity_layer.0") and column(rows, "pruning/sparsity_layer.1")
    # The weights zeroed by step 12 are still the zeros at step 24: masked, not merely small.
    at_12 = torch.load(next(tmp_path.glob("checkpoints/epoch=0-*.ckpt")), weights_only=True)["state_dict"]
    at_24 = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not [k for k in at_24 if k.endswith(("_orig", "_mask"))]  # checkpoints hold plain weights
    first, last = zeros(at_12), zeros(at_24)
    assert first.keys() == last.keys() and all(torch.equal(first[k], last[k]) for k in first)
    # The export holds the zeros and gives the module's outputs in plain transformers.
    out = export(str(tmp_path / "checkpoints" / "last.ckpt"), str(tmp_path / "hf"))
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert sparsity_of(plain) == pytest.approx(0.5, abs=1e-3)
    batch = next(iter(cli.datamodule.val_dataloader()))
    cli.model.eval()
    with torch.no_grad():
        expected_logits = cli.model(batch)
        got = plain(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    torch.testing.assert_close(got, expected_logits, rtol=0, atol=1e-5)


def test_a_run_stopped_mid_schedule_resumes_to_the_same_weights(tiny_bert, toy_data, tmp_path):
    options = pruning("sparsity=0.6", "end_step=16", "every_n_steps=3", "scope=layer")
    args = cli_args(tiny_bert, toy_data, tmp_path / "whole", "--model.scheduler=constant", *options)
    FtlitCLI(args=["fit", *args])
    stopped = [a.replace("whole", "stopped") for a in args]
    FtlitCLI(args=["fit", *stopped, "--trainer.max_steps=7"])  # mid-epoch, mid-schedule
    FtlitCLI(args=["fit", *stopped, "--ckpt_path=last"])
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True) for r in ("whole", "stopped"))
    assert a["global_step"] == b["global_step"] == 24
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=0, msg=key)
    # scope=layer: every weight matrix of the encoder at the same sparsity.
    for mask in zeros(a["state_dict"]).values():
        assert mask.float().mean().item() == pytest.approx(0.6, abs=0.01)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("sparsity=1.0", "MagnitudePruning.sparsity: must be in [0, 1), got 1.0"),
        ("sparsity=-0.1", "MagnitudePruning.sparsity: must be in [0, 1), got -0.1"),
        (("sparsity=0.5", "start_step=-1"), "MagnitudePruning.start_step: must be >= 0, got -1"),
        (("sparsity=0.5", "every_n_steps=0"), "MagnitudePruning.every_n_steps: must be >= 1, got 0"),
        (("sparsity=0.5", "end_step=0"), "MagnitudePruning.end_step: must be after start_step (0), got 0"),
    ],
)
def test_bad_pruning_values_are_one_line(tiny_bert, toy_data, tmp_path, capsys, option, message):
    options = (option,) if isinstance(option, str) else option
    assert message in cli_error(["fit", *cli_args(tiny_bert, toy_data, tmp_path, *pruning(*options))], capsys)


def test_the_schedule_starts_at_start_step_and_ends_at_end_step():
    from ftlit.core.callbacks.pruning import MagnitudePruning

    callback = MagnitudePruning(0.8, start_step=10, end_step=20)
    assert [callback.target(t, 100) for t in (0, 10)] == [0.0, 0.0]
    assert callback.target(15, 100) == pytest.approx(0.8 * (1 - 0.5**3))
    assert [callback.target(t, 100) for t in (20, 90)] == [pytest.approx(0.8)] * 2
    # Without end_step the target is reached at 70% of the training's steps.
    assert MagnitudePruning(0.5).target(70, 100) == pytest.approx(0.5)
    assert MagnitudePruning(0.5).target(69, 100) < 0.5
