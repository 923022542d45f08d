"""The ``ftlit`` command: LightningCLI with ftlit's links, checkpointing and loggers wired in."""

from __future__ import annotations

import copy
import importlib
import inspect
import math
import os
import re
import sys
from importlib.util import find_spec
from typing import Any

import lightning.pytorch as pl
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from typing_extensions import override

from ftlit import checks, quiet, run_folder
from ftlit.checkpoint_io import read_checkpoint
from ftlit.classes import class_path, find_class
from ftlit.core.callbacks.predictions import PredictionWriter, check_output, output_path
from ftlit.core.callbacks.safety import GracefulStop
from ftlit.core.datamodule import TaskDataModule
from ftlit.core.module import FineTuneModule
from ftlit.errors import ConfigError, Stopped, report_errors, set_run_folder
from ftlit.search.reporting import TrialReporter, trial_from_env

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class FtlitCLI(LightningCLI):
    """LightningCLI whose model and data are ftlit task classes, picked in YAML by ``class_path``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("model_class", FineTuneModule)
        kwargs.setdefault("datamodule_class", TaskDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_callback", ConfigAsGiven)
        # A resumed run writes config.yaml into the same folder again.
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 42)
        # The models own their optimizer and schedule (warmup, decay, parameter groups).
        kwargs.setdefault("auto_configure_optimizers", False)
        # The data modules shard themselves (stateful loaders, no padded evaluation rows). Gradients are clipped
        # at norm 1.0 unless the config says otherwise (null turns it off), as the Trainer's max_grad_norm:
        # Lightning clips nothing by default, which cost NER 10 F1 points after an epoch.
        kwargs.setdefault("trainer_defaults", {"use_distributed_sampler": False, "gradient_clip_val": 1.0})
        # Parser errors are raised, not printed with the whole usage: `report_errors` prints them as one line.
        raising = {"exit_on_error": False}
        kwargs.setdefault("parser_kwargs", {**raising, **{name: raising for name in SUBCOMMANDS}})
        super().__init__(*args, **kwargs)

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="fit: start a new run in a run folder that holds another run's checkpoints, deleting them first "
            "(without it that is an error: resume with --ckpt_path last, or give a new folder)",
        )
        # Always present, under its own key, so `--ckpt_path last` finds the last checkpoint.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # A run folder holds one run (run_folder.check_fresh_fit), so a name that exists is this run's own file:
        # overwrite it. With the counter, a stop's last.ckpt made the next save write last-v1.ckpt beside it.
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        # The tokenizer is the backbone's, and the labels come from the data: never typed twice.
        parser.link_arguments("model.init_args.backbone", "data.init_args.tokenizer")
        parser.link_arguments("model.init_args.trust_remote_code", "data.init_args.trust_remote_code")
        parser.link_arguments("data", "model.init_args.label_names", compute_fn=checked_labels, apply_on="instantiate")

    @override
    def _parse_ckpt_path(self) -> None:
        # Lightning's version parses the checkpoint's hyperparameters over the config, so the checkpoint would
        # silently win over the YAML and the command line. ftlit keeps the config and checks that they match.
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        checks.check_values(config)  # before the seed is set: an out-of-range seed is one line too
        if not subcommand or config.get("ckpt_path") is None:
            return
        if config.ckpt_path == "best":
            if subcommand == "fit":
                raise ConfigError("ckpt_path", "'best' is for test, validate and predict: resume a fit with 'last'")
            # A new process has no best_model_path in memory: read it from the run's last checkpoint.
            config.ckpt_path = best_checkpoint(checkpoint_dir(config))
        elif config.ckpt_path == "last":
            # Lightning warns and starts from scratch (fit) or evaluates an untrained head (test) when there is no
            # last checkpoint: both are errors here.
            last = os.path.join(checkpoint_dir(config), "last.ckpt")
            if not os.path.isfile(last):
                fix = "drop --ckpt_path to start a new run" if subcommand == "fit" else "train first or give a file"
                raise ConfigError("ckpt_path", f"'last': there is no {last} to {subcommand} from: {fix}")
            config.ckpt_path = last
        if config.ckpt_path in ("hpc", "registry"):
            return
        ckpt = read_checkpoint(config.ckpt_path)
        saved = ckpt.get("hyper_parameters", {}).get("_class_path")
        # Compared as classes: an old class path (ftlit.models.SequenceClassifier) names the same class as the new.
        if saved and find_class(saved, imported_only=True) is not find_class(config.model.class_path):
            raise ConfigError(
                "ckpt_path",
                f"'{config.ckpt_path}' holds a {saved}, but model.class_path is {config.model.class_path}: "
                "use the config the checkpoint was trained with",
            )
        # Data settings the config leaves to the checkpoint (NER's data.words: auto), set before the data is read.
        data_class = find_class(config.data.class_path)
        if isinstance(data_class, type) and issubclass(data_class, TaskDataModule):
            given, recorded = config.data.init_args, ckpt.get("datamodule_hyper_parameters") or {}
            for key, value in data_class.checkpoint_settings(given, recorded).items():
                given[key] = value

    @override
    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trial = trial_from_env() if self.subcommand == "fit" else None
        if trial is not None:
            # A trial of `ftlit tune`: its reporter joins the config's callbacks, not its config.yaml.
            configured = self.config_init[self.subcommand].trainer.callbacks or []
            configured = configured if isinstance(configured, list) else [configured]
            kwargs["callbacks"] = [*configured, TrialReporter(**trial)]
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError) as err:
            # The Trainer checks its arguments as it is built ("`max_epochs` must be a non-negative integer", "The
            # strategy `fsdp` requires a GPU accelerator"): name the first Trainer argument the message mentions.
            keys = inspect.signature(pl.Trainer.__init__).parameters
            words = (word.lower() for word in re.findall(r"[A-Z]?[a-z_]+", str(err)))  # DeepSpeedStrategy too
            key = next((word for word in words if word in keys and word != "self"), None)
            message = str(err)
            if key is None and re.search(r"\b(gpu|cuda|mps|tpu|hpu|xla)\b", message, re.IGNORECASE):
                # "No supported gpu backend found!": the accelerator asked for is not on this machine.
                key, message = "accelerator", f"{message.rstrip('!.')}: use cpu or auto on this machine"
            raise ConfigError(f"trainer.{key}" if key else "trainer", message) from None

    @override
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_task_pair(config.model.class_path, config.data.class_path)
        root = config.trainer.default_root_dir or os.getcwd()
        run_folder.check_folder(root, "trainer.default_root_dir")
        if config.checkpoint.dirpath:
            run_folder.check_folder(config.checkpoint.dirpath, "checkpoint.dirpath")
        set_run_folder(root)
        if self.subcommand == "fit" and config.ckpt_path is None:
            field = "checkpoint.dirpath" if config.checkpoint.dirpath else "trainer.default_root_dir"
            run_folder.check_fresh_fit(checkpoint_dir(config), field, config.overwrite)
        self._lock = run_folder.RunLock(root)
        if self.subcommand == "predict":
            # Known from the config alone: refuse before the data is tokenized or the checkpoint loaded.
            check_output(output_path(config.predictions.output, root), config.predictions.overwrite)
        # Derived from the run folder: config.yaml keeps them as given, so the saved config run with another
        # default_root_dir writes there, not into (or with --overwrite, over) this run's checkpoints.
        if isinstance(self.save_config_kwargs, dict):
            self.save_config_kwargs["as_given"] = {
                key: copy.deepcopy(config[key]) for key in ("checkpoint.dirpath", "trainer.logger")
            }
        config.checkpoint.dirpath = checkpoint_dir(config)
        if not config.trainer.plugins:
            config.trainer.plugins = [Namespace(class_path="ftlit.checkpoint_io.AtomicCheckpointIO")]
        if config.trainer.logger in (None, True):
            config.trainer.logger = default_loggers(root)

    def before_fit(self) -> None:
        config = self.config[self.subcommand]
        checks.check_monitors(self.trainer, self.model.logged_metrics(), type(self.model).__name__)
        self.model.check_data(self.datamodule)
        train = getattr(self.datamodule, "raw", {}).get("train") if self.datamodule is not None else None
        if train is not None:
            per_rank = math.ceil(len(train) / self.trainer.world_size)
            batches = math.ceil(per_rank / self.datamodule.batch_size)
            if isinstance(self.trainer.limit_train_batches, int):
                batches = min(batches, self.trainer.limit_train_batches)
            checks.check_val_interval(self.trainer, batches)
        if run_folder.is_launching_process():
            # Held until the fit ends (see _run_subcommand); other ranks run inside the same run.
            self._lock.acquire()
            run_folder.clean_stray_files(checkpoint_dir(config))
            if config.overwrite and config.ckpt_path is None:
                run_folder.delete_checkpoints(checkpoint_dir(config))

    def after_fit(self) -> None:
        stop = next((c for c in self.trainer.callbacks if isinstance(c, GracefulStop)), None)
        if stop is not None and stop.stopped:
            raise Stopped(stop.signal, stop.describe())

    @override
    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        finally:
            lock = getattr(self, "_lock", None)
            if lock is not None:
                lock.release()


class ConfigAsGiven(SaveConfigCallback):
    """Lightning's ``config.yaml`` of the run, with the values ftlit derives from the run folder (the checkpoint
    folder, the default loggers) as the config gave them."""

    def __init__(self, *args: Any, as_given: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.as_given = as_given or {}

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        derived = {key: self.config[key] for key in self.as_given}
        for key, value in self.as_given.items():
            self.config[key] = value
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            for key, value in derived.items():
                self.config[key] = value


class ConfigOnly(FtlitCLI):
    """The parsed and checked config of a command, with nothing built or run (``ftlit tune`` reads its base config
    and checks each trial's this way)."""

    @override
    def _set_seed(self) -> None:
        pass  # reading a config seeds nothing (and logs nothing)

    @override
    def before_instantiate_classes(self) -> None:
        pass

    @override
    def instantiate_classes(self) -> None:
        pass

    @override
    def _run_subcommand(self, subcommand: str) -> None:
        pass


def check_task_pair(model_path: str, data_path: str) -> None:
    """Refuse a model with another task's data module (e.g. NER data under a sequence classifier).

    Both paths were resolved by the parser already (and subclass ``FineTuneModule`` / ``TaskDataModule``).
    """
    wanted = find_class(model_path).data_class
    if not issubclass(find_class(data_path), wanted):
        raise ConfigError(
            "data.class_path",
            f"{model_path.rpartition('.')[2]} trains on {class_path(wanted)}, not {data_path}: pick the matching pair",
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


# Commands beyond Lightning's own: name -> module with a ``main(argv)`` (imported only when that command runs).
COMMANDS = {
    "export": "ftlit.commands.export",
    "plot": "ftlit.commands.plot",
    "report": "ftlit.commands.report",
    "explain": "ftlit.commands.explain",
    "heads": "ftlit.commands.heads",
    "tune": "ftlit.commands.tune",
    "serve": "ftlit.commands.serve",
}


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ftlit`` and ``python -m ftlit``; bad input exits with one line naming the field."""
    argv = sys.argv[1:] if args is None else args
    quiet.install()  # upstream lines that need no action (deprecations inside libraries, Lightning's tips)
    if argv[:1] and argv[0] in COMMANDS:
        importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
        return
    report_errors(lambda: (checks.check_config_files(argv), FtlitCLI(args=args)))
