"""Bad values of Trainer, checkpoint, run and model keys: one line naming the key, before any work (no checkpoint,
no tokenization cache), where Lightning would give a traceback late or accept them silently."""

from __future__ import annotations

import logging
import warnings
from importlib.util import find_spec

import pytest
import torch
from helpers.runs import run_fit
from lightning.pytorch.callbacks import Callback

from conftest import cli_args, cli_error
from ftlit import backbone, checks
from ftlit.cli import ConfigOnly, FtlitCLI


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
        (["--trainer.val_check_interval=1000"], "trainer.val_check_interval"),
        (["--trainer.val_check_interval=1.5"], "trainer.val_check_interval"),
        (["--trainer.gradient_clip_val=0"], "trainer.gradient_clip_val"),
        (["--trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
        (["--checkpoint.monitor=val/accuracy"], "checkpoint.monitor"),
        (["--checkpoint.monitor=val/acc", "--checkpoint.mode=sideways"], "checkpoint.mode"),
        (["--checkpoint.every_n_train_steps=-1"], "checkpoint.every_n_train_steps"),
        (["--checkpoint.save_top_k=-2"], "checkpoint.save_top_k"),
        (
            ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/f1_macro"],
            "trainer.callbacks (EarlyStopping).monitor",
        ),
        (
            [
                "--trainer.callbacks+=EarlyStopping",
                "--trainer.callbacks.monitor=val/acc",
                "--trainer.callbacks.mode=up",
            ],
            "trainer.callbacks[0].mode",
        ),
        (["--seed_everything=-1"], "seed_everything"),
        (["--seed_everything=8589934592"], "seed_everything"),
        (["--model.optimizer=LBFGS"], "model.optimizer"),
        (["--model.optimizer=SparseAdam"], "model.optimizer"),
        (["--model.head_lr=-1e-3"], "model.head_lr"),
        (["--model.class_weights=[1.0,-2.0]"], "model.class_weights"),
    ],
    ids=lambda v: v if isinstance(v, str) else "+".join(a.split("=", 1)[1] for a in v)[:40],
)
def test_bad_values_are_one_line_before_any_work(tiny_bert, toy_data, tmp_path, capsys, args, field):
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, *args)
    assert err.startswith(f"ftlit: error: {field}: "), err


def test_a_monitor_error_lists_what_the_model_logs(tiny_bert, toy_data, tmp_path, capsys):
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, "--checkpoint.monitor=val/accuracy")
    assert err.endswith(
        "SequenceClassifier never logs 'val/accuracy': use one of train/loss, val/acc, val/ap, val/auroc, val/f1, "
        "val/f1_micro, val/loss, val/mcc, val/precision, val/precision_micro, val/recall, val/recall_micro"
    )


@pytest.mark.parametrize("where", ["root", "dirpath", "under"])
def test_a_run_folder_that_is_a_file(tiny_bert, toy_data, tmp_path, capsys, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    root = tmp_path / "run"
    extra = {
        "root": [f"--trainer.default_root_dir={blocker}"],
        "dirpath": [f"--checkpoint.dirpath={blocker}"],
        "under": [f"--trainer.default_root_dir={blocker / 'run'}"],
    }[where]
    err = cli_error(["fit", *cli_args(tiny_bert, toy_data, root, *extra)], capsys)
    field = "checkpoint.dirpath" if where == "dirpath" else "trainer.default_root_dir"
    assert err.startswith(f"ftlit: error: {field}: '{blocker}' is a file"), err
    assert blocker.read_text() == "not a folder"


def test_predictions_under_a_file_are_refused_before_predicting(tiny_bert, toy_data, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    predict = {**toy_data, "predict_file": toy_data["test_file"]}
    args = cli_args(tiny_bert, predict, tmp_path / "run", f"--predictions.output={blocker / 'p.jsonl'}")
    err = cli_error(["predict", *args], capsys)
    assert err.startswith(f"ftlit: error: predictions.output: '{blocker}' is a file"), err


def test_warmup_longer_than_the_run_is_an_error(tiny_bert, toy_data, tmp_path, capsys):
    err = cli_error(
        ["fit", *cli_args(tiny_bert, toy_data, tmp_path, "--trainer.max_steps=5", "--model.warmup_steps=50")], capsys
    )
    assert err.startswith("ftlit: error: model.warmup_steps: 50 is more than the run's 5 optimizer steps"), err
    assert not (tmp_path / "checkpoints").exists()


def test_gradients_are_clipped_at_one_by_default(tiny_bert, toy_data, tmp_path):
    args = cli_args(tiny_bert, toy_data, tmp_path)
    assert FtlitCLI(args=args, run=False).trainer.gradient_clip_val == 1.0
    assert FtlitCLI(args=[*args, "--trainer.gradient_clip_val=0.25"], run=False).trainer.gradient_clip_val == 0.25
    assert FtlitCLI(args=[*args, "--trainer.gradient_clip_val=null"], run=False).trainer.gradient_clip_val is None


class GradNorms(Callback):
    """The global norm of the gradients each optimizer step used (after clipping)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        def record(optimizer, args, kwargs) -> None:
            grads = [p.grad.float().norm() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            self.norms.append(float(torch.stack(grads).norm()))

        trainer.optimizers[0].register_step_post_hook(record)  # the closure runs inside step()


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_clipping_reaches_the_optimizer(tiny_bert, toy_data, tmp_path, precision):
    # bf16-mixed with a fused optimizer: Lightning refuses to clip at all, ftlit clips (there is no loss scaler).
    args = cli_args(tiny_bert, toy_data, tmp_path, f"--trainer.precision={precision}", "--trainer.max_steps=3")
    runs = {}
    for clip in ("null", "1e-4"):
        cli = FtlitCLI(
            args=[*args, f"--trainer.gradient_clip_val={clip}", f"--trainer.default_root_dir={tmp_path / clip}"],
            run=False,
        )
        norms = GradNorms()
        cli.trainer.callbacks.append(norms)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        assert cli.trainer.optimizers[0].defaults["fused"]
        runs[clip] = norms.norms
    assert len(runs["1e-4"]) == 3 and max(runs["1e-4"]) <= 1.01e-4
    assert min(runs["null"]) > 1e-3  # unclipped they are larger: the clip did the work


def test_a_backbone_with_another_head_gets_a_new_one(tiny_bert, toy_data, tmp_path, caplog):
    # A 3-label fine-tuned classifier as the backbone of a 2-label task: the encoder carries over, the head is new.
    import shutil

    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path / "three-labels"
    BertForSequenceClassification.from_pretrained(tiny_bert, num_labels=3).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    with caplog.at_level(logging.INFO):
        cli = FtlitCLI(args=cli_args(str(folder), toy_data, tmp_path / "run"), run=False)
    assert cli.model.model.classifier.out_features == 2
    assert "classifier.bias, classifier.weight have another shape than this task needs" in caplog.text
    shutil.rmtree(folder)


@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_accelerator_names_the_key_without_a_gpu(tiny_bert, toy_data, tmp_path, capsys, accelerator):
    if torch.cuda.is_available():  # a GPU machine: the same command is accepted and runs on the GPU
        cli = FtlitCLI(args=cli_args(tiny_bert, toy_data, tmp_path, f"--trainer.accelerator={accelerator}"), run=False)
        assert cli.trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
        return
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, f"--trainer.accelerator={accelerator}")
    assert err.startswith("ftlit: error: trainer.accelerator: "), err
    assert "use cpu or auto" in err or "use auto or cpu" in err, err


def _needs_missing(module: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(find_spec(module) is not None, reason=f"{module} is installed here")


def bad(key: str, value: str, fragment: str, *extra: str, marks=()) -> pytest.ParameterSet:
    return pytest.param(key, value, fragment, extra, marks=marks, id=f"{key}={value}")


# Bad values of the Trainer's own keys, each refused by `checks.check_trainer` before the model is loaded. Before it:
# IE = internal error (a traceback file), OK = taken silently, LATE = Lightning's own line, after the model loaded.
TRAINER_BAD_VALUES = [
    bad("check_val_every_n_epoch", "0", "must be >= 1, got 0"),  # IE ZeroDivisionError, after an epoch
    bad("check_val_every_n_epoch", "-1", "must be >= 1, got -1"),  # OK
    bad("val_check_interval", '{"hourz": 1}', "unknown unit hourz"),  # IE TypeError
    bad("val_check_interval", '{"hours": -1}', "a duration cannot be negative"),  # OK
    bad("val_check_interval", "00:01", "expected a duration 'DD:HH:MM:SS'"),  # LATE
    bad("val_check_interval", "0.5", "needs trainer.check_val_every_n_epoch", "--trainer.check_val_every_n_epoch=null"),
    bad("log_every_n_steps", "-1", "must be >= 0, got -1"),  # OK
    bad("limit_train_batches", "-1", "a fraction in [0.0, 1.0] or a whole number of batches, got -1"),  # LATE
    bad("limit_train_batches", "1.5", "a whole number of batches, got 1.5"),  # LATE
    bad("limit_val_batches", "-0.5", "a whole number of batches, got -0.5"),  # LATE
    bad("limit_test_batches", "-1", "a whole number of batches, got -1"),  # LATE
    bad("limit_predict_batches", "2.5", "a whole number of batches, got 2.5"),  # LATE
    bad("overfit_batches", "-1", "a whole number of batches, got -1"),  # LATE
    bad("max_time", "abc", "expected a duration 'DD:HH:MM:SS'"),  # LATE, naming only "trainer"
    bad("max_time", '{"hourz": 1}', "unknown unit hourz"),  # IE TypeError
    bad("max_time", '{"hours": -1}', "a duration cannot be negative"),  # OK: stopped at once
    bad("precision", "transformer-engine", "needs transformer_engine", marks=_needs_missing("transformer_engine")),
    bad("devices", "0", "'0' is not valid with accelerator cpu"),  # LATE
    bad("devices", "-1", "'-1' is not valid with accelerator cpu"),  # IE TypeError (-1 is all GPUs, not CPUs)
    bad("devices", "-2", "'-2' is not valid with accelerator cpu"),  # IE TypeError
    bad("devices", "abc", "'abc' is not valid with accelerator cpu"),  # IE TypeError
    bad("devices", "[]", "[] is not valid with accelerator cpu"),  # LATE
    bad("num_nodes", "0", "must be >= 1, got 0"),  # LATE
    bad("max_epochs", "-2", "must be >= -1, got -2"),  # LATE
    bad("max_epochs", "-1", "the run has no length"),  # IE OverflowError: the schedule over infinite steps
    bad("max_epochs", "null", "the run has no length", "--trainer.max_time=00:00:10:00"),  # IE OverflowError
    bad("min_epochs", "-1", "must be >= 0, got -1"),  # OK
    bad("min_epochs", "3", "3 is more than trainer.max_epochs (2)"),  # OK: max_epochs wins
    bad("max_steps", "-2", "must be >= -1, got -2"),  # LATE
    bad("min_steps", "-1", "must be >= 0, got -1"),  # OK
    bad("min_steps", "5", "5 is more than trainer.max_steps (2)", "--trainer.max_steps=2"),  # OK
    bad("num_sanity_val_steps", "-2", "must be >= -1, got -2"),  # OK
    bad("gradient_clip_algorithm", "foo", "must be norm or value"),  # LATE
    bad("accelerator", "foo", "unknown accelerator 'foo'"),  # LATE
    bad("accelerator", "CPU", "unknown accelerator 'CPU'"),  # LATE (Lightning does not lowercase it)
    bad("accelerator", "tpu", "needs torch_xla", marks=_needs_missing("torch_xla")),  # IE ModuleNotFoundError
    bad("strategy", "foo", "unknown strategy 'foo'"),  # LATE
    bad("strategy", "xla", "needs torch_xla", marks=_needs_missing("torch_xla")),  # IE ModuleNotFoundError
    bad("strategy", "deepspeed", "needs deepspeed", marks=_needs_missing("deepspeed")),  # LATE
    bad("reload_dataloaders_every_n_epochs", "-1", "must be >= 0, got -1"),  # LATE
    bad("fast_dev_run", "-1", "must be >= 0, got -1"),  # LATE
    bad("profiler", "foo", "unknown profiler 'foo'"),  # LATE
    bad("enable_checkpointing", "false", "ftlit always checkpoints"),  # LATE
    bad("barebones", "true", "barebones mode forbids"),  # LATE, with the loggers' reprs in the line
]


@pytest.mark.parametrize(("key", "value", "fragment", "extra"), TRAINER_BAD_VALUES)
def test_a_bad_trainer_value_is_one_line_before_the_model_loads(
    tiny_bert, toy_data, tmp_path, capsys, monkeypatch, key, value, fragment, extra
):
    loaded = []
    for name in ("load_config", "load_tokenizer"):
        real = getattr(backbone, name)
        monkeypatch.setattr(backbone, name, lambda *a, _real=real, **k: loaded.append(a) or _real(*a, **k))
    err = run_fit(tiny_bert, toy_data, tmp_path, capsys, f"--trainer.{key}={value}", *extra)
    assert err.startswith(f"ftlit: error: trainer.{key}: ") and fragment in err, err
    assert not loaded, "the backbone was loaded despite bad input"


@pytest.mark.parametrize(
    "args",
    [
        ["--trainer.max_epochs=-1", "--trainer.max_steps=10"],
        ["--trainer.max_steps=-1"],
        ["--trainer.max_steps=0"],
        ["--trainer.limit_train_batches=0", "--trainer.limit_val_batches=1.0", "--trainer.limit_test_batches=2.0"],
        ["--trainer.limit_predict_batches=5", "--trainer.overfit_batches=0.5"],
        ["--trainer.val_check_interval=00:00:30:00"],
        ['--trainer.val_check_interval={"seconds": 1}'],
        ["--trainer.val_check_interval=3", "--trainer.check_val_every_n_epoch=null"],
        ["--trainer.max_time=00:12:00:00"],
        ['--trainer.max_time={"minutes": 1}'],
        ["--trainer.devices=auto"],
        ["--trainer.devices=2", "--trainer.strategy=ddp"],
        ["--trainer.accelerator=auto", "--trainer.devices=1"],
        ["--trainer.precision=bf16-mixed"],
        ["--trainer.precision=16-mixed"],
        ["--trainer.precision=64"],
        ["--trainer.precision=bf16"],
        ["--trainer.log_every_n_steps=0", "--trainer.num_sanity_val_steps=-1"],
        ["--trainer.fast_dev_run=true"],
        ["--trainer.fast_dev_run=2"],
        ["--trainer.gradient_clip_algorithm=VALUE", "--trainer.profiler=Simple"],
        ["--trainer.min_epochs=2", "--trainer.min_steps=3", "--trainer.max_steps=3"],
        ["--trainer.deterministic=warn", "--trainer.reload_dataloaders_every_n_epochs=1"],
    ],
    ids=lambda v: "+".join(a.removeprefix("--trainer.") for a in v),
)
def test_valid_trainer_values_pass_the_checks(tiny_bert, toy_data, tmp_path, args):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = ConfigOnly(args=["fit", *cli_args(tiny_bert, toy_data, tmp_path, *args)])
    for arg in args:
        key = arg.removeprefix("--").split("=", 1)[0]
        assert cli.config.fit[key] is not None or arg.endswith("=null")


def test_a_duration_val_check_interval_fits_any_epoch():
    # Lightning sets no `val_check_interval` attribute when it is a duration: the epoch-size check skips it.
    class Trainer:
        check_val_every_n_epoch = 1

    checks.check_val_interval(Trainer(), batches=2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- model\n- data\n", "holds a list, not keys"),
        ("", "is empty"),
        ("trainer:\n  max_epochs: 2\n  devices: [1, 2\nmodel: {}\n", "line 4, column 6: YAML syntax error"),
    ],
    ids=["list", "empty", "syntax"],
)
def test_a_config_file_that_is_not_a_mapping(tmp_path, capsys, text, expected):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    err = cli_error(["fit", f"--config={config}"], capsys)
    assert err.startswith(f"ftlit: error: config: '{config}'") and expected in err, err


@pytest.mark.parametrize("command", ["export", "plot"])
def test_an_output_folder_under_a_file(tmp_path, capsys, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    given = ["--ckpt_path", str(tmp_path / "x.ckpt")] if command == "export" else ["--run", str(tmp_path)]
    err = cli_error([command, *given, "--out", str(blocker / "out")], capsys)
    assert err.startswith(f"ftlit: error: out: '{blocker}' is a file"), err


@pytest.mark.parametrize(("args", "expected"), [([], "out: required: pass --out"), (["--out", ""], "out: is empty")])
def test_export_out_missing_or_empty(tmp_path, capsys, args, expected):
    err = cli_error(["export", "--ckpt_path", str(tmp_path / "x.ckpt"), *args], capsys)
    assert err == f"ftlit: error: {expected}" or err.startswith(f"ftlit: error: {expected}"), err
