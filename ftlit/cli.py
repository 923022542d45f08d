"""The ``ftlit`` command: LightningCLI with ftlit's links, checkpointing and loggers wired in."""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ftlit.data.base import TaskDataModule
from ftlit.errors import ConfigError
from ftlit.models.base import FineTuneModule


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
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Always present, under its own key, so `--ckpt_path last` finds the last checkpoint.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        # The tokenizer is the backbone's, and the labels come from the data: never typed twice.
        parser.link_arguments("model.init_args.backbone", "data.init_args.tokenizer")
        parser.link_arguments(
            "data", "model.init_args.label_names", compute_fn=lambda data: data.label_names, apply_on="instantiate"
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.default_root_dir or os.getcwd()
        if config.checkpoint.dirpath is None:
            # A fixed folder: Lightning's default moves with each new logger version, and `last` is then lost.
            config.checkpoint.dirpath = os.path.join(root, "checkpoints")
        if config.trainer.logger in (None, True):
            config.trainer.logger = default_loggers(root)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # Every split is checked (columns, labels, empty files) before any tokenization or training.
        self.datamodule.validate()


def default_loggers(root: str) -> list[Namespace]:
    """A CSV logger (``<root>/csv``, metrics.csv for plots), plus TensorBoard (``<root>/tensorboard``) if installed."""
    kinds = [("CSVLogger", "csv")] + ([("TensorBoardLogger", "tensorboard")] if find_spec("tensorboard") else [])
    return [
        Namespace(class_path=f"lightning.pytorch.loggers.{cls}", init_args=Namespace(save_dir=root, name=name))
        for cls, name in kinds
    ]


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ftlit`` and ``python -m ftlit``; bad input exits with one line naming the field."""
    try:
        FtlitCLI(args=args)
    except ConfigError as err:
        print(f"ftlit: error: {err}", file=sys.stderr)
        sys.exit(2)
