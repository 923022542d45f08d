"""Checks of the Trainer, checkpoint and run keys that Lightning would only trip over later (after tokenization, or
an epoch of training), or accept silently: each is a one-line error naming the key, before any work."""

from __future__ import annotations

import math
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
    """The keys whose bad values Lightning would report late or not at all."""
    seed = config.get("seed_everything")
    if not isinstance(seed, bool) and isinstance(seed, int) and not _SEED_RANGE[0] <= seed <= _SEED_RANGE[1]:
        raise ConfigError("seed_everything", f"{seed} is out of range: give an integer in [0, 2**32 - 1]")
    trainer = config.trainer
    accumulate = trainer.get("accumulate_grad_batches")
    if accumulate is not None and accumulate < 1:
        raise ConfigError("trainer.accumulate_grad_batches", f"must be >= 1, got {accumulate}")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not (clip > 0 and math.isfinite(clip)):
        raise ConfigError("trainer.gradient_clip_val", f"must be > 0, got {clip}: use null to turn clipping off")
    interval = trainer.get("val_check_interval")
    if isinstance(interval, float) and not 0.0 < interval <= 1.0:
        raise ConfigError("trainer.val_check_interval", f"a fraction of an epoch must be in (0, 1], got {interval}")
    if isinstance(interval, int) and interval < 1:
        raise ConfigError("trainer.val_check_interval", f"a number of batches must be >= 1, got {interval}")
    check_monitor_args("checkpoint", config.checkpoint)
    for i, callback in enumerate(trainer.get("callbacks") or []):
        args = callback.get("init_args") if isinstance(callback, dict | Namespace) else None
        if args is not None:
            check_monitor_args(f"trainer.callbacks[{i}]", args)


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
    interval = trainer.val_check_interval
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
