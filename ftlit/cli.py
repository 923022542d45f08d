"""The ``ftlit`` command: LightningCLI with ftlit's links, checkpointing and loggers wired in."""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from importlib.util import find_spec
from typing import Any, TypeVar

import lightning.pytorch as pl
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ftlit.callbacks import PredictionWriter
from ftlit.callbacks.predictions import check_output, output_path
from ftlit.data.base import TaskDataModule
from ftlit.errors import ConfigError, TrainingError
from ftlit.models.base import FineTuneModule, read_checkpoint

T = TypeVar("T")
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class FtlitCLI(LightningCLI):
    """LightningCLI whose model and data are ftlit task classes, picked in YAML by ``class_path``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("model_class", FineTuneModule)
        kwargs.setdefault("datamodule_class", TaskDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        # A resumed run writes config.yaml into the same folder again.
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 42)
        # The models own their optimizer and schedule (warmup, decay, parameter groups).
        kwargs.setdefault("auto_configure_optimizers", False)
        # The data modules shard themselves (stateful loaders, no padded evaluation rows).
        kwargs.setdefault("trainer_defaults", {"use_distributed_sampler": False})
        # Parser errors are raised, not printed with the whole usage: `report_errors` prints them as one line.
        raising = {"exit_on_error": False}
        kwargs.setdefault("parser_kwargs", {**raising, **{name: raising for name in SUBCOMMANDS}})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Always present, under its own key, so `--ckpt_path last` finds the last checkpoint.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        # The tokenizer is the backbone's, and the labels come from the data: never typed twice.
        parser.link_arguments("model.init_args.backbone", "data.init_args.tokenizer")
        parser.link_arguments("model.init_args.trust_remote_code", "data.init_args.trust_remote_code")
        parser.link_arguments("data", "model.init_args.label_names", compute_fn=checked_labels, apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        # Lightning's version parses the checkpoint's hyperparameters over the config, so the checkpoint would
        # silently win over the YAML and the command line. ftlit keeps the config and checks that they match.
        subcommand = self.config.get("subcommand")
        if not subcommand or self.config[subcommand].get("ckpt_path") is None:
            return
        config = self.config[subcommand]
        if config.ckpt_path == "best" and subcommand != "fit":
            # A new process has no best_model_path in memory: read it from the run's last checkpoint.
            config.ckpt_path = best_checkpoint(checkpoint_dir(config))
        if config.ckpt_path in ("last", "best", "hpc", "registry"):
            return
        saved = read_checkpoint(config.ckpt_path).get("hyper_parameters", {}).get("_class_path")
        if saved and saved != config.model.class_path:
            raise ConfigError(
                "ckpt_path",
                f"'{config.ckpt_path}' holds a {saved}, but model.class_path is {config.model.class_path}: "
                "use the config the checkpoint was trained with",
            )

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError) as err:
            # The Trainer checks its arguments as it is built ("`max_epochs` must be a non-negative integer", "The
            # strategy `fsdp` requires a GPU accelerator"): name the first Trainer argument the message mentions.
            keys = inspect.signature(pl.Trainer.__init__).parameters
            words = (word.lower() for word in re.findall(r"[A-Z]?[a-z_]+", str(err)))  # DeepSpeedStrategy too
            key = next((word for word in words if word in keys and word != "self"), None)
            raise ConfigError(f"trainer.{key}" if key else "trainer", str(err)) from None

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_task_pair(config.model.class_path, config.data.class_path)
        root = config.trainer.default_root_dir or os.getcwd()
        if self.subcommand == "predict":
            # Known from the config alone: refuse before the data is tokenized or the checkpoint loaded.
            check_output(output_path(config.predictions.output, root), config.predictions.overwrite)
        config.checkpoint.dirpath = checkpoint_dir(config)
        if not config.trainer.plugins:
            config.trainer.plugins = [Namespace(class_path="ftlit.checkpoint_io.AtomicCheckpointIO")]
        if config.trainer.logger in (None, True):
            config.trainer.logger = default_loggers(root)


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def check_task_pair(model_path: str, data_path: str) -> None:
    """Refuse a model with another task's data module (e.g. NER data under a sequence classifier)."""
    wanted = _import(model_path).data_class
    if not issubclass(_import(data_path), _import(wanted)):
        raise ConfigError(
            "data.class_path",
            f"{model_path.rpartition('.')[2]} trains on {wanted}, not {data_path}: pick the matching pair",
        )


def checked_labels(data: TaskDataModule) -> list[str] | None:
    """The data's label names, after every split is checked (columns, labels, empty files): before any work."""
    data.validate()
    return getattr(data, "label_names", None)


def checkpoint_dir(config: Namespace) -> str:
    """The run's checkpoint folder: ``checkpoint.dirpath``, else ``<default_root_dir>/checkpoints``.

    Fixed on purpose: Lightning's default moves with each new logger version, and ``--ckpt_path last`` then
    silently starts over.
    """
    return config.checkpoint.dirpath or os.path.join(config.trainer.default_root_dir or os.getcwd(), "checkpoints")


def best_checkpoint(dirpath: str) -> str:
    """The best checkpoint recorded by ModelCheckpoint in ``<dirpath>/last.ckpt``."""
    last = os.path.join(dirpath, "last.ckpt")
    if not os.path.isfile(last):
        raise ConfigError("ckpt_path", f"'best' needs {last} from a finished fit: train first or give a file")
    states = read_checkpoint(last).get("callbacks", {})
    best = next((s.get("best_model_path") for k, s in states.items() if k.startswith("ModelCheckpoint")), None)
    if not best or not os.path.isfile(best):
        raise ConfigError("ckpt_path", f"no best checkpoint recorded in {last}: set checkpoint.monitor or give a file")
    return best


def default_loggers(root: str) -> list[Namespace]:
    """A CSV logger (``<root>/csv``, metrics.csv for plots), plus TensorBoard (``<root>/tensorboard``) if installed."""
    kinds = [("CSVLogger", "csv")] + ([("TensorBoardLogger", "tensorboard")] if find_spec("tensorboard") else [])
    return [
        Namespace(class_path=f"lightning.pytorch.loggers.{cls}", init_args=Namespace(save_dir=root, name=name))
        for cls, name in kinds
    ]


def _config_error(err: BaseException | None) -> ConfigError | None:
    """The ConfigError behind ``err``, also when jsonargparse wrapped it (errors inside argument links)."""
    while err is not None and not isinstance(err, ConfigError):
        err = err.__cause__
    return err


def parser_error(message: str) -> str:
    """jsonargparse's nested, many-line error as one line: ``<key>: <problem>``."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    unknown = re.search(r"Option '([^']+)' is not accepted", message)
    if unknown:
        # Name the class: an option of another task's class (NER keys under a classification data module) reads
        # as a wrong pairing, not only as a typo.
        owner = re.search(r"given class_path '([^']+)'", message)
        of = f" of {owner.group(1)}" if owner else ""
        return f"{'.'.join([*keys, unknown.group(1)])}: no such option{of}: check the spelling (--help lists them)"
    if keys:
        after = message.rsplit(f'Parser key "{keys[-1]}":', 1)[1]
        detail = next((line.strip() for line in after.splitlines() if line.strip()), "invalid value")
        return f"{'.'.join(keys)}: {detail}"
    return next((line.strip() for line in message.splitlines() if line.strip()), message)


def report_errors(run: Callable[[], T]) -> T:
    """Return ``run()``; bad input exits with one line naming the field (code 2), a failed run with its reason (1)."""
    try:
        return run()
    except TrainingError as err:
        print(f"ftlit: error: {err}", file=sys.stderr)
        sys.exit(1)
    except argparse.ArgumentError as err:
        print(f"ftlit: error: {parser_error(str(err))}", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:
        config_error = _config_error(err)
        if config_error is None:
            raise
        print(f"ftlit: error: {config_error}", file=sys.stderr)
        sys.exit(2)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ftlit`` and ``python -m ftlit``; bad input exits with one line naming the field."""
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["export"]:
        from ftlit.export import main as export_main  # imported here: ftlit.export imports ftlit.cli

        export_main(argv[1:])
        return
    if argv[:1] == ["plot"]:
        from ftlit.plots import main as plot_main  # imported here: ftlit.plots imports ftlit.cli

        plot_main(argv[1:])
        return
    report_errors(lambda: FtlitCLI(args=args))
