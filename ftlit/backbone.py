"""Where a pretrained backbone and its tokenizer come from: the Hub, a local folder or a Python package."""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import logging as hf_logging

from ftlit.errors import ConfigError

PACKAGE_PREFIX = "package:"


def resolve(name_or_path: str, field: str = "model.backbone") -> str:
    """Turn a backbone reference into something ``from_pretrained`` takes.

    ``package:<module>/<folder>`` names a folder shipped inside an installed Python package (how the offline
    quickstart finds its model without a machine path); an existing folder is used as is; anything else is a
    Hub name.
    """
    if name_or_path.startswith(PACKAGE_PREFIX):
        module, _, sub = name_or_path[len(PACKAGE_PREFIX) :].partition("/")
        try:
            root = importlib.resources.files(module)
        except ModuleNotFoundError:
            raise ConfigError(field, f"package '{module}' is not installed: pip install it or give a folder") from None
        path = Path(str(root)) / sub
        if not path.is_dir():
            raise ConfigError(field, f"package '{module}' has no folder '{sub}'")
        return str(path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists():
        raise ConfigError(field, f"folder '{name_or_path}' does not exist: give an existing model folder")
    return name_or_path


def _hub_error(field: str, name: str, err: Exception) -> ConfigError:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return ConfigError(field, f"'{name}' not found locally and no network: give a local folder")
    return ConfigError(field, f"could not load '{name}' ({type(err).__name__}): check the name or give a local folder")


def _remote_code_error(field: str, name: str, err: ValueError) -> ConfigError:
    if "trust_remote_code" not in str(err):
        raise err
    return ConfigError(
        field, f"'{name}' ships its own Python code: set model.trust_remote_code=true if you trust its source"
    )


def load_config(
    name_or_path: str, field: str = "model.backbone", trust_remote_code: bool = False, **overrides: Any
) -> PretrainedConfig:
    """The backbone's ``PretrainedConfig``, with clear errors for names that cannot be found.

    Args:
        name_or_path: Hub name, folder or ``package:<module>/<folder>``.
        field: Config field named in errors.
        trust_remote_code: Allow a model that ships its own Python code to run it (off: such a model is an error).
        **overrides: Config attributes to set.
    """
    source = resolve(name_or_path, field)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **overrides)
    except OSError as err:
        raise _hub_error(field, name_or_path, err) from None
    except ValueError as err:
        raise _remote_code_error(field, name_or_path, err) from None


def load_tokenizer(
    name_or_path: str, field: str = "data.tokenizer", trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """A fast tokenizer for the backbone; slow (Python) tokenizers are refused because offsets need a fast one.

    Args:
        name_or_path: Hub name, folder or ``package:<module>/<folder>``.
        field: Config field named in errors.
        trust_remote_code: Allow a tokenizer that ships its own Python code to run it.
    """
    source = resolve(name_or_path, field)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise _hub_error(field, name_or_path, err) from None
    except ValueError as err:
        raise _remote_code_error(field, name_or_path, err) from None
    if not tokenizer.is_fast:
        raise ConfigError(field, f"'{name_or_path}' has no fast tokenizer: give a model with tokenizer.json")
    return tokenizer


def pack_tokenizer(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """The tokenizer's files as ``{filename: text}``, small enough to keep inside every checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).iterdir() if p.is_file()}


def pack_code(*objects: Any) -> dict[str, str]:
    """The Python files of those ``objects`` (a model, its config) whose classes came from the model's own code
    (``trust_remote_code``), as ``{filename: text}``: in a checkpoint they rebuild the model when its folder or
    repo is gone. Empty for transformers' own classes."""
    with tempfile.TemporaryDirectory() as tmp:
        for obj in objects:
            if getattr(obj, "_auto_class", None) is not None:  # set on classes loaded from a repo's code
                custom_object_save(obj, tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).glob("*.py")}


def _local_ref(ref: Any) -> Any:
    """``repo--module.Class`` (how transformers records code from the Hub) as ``module.Class``, found beside."""
    if isinstance(ref, (list, tuple)):
        return [_local_ref(r) for r in ref]
    return ref.split("--")[-1] if isinstance(ref, str) else ref


def packed_files(files: Any, what: str, field: str = "ckpt_path") -> dict[str, str]:
    """``files`` read from a checkpoint, checked to be ``{plain file name: text}``.

    A checkpoint is data: a name with a folder part (``../../x``, ``/etc/x``) would write outside the folder it is
    unpacked into, so it is refused, as is anything that is not text.
    """
    if not isinstance(files, dict):
        raise ConfigError(field, f"the checkpoint's packed {what} files are not a table of files: it is damaged")
    for name, text in files.items():
        plain = isinstance(name, str) and name not in ("", ".", "..") and os.path.basename(name) == name
        if not plain or "\\" in name or "\0" in name:
            raise ConfigError(
                field, f"the checkpoint's packed {what} file {name!r} is not a plain file name: refusing to write it"
            )
        if not isinstance(text, str):
            raise ConfigError(field, f"the checkpoint's packed {what} file {name!r} is not text: it is damaged")
    return files


def unpack(
    folder: str | os.PathLike,
    config: PretrainedConfig | dict,
    tokenizer_files: dict[str, str],
    code_files: dict[str, str] | None = None,
) -> None:
    """Write a backbone config, packed tokenizer and packed code into ``folder`` (a Hugging Face folder without
    weights); with code, the config's ``auto_map`` points at the files written beside it, not at a repo.

    Every file name is checked first (:func:`packed_files`): nothing is written outside ``folder``.
    """
    folder = Path(folder)
    tokenizer_files = packed_files(tokenizer_files, "tokenizer")
    code_files = packed_files(code_files or {}, "code")
    folder.mkdir(parents=True, exist_ok=True)
    data = config.to_dict() if isinstance(config, PretrainedConfig) else config
    if code_files:
        data = {**data, "auto_map": {k: _local_ref(v) for k, v in data.get("auto_map", {}).items()}}
        for name, text in code_files.items():
            (folder / name).write_text(text, encoding="utf-8")
    with open(folder / "config.json", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    for name, text in tokenizer_files.items():
        (folder / name).write_text(text, encoding="utf-8")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """transformers without its progress bars and load reports, for loads whose outcome ftlit states itself."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
