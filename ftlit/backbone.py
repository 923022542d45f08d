"""Where a pretrained backbone and its tokenizer come from: the Hub, a local folder or a Python package."""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
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


def pack_tokenizer(tokenizer: PreTrainedTokenizerBase, field: str = "model.backbone") -> dict[str, str]:
    """The tokenizer's files as ``{filename: text}``, small enough to keep inside every checkpoint.

    Only what a tokenizer holds (:func:`is_tokenizer_file`) is packed, as only that is unpacked: a tokenizer that
    writes anything else (its own Python code) is an error here, not a checkpoint that later does not load.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        files = {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).iterdir() if p.is_file()}
    other = sorted(name for name in files if not is_tokenizer_file(name))
    if other:
        raise ConfigError(
            field,
            f"its tokenizer writes {', '.join(other)}, which is not a tokenizer file: ftlit packs only tokenizer "
            "files into a checkpoint (a tokenizer with its own Python code is not supported)",
        )
    return files


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


# What a tokenizer's ``save_pretrained`` writes in transformers 5 (``tokenization_utils_base`` and the
# ``VOCAB_FILES_NAMES`` of each model's tokenizer): the only files a checkpoint's packed tokenizer may hold. A model
# config (``config.json``), Python code, weights or any other file that transformers reads from a model folder is
# not a tokenizer's, and a checkpoint that packs one among its tokenizer files is refused.
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "chat_template.jinja",
        "chat_template.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "bpe.codes",
        "dict.txt",
        "entity_vocab.json",
        "vocab-src.json",
        "vocab-tgt.json",
        "target_vocab.json",
        "normalizer.json",
        "emoji.json",
        "byte_maps.json",
        "word_shape.json",
        "word_pronunciation.json",
        "prophetnet.tokenizer",
    }
)
# Sentencepiece models, under the many names tokenizers give them (spiece.model, tokenizer.model, source.spm, ...).
TOKENIZER_SUFFIXES = (".model", ".spm")
# Packed model code: Python modules, as ``custom_object_save`` writes them (an ``auto_map`` names them).
CODE_FILE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.py")


def is_tokenizer_file(name: str) -> bool:
    """Whether ``name`` is a file a tokenizer holds (:data:`TOKENIZER_FILES`, or a sentencepiece model)."""
    stem, dot, suffix = name.rpartition(".")
    return name in TOKENIZER_FILES or (
        bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", stem)) and f"{dot}{suffix}" in TOKENIZER_SUFFIXES
    )


def _check_table(files: Any, what: str, where: str, field: str) -> dict[str, str]:
    """``files`` (a packed tokenizer or code table) as ``{plain file name: text}``, each name one ``what`` holds."""
    if not isinstance(files, dict):
        raise ConfigError(field, f"the packed {what} files in {where} are not a table of files: it is damaged")
    for name, text in files.items():
        plain = isinstance(name, str) and name not in ("", ".", "..") and os.path.basename(name) == name
        if not plain or "\\" in name or "\0" in name:
            raise ConfigError(
                field, f"the packed {what} file {name!r} in {where} is not a plain file name: refusing to write it"
            )
        if what == "tokenizer" and not is_tokenizer_file(name):
            raise ConfigError(
                field,
                f"the packed tokenizer file {name!r} in {where} is not a tokenizer file (a tokenizer holds "
                "tokenizer.json, tokenizer_config.json and vocabulary files, never a model config or Python code): "
                "refusing the checkpoint",
            )
        if what == "code" and not CODE_FILE.fullmatch(name):
            raise ConfigError(
                field, f"the packed code file {name!r} in {where} is not a Python module: refusing the checkpoint"
            )
        if not isinstance(text, str):
            raise ConfigError(field, f"the packed {what} file {name!r} in {where} is not text: it is damaged")
    return files


def check_packed(
    config: Any, tokenizer_files: Any, code_files: Any = None, where: str = "the checkpoint", field: str = "ckpt_path"
) -> None:
    """The one check of a backbone packed in a checkpoint, made wherever one is read or unpacked: a checkpoint is
    data, and may be damaged or written to look like something else.

    The model config is a table whose ``model_type`` transformers knows (or that names its own code, which only
    ``trust_remote_code`` lets run: :func:`ships_code`); the tokenizer holds only tokenizer files, each JSON file of
    them valid JSON; the code only Python modules. Every name is a plain file name, so nothing is written outside
    the folder it is unpacked into, and no table can hold another's file (nor ``config.json``, the config's own).

    Args:
        config: The packed model config (a dict).
        tokenizer_files: The packed tokenizer, ``{file name: text}``.
        code_files: The packed model code, ``{file name: text}`` (none for transformers' own classes).
        where: The checkpoint, as errors name it (``'runs/x/last.ckpt'``).
        field: Config field named in errors.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if not isinstance(config, dict):
        raise ConfigError(field, f"the packed backbone in {where} is damaged: no model config")
    model_type = config.get("model_type")
    if "auto_map" not in config and (not isinstance(model_type, str) or model_type not in CONFIG_MAPPING):
        import transformers

        raise ConfigError(
            field,
            f"the packed model config in {where} has model_type {model_type!r}, which transformers "
            f"{transformers.__version__} does not know: the checkpoint is damaged (or needs a newer transformers)",
        )
    _check_table(tokenizer_files, "tokenizer", where, field)
    _check_table({} if code_files is None else code_files, "code", where, field)
    for name, text in tokenizer_files.items():
        if name.endswith(".json"):
            try:
                parsed = json.loads(text)
            except ValueError as err:
                raise ConfigError(
                    field, f"the packed tokenizer file {name!r} in {where} is not valid JSON ({err}): it is damaged"
                ) from None
            if not isinstance(parsed, dict) and name != "chat_template.json":
                raise ConfigError(
                    field, f"the packed tokenizer file {name!r} in {where} is not a JSON object: it is damaged"
                )


def ships_code(config: dict, tokenizer_files: dict[str, str], code_files: dict[str, str] | None = None) -> bool:
    """Whether a checked packed backbone (:func:`check_packed`) names Python code of its own: packed code files, or
    an ``auto_map`` in its model config or its tokenizer config (which transformers follows to a repo's code)."""
    tokenizer_config = json.loads(tokenizer_files.get("tokenizer_config.json", "{}"))
    return bool(code_files) or "auto_map" in config or "auto_map" in tokenizer_config


@contextlib.contextmanager
def reading_packed(what: str, where: str = "the checkpoint", field: str = "ckpt_path") -> Iterator[None]:
    """An error while transformers reads an unpacked backbone's ``what`` (``model config``, ``tokenizer``) as one
    line naming the checkpoint: past :func:`check_packed`, what fails there is the checkpoint's data, not ftlit."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__
        raise ConfigError(field, f"the packed {what} in {where} does not load ({reason}): it is damaged") from None


def unpack(
    folder: str | os.PathLike,
    config: PretrainedConfig | dict,
    tokenizer_files: dict[str, str],
    code_files: dict[str, str] | None = None,
) -> None:
    """Write a backbone config, packed tokenizer and packed code into ``folder`` (a Hugging Face folder without
    weights); with code, the config's ``auto_map`` points at the files written beside it, not at a repo.

    Everything is checked first (:func:`check_packed`): nothing is written outside ``folder``, a tokenizer holds
    only tokenizer files, and no file overwrites another (each is created, never replaced).
    """
    folder = Path(folder)
    data = config.to_dict() if isinstance(config, PretrainedConfig) else config
    check_packed(data, tokenizer_files, code_files)
    folder.mkdir(parents=True, exist_ok=True)
    if code_files:
        data = {**data, "auto_map": {k: _local_ref(v) for k, v in data.get("auto_map", {}).items()}}
    files = {"config.json": json.dumps(data, indent=2), **(code_files or {}), **tokenizer_files}
    for name, text in files.items():
        with open(folder / name, "x", encoding="utf-8") as f:
            f.write(text)


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


@dataclass
class LoadReport:
    """transformers' load report of a backbone, in ftlit's words: ``said`` is expected and said once (the new
    head), ``problems`` are backbone weights that start at random where pretrained ones were expected."""

    said: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def head_description(model: PreTrainedModel) -> str:
    """What the task head of ``model`` predicts: ``classification head: 2 labels``."""
    config, name = model.config, type(model).__name__
    if name.endswith("ForSequenceClassification"):
        if config.problem_type == "regression" or config.num_labels == 1:
            return "regression head: 1 output"
        kind = "multi-label classification" if config.problem_type == "multi_label_classification" else "classification"
        return f"{kind} head: {config.num_labels} labels"
    if name.endswith("ForTokenClassification"):
        return f"token-classification head: {config.num_labels} labels"
    if name.endswith("ForQuestionAnswering"):
        return "question-answering head: answer start and end"
    if name.endswith("ForMaskedLM"):
        return "masked-LM head"
    return f"{name} head"


def _modules(keys: Iterable[str], limit: int = 6) -> str:
    """Weight names as the modules that hold them, a module inside another listed once: ``cls.predictions,
    bert.pooler.dense``; layer numbers as ``*``; at most ``limit`` of them."""
    names = sorted({re.sub(r"\.\d+(?=\.|$)", ".*", k.rpartition(".")[0] or k) for k in keys})
    names = [n for n in names if not any(n.startswith(other + ".") for other in names)]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def describe_load(model: PreTrainedModel, loading: dict, source: str, field: str = "model.backbone") -> LoadReport:
    """Say what transformers' load report of ``model`` from ``source`` says (``loading``: ``from_pretrained``'s
    ``output_loading_info``), without its table.

    Missing weights of the task head are the new head, initialised at random: expected, as is a head of another
    shape (a backbone fine-tuned on another label set). Missing or reshaped weights of the backbone are a problem
    (pretrained weights expected, random ones got). Checkpoint weights the task does not use (a pooler, a
    pretraining head) are left out: said.
    """
    prefix = getattr(model, "base_model_prefix", "")
    base = model.base_model
    if base is model or not prefix:
        inside = {k for k, _ in model.named_parameters()} | {k for k, _ in model.named_buffers()}
    else:
        inside = {f"{prefix}.{k}" for k in base.state_dict()}
    missing = set(loading.get("missing_keys") or ())
    head_missing = sorted(k for k in missing if k not in inside)
    backbone_missing = sorted(k for k in missing if k in inside)
    reshaped = sorted(str(k[0] if isinstance(k, (tuple, list)) else k) for k in loading.get("mismatched_keys") or ())
    report, said = LoadReport(), []
    if any(k not in inside for k in reshaped):
        names = ", ".join(k for k in reshaped if k not in inside)
        said.append(
            f"{field}'s {names} have another shape than this task needs (another label set): new ones are trained"
        )
    if head_missing:
        # Parameters once each: a head weight tied to the embeddings (a masked-LM decoder) is not the head's own.
        head = {k for k, _ in model.named_parameters() if k not in inside}
        what = head_description(model)
        if head <= missing:
            said.append(f"new {what}, initialised at random")
        else:
            said.append(f"part of the {what} is new ({_modules(head_missing)}), initialised at random")
    unused = loading.get("unexpected_keys") or ()
    if unused:
        said.append(f"left out {field}'s {_modules(unused)} weights (not used by this task)")
    if said:
        report.said.append("ftlit: " + "; ".join(said))
    if backbone_missing:
        report.problems.append(
            f"ftlit: {field} '{source}' has no weights for {_modules(backbone_missing)} ({len(backbone_missing)} "
            "tensors): they start at random, not pretrained; check that it is the model you meant"
        )
    if any(k in inside for k in reshaped):
        names = [k for k in reshaped if k in inside]
        report.problems.append(
            f"ftlit: {field} '{source}' has {_modules(names)} ({len(names)} tensors) of another shape than its "
            "config says: they start at random, not pretrained; check the config's sizes"
        )
    return report
