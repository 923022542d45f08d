"""Checks of the Trainer, checkpoint and run keys that Lightning would only trip over later (after tokenization, or
an epoch of training), or accept silently: each is a one-line error naming the key, before any work."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from ftlit.errors import ConfigError

# numpy's seed range (seed_everything raises outside it, with a traceback).
_SEED_RANGE = (0, 2**32 - 1)
_MODES = ("min", "max")


def _get(args: Any, key: str) -> Any:
    """``args[key]`` of a callback's init_args, whether jsonargparse gives a Namespace or a dict."""
    return args.get(key) if isinstance(args, dict | Namespace) else getattr(args, key, None)


def check_values(config: Namespace) -> None:
    """The keys whose bad values Lightning would report late, as a traceback, or not at all."""
    seed = config.get("seed_everything")
    if not isinstance(seed, bool) and isinstance(seed, int) and not _SEED_RANGE[0] <= seed <= _SEED_RANGE[1]:
        raise ConfigError("seed_everything", f"{seed} is out of range: give an integer in [0, 2**32 - 1]")
    check_trainer(config.trainer)
    check_monitor_args("checkpoint", config.checkpoint)
    for i, callback in enumerate(config.trainer.get("callbacks") or []):
        args = callback.get("init_args") if isinstance(callback, dict | Namespace) else None
        if args is not None:
            check_monitor_args(f"trainer.callbacks[{i}]", args)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


# Integer Trainer keys and their least value, with what the edge values mean. Lightning checks only some of these,
# when the Trainer is built (after the model is loaded); the rest fail after tokenization (check_val_every_n_epoch=0
# divides by zero at the first epoch's end) or are taken silently (a negative log_every_n_steps logs every step).
_AT_LEAST: tuple[tuple[str, int, str], ...] = (
    ("max_epochs", -1, ": -1 trains without an epoch limit"),
    ("min_epochs", 0, ""),
    ("max_steps", -1, ": -1 (the default) sets no step limit"),
    ("min_steps", 0, ""),
    (
        "check_val_every_n_epoch",
        1,
        ": to turn validation off set trainer.limit_val_batches=0; null counts val_check_interval batches across "
        "epochs",
    ),
    ("log_every_n_steps", 0, ": 0 turns logging off"),
    ("accumulate_grad_batches", 1, ""),
    ("num_sanity_val_steps", -1, ": -1 checks the whole validation set, 0 turns the check off"),
    ("reload_dataloaders_every_n_epochs", 0, ": 0 never reloads"),
    ("fast_dev_run", 0, ": an integer runs that many batches, true one"),
    ("num_nodes", 1, ""),
)
# Lightning's `_determine_batch_limits` (trainer/setup.py): a fraction in [0, 1] or a whole number of batches.
_BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")
_BATCH_LIMITS += ("overfit_batches",)
# Lightning's `_init_profiler` (trainer/setup.py), which lowercases the name.
_PROFILERS = ("simple", "advanced", "pytorch", "xla")
# Lightning's `RequirementCache`s for the optional packages of an accelerator, a strategy or a precision, by a word
# in the name ("xla" in single_xla, "deepspeed" in deepspeed_stage_2): without them Lightning raises as it builds the
# Trainer, some of them as a ModuleNotFoundError (an internal error here).
_NEEDS = {
    "tpu": "torch_xla>=1.13",
    "xla": "torch_xla>=1.13",
    "deepspeed": "deepspeed",
    "transformer-engine": "transformer_engine>=0.11.0",
}


def check_trainer(trainer: Namespace) -> None:
    """The Trainer's own keys, as Lightning 2.6 checks them (its `Trainer.__init__`, `_AcceleratorConnector`, loops
    and `setup.py`), plus the ranges it leaves unchecked: before the model is loaded or the data tokenized."""
    for key, least, meaning in _AT_LEAST:
        value = trainer.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < least:
            raise ConfigError(f"trainer.{key}", f"must be >= {least}, got {value}{meaning}")
    for low, high in (("min_epochs", "max_epochs"), ("min_steps", "max_steps")):
        least, most = trainer.get(low), trainer.get(high)
        if isinstance(least, int) and isinstance(most, int) and most >= 0 and least > most:
            raise ConfigError(
                f"trainer.{low}", f"{least} is more than trainer.{high} ({most}), which stops the run first: lower it"
            )
    # Lightning trains without an end when max_epochs is -1, or unset beside max_time (1,000 epochs only when
    # nothing is set): the warmup and decay schedule has no length then, and configure_optimizers would fail.
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    endless_epochs = epochs == -1 or (epochs is None and trainer.get("max_time") is not None)
    if endless_epochs and (steps is None or steps == -1):
        raise ConfigError(
            "trainer.max_epochs",
            "the run has no length (max_epochs -1, or unset beside max_time, and no max_steps): the learning-rate "
            "schedule needs one; set trainer.max_epochs or trainer.max_steps (max_time still stops the run earlier)",
        )
    for key in _BATCH_LIMITS:
        value = trainer.get(key)
        if isinstance(value, int | float) and not (0 <= value <= 1 or (value > 1 and value % 1 == 0)):
            raise ConfigError(
                f"trainer.{key}", f"must be a fraction in [0.0, 1.0] or a whole number of batches, got {value}"
            )
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not (clip > 0 and math.isfinite(clip)):
        raise ConfigError("trainer.gradient_clip_val", f"must be > 0, got {clip}: use null to turn clipping off")
    algorithm = trainer.get("gradient_clip_algorithm")
    if isinstance(algorithm, str) and algorithm.lower() not in ("norm", "value"):
        raise ConfigError("trainer.gradient_clip_algorithm", f"must be norm or value, got {algorithm!r}")
    _check_val_check_interval(trainer.get("val_check_interval"), trainer.get("check_val_every_n_epoch"))
    _check_max_time(trainer.get("max_time"))
    profiler = trainer.get("profiler")
    if isinstance(profiler, str) and profiler.lower() not in _PROFILERS:
        raise ConfigError("trainer.profiler", f"unknown profiler {profiler!r}: use one of {', '.join(_PROFILERS)}")
    if trainer.get("enable_checkpointing") is False:
        raise ConfigError(
            "trainer.enable_checkpointing", "ftlit always checkpoints (the checkpoint.* keys say how): leave it true"
        )
    if trainer.get("barebones") is True:
        raise ConfigError(
            "trainer.barebones", "ftlit always checkpoints and logs, which barebones mode forbids: leave it false"
        )
    _check_hardware(trainer)


def _check_val_check_interval(interval: Any, every_n_epoch: Any) -> None:
    """Batches (an int >= 1), a fraction of an epoch (a float in (0, 1]) or a duration ("DD:HH:MM:SS" or timedelta
    keywords), as Lightning's `_parse_time_interval_seconds` reads it."""
    key = "trainer.val_check_interval"
    if isinstance(interval, float) and not 0.0 < interval <= 1.0:
        raise ConfigError(key, f"a fraction of an epoch must be in (0, 1], got {interval}")
    if isinstance(interval, float) and every_n_epoch is None:
        raise ConfigError(
            key,
            f"a fraction of an epoch ({interval}) needs trainer.check_val_every_n_epoch: give a number of batches or "
            "a duration with check_val_every_n_epoch=null",
        )
    if isinstance(interval, int) and not isinstance(interval, bool) and interval < 1:
        raise ConfigError(key, f"a number of batches must be >= 1, got {interval}")
    if isinstance(interval, str | dict | Namespace) and _seconds(key, interval) < 0:
        raise ConfigError(key, f"a duration cannot be negative, got {_show(_plain(interval))}")


def _check_max_time(max_time: Any) -> None:
    """A "DD:HH:MM:SS" string or timedelta keywords, as Lightning's `Timer` reads them."""
    if isinstance(max_time, str) and not re.fullmatch(r"(\d+):(\d\d):(\d\d):(\d\d)", max_time.strip()):
        raise ConfigError("trainer.max_time", f"expected a duration 'DD:HH:MM:SS' (e.g. 00:12:00:00), got {max_time!r}")
    if isinstance(max_time, dict | Namespace) and _seconds("trainer.max_time", max_time) < 0:
        raise ConfigError("trainer.max_time", f"a duration cannot be negative, got {_plain(max_time)}")


def _plain(value: Any) -> Any:
    return value.as_dict() if isinstance(value, Namespace) else value


def _seconds(key: str, value: Any) -> float:
    """A duration in seconds: "DD:HH:MM:SS" (each part an integer) or ``datetime.timedelta`` keywords."""
    if isinstance(value, str):
        parts = value.split(":")
        try:
            if len(parts) != 4:
                raise ValueError
            days, hours, minutes, seconds = (int(part) for part in parts)
        except ValueError:
            raise ConfigError(key, f"expected a duration 'DD:HH:MM:SS' (e.g. 00:00:30:00), got {value!r}") from None
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()
    given = dict(_plain(value))
    try:
        return timedelta(**given).total_seconds()
    except TypeError:
        unknown = ", ".join(sorted(set(given) - set(_TIMEDELTA_KEYS)))
        what = f"unknown unit {unknown}" if unknown else f"the values must be numbers, got {_show(given)}"
        raise ConfigError(key, f"{what}: use {', '.join(_TIMEDELTA_KEYS)}") from None
    except (OverflowError, ValueError) as err:
        raise ConfigError(key, f"{_show(given)} is out of range ({err})") from None


_TIMEDELTA_KEYS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds")


def _check_hardware(trainer: Namespace) -> None:
    """``accelerator``, ``strategy``, ``devices`` and ``precision`` as Lightning's `_AcceleratorConnector` checks
    them, with its own registries and device parsers; combinations (fsdp on a CPU) are left to it."""
    from lightning.fabric.utilities.device_parser import _select_auto_accelerator
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry
    from lightning_utilities.core.imports import RequirementCache

    strategy = trainer.get("strategy")
    if isinstance(strategy, str) and strategy.lower() != "auto":
        known = StrategyRegistry.available_strategies()
        if strategy.lower() not in known:
            examples = ", ".join(["auto", *(name for name in known if "_" not in name)])
            raise ConfigError("trainer.strategy", f"unknown strategy {strategy!r}: use one of {examples}, ...")
    accelerator = trainer.get("accelerator")
    for key in ("strategy", "precision", "accelerator"):
        name = trainer.get(key)
        need = next((_NEEDS[word] for word in _NEEDS if isinstance(name, str) and word in name.lower()), None)
        if need is not None and not RequirementCache(need):
            raise ConfigError(f"trainer.{key}", f"{name} needs {need}, which is not installed")
    if not isinstance(accelerator, str):
        return  # an Accelerator instance (class_path): Lightning checks it
    names = sorted(AcceleratorRegistry.available_accelerators())
    if accelerator not in ("auto", "gpu", *names):
        raise ConfigError(
            "trainer.accelerator", f"unknown accelerator {accelerator!r}: use one of auto, gpu, {', '.join(names)}"
        )
    if accelerator == "auto":
        accelerator = _select_auto_accelerator()
    elif accelerator == "gpu":
        accelerator = next((n for n in ("mps", "cuda") if AcceleratorRegistry[n]["accelerator"].is_available()), "")
        if not accelerator:
            raise ConfigError("trainer.accelerator", "gpu: this machine has no CUDA or MPS GPU: use cpu or auto")
    kind = AcceleratorRegistry[accelerator]["accelerator"]
    if not kind.is_available():
        usable = [n for n in names if AcceleratorRegistry[n]["accelerator"].is_available()]
        raise ConfigError(
            "trainer.accelerator", f"{accelerator} is not available on this machine: use auto or {', '.join(usable)}"
        )
    devices = trainer.get("devices")
    if devices == "auto":
        return
    detail = ""
    try:
        if devices in ([], 0, "0"):  # the connector's own check, for every accelerator
            raise ValueError
        kind.parse_devices(devices)
    except (MisconfigurationException, TypeError, ValueError, AssertionError) as err:
        if accelerator != "cpu" and str(err):
            detail = f" ({' '.join(str(err).split())})"  # "You requested gpu: [3] But your machine only has: [0]"
        wanted = "a number of processes > 0" if accelerator == "cpu" else "-1 (all), a count > 0 or a list of ids"
        raise ConfigError(
            "trainer.devices",
            f"{_show(devices)} is not valid with accelerator {accelerator}: give auto or {wanted}{detail}",
        ) from None


def check_monitor_args(where: str, args: Any) -> None:
    """A ModelCheckpoint's or EarlyStopping's ``mode`` and intervals."""
    mode = _get(args, "mode")
    if mode is not None and mode not in _MODES:
        raise ConfigError(f"{where}.mode", f"must be min or max, got {mode!r}")
    for key in ("every_n_train_steps", "every_n_epochs", "patience"):
        value = _get(args, key)
        if isinstance(value, int) and value < 0:
            raise ConfigError(f"{where}.{key}", f"must be >= 0, got {value}")
    top_k = _get(args, "save_top_k")
    if isinstance(top_k, int) and top_k < -1:
        raise ConfigError(f"{where}.save_top_k", f"must be -1 (all), 0 or more, got {top_k}")


def check_monitors(trainer: Any, logged: set[str], task: str) -> None:
    """Every monitored metric (ModelCheckpoint, EarlyStopping, any callback with ``monitor``) is one the model logs.

    Lightning finds out only at the first validation (a traceback), or never (a checkpoint that never saves).
    """
    for callback in trainer.callbacks:
        monitor = getattr(callback, "monitor", None)
        if monitor is None or monitor in logged:
            continue
        name = type(callback).__name__
        where = "checkpoint.monitor" if name.endswith("ModelCheckpoint") else f"trainer.callbacks ({name}).monitor"
        raise ConfigError(where, f"{task} never logs {monitor!r}: use one of {', '.join(sorted(logged))}")


def check_val_interval(trainer: Any, batches: int) -> None:
    """An integer ``val_check_interval`` fits in an epoch of ``batches`` training batches (Lightning raises only
    after tokenization)."""
    interval = getattr(trainer, "val_check_interval", None)  # unset when it is a duration
    if isinstance(interval, int) and trainer.check_val_every_n_epoch is not None and interval > batches:
        raise ConfigError(
            "trainer.val_check_interval",
            f"{interval} batches is more than an epoch ({batches} batches): lower it, or set "
            "trainer.check_val_every_n_epoch=null to count batches across epochs",
        )


def config_files(argv: list[str]) -> list[str]:
    """The files given with ``--config`` on a command line."""
    files = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def check_config_files(argv: list[str]) -> None:
    """Each ``--config`` file is a readable YAML mapping: a list, an empty file or a syntax error is one line naming
    the file and line (jsonargparse says only "Unexpected config" or the bare YAML message)."""
    import yaml

    for name in config_files(argv):
        path = Path(name).expanduser()
        if path.is_dir():
            raise ConfigError("config", f"'{name}' is a folder: give a YAML file")
        if not path.is_file():
            raise ConfigError("config", f"file '{name}' does not exist: check the path")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError("config", f"'{name}' is not a text file: give a YAML file") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError("config", f"'{name}'{where}: YAML syntax error: {problem}") from None
        if data is None:
            raise ConfigError("config", f"'{name}' is empty: give keys such as model, data and trainer")
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise ConfigError("config", f"'{name}' holds a {kind}, not keys: write it as 'key: value' lines")
