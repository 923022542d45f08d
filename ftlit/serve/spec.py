"""What predicting with a fine-tuned model needs besides its weights: the task, how an input row is read and
tokenized (the data module's reading settings, ``max_length`` included) and the task's prediction settings.

A checkpoint holds all of it (the model's and the data module's hyperparameters, NER's word splitter among them);
``ftlit export`` writes it beside the weights as ``ftlit.json``, so an exported folder predicts (and splits text into
words) as ``ftlit predict`` on its checkpoint does. A folder without one (another tool's, or an older export) is read
by its ``config.json`` with the data defaults.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

from ftlit.classes import class_path, find_class
from ftlit.core.datamodule import TaskDataModule
from ftlit.core.module import FineTuneModule
from ftlit.errors import ConfigError
from ftlit.tasks.ner import TokenClassifier
from ftlit.tasks.qa import QuestionAnswering
from ftlit.tasks.text import MultiLabelClassifier, SequenceClassifier, SequenceRegressor

SPEC_FILE = "ftlit.json"
# Data options about where rows come from and how training batches them (and the domain column, which only
# training reads): not part of reading one input.
_NOT_READING = (set(inspect.signature(TaskDataModule.__init__).parameters) - {"max_length", "pad_to_multiple_of"}) | {
    "self",
    "domain_column",
    "target_domain",
}


def data_settings(hparams: dict[str, Any]) -> dict[str, Any]:
    """The reading settings among a data module's saved hyperparameters."""
    return {k: v for k, v in hparams.items() if not k.startswith("_") and k not in _NOT_READING}


def task_class(name: str, field: str) -> type[FineTuneModule]:
    """The ftlit task model a spec or checkpoint names, refused in one line unless it is one."""
    cls = find_class(name, imported_only=True)
    if not (isinstance(cls, type) and issubclass(cls, FineTuneModule)):
        raise ConfigError(field, f"names {name}, which is not an ftlit task model importable here")
    return cls


def recorded(data_class: str, settings: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with what the data module takes from a checkpoint's ``saved`` data hyperparameters where they
    leave it to it, or what an older ftlit did where it recorded nothing (NER's word splitter):
    ``TaskDataModule.checkpoint_settings``."""
    cls = find_class(data_class, imported_only=True)
    if isinstance(cls, type) and issubclass(cls, TaskDataModule):
        return {**settings, **cls.checkpoint_settings(settings, saved)}
    return settings


def from_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The serving spec of a loaded ftlit checkpoint."""
    hparams = ckpt.get("hyper_parameters", {})
    cls = task_class(hparams.get("_class_path") or class_path(SequenceClassifier), "model")
    data = ckpt.get("datamodule_hyper_parameters") or {}
    data_class = data.get("_class_path") or class_path(cls.data_class)
    return {
        "task": class_path(cls),
        "data": {"class_path": data_class, "init_args": recorded(data_class, data_settings(data), data)},
        "predict": {k: hparams[k] for k in cls.predict_settings if k in hparams},
    }


def from_config(config: PretrainedConfig) -> dict[str, Any]:
    """The spec of a plain Hugging Face folder, by its head: the data module's defaults read its inputs."""
    kinds = config.architectures or []
    if any(k.endswith("ForTokenClassification") for k in kinds):
        cls: type[FineTuneModule] = TokenClassifier
    elif any(k.endswith("ForQuestionAnswering") for k in kinds):
        cls = QuestionAnswering
    elif any(k.endswith("ForSequenceClassification") for k in kinds):
        cls = {"multi_label_classification": MultiLabelClassifier, "regression": SequenceRegressor}.get(
            config.problem_type or "", SequenceClassifier
        )
    else:
        what = ", ".join(kinds) or "model without a task head"
        raise ConfigError("model", f"the folder holds a {what}: serve a fine-tuned ftlit checkpoint or export")
    return {"task": class_path(cls), "data": {"class_path": class_path(cls.data_class), "init_args": {}}, "predict": {}}


def read(folder: Path, config: PretrainedConfig) -> dict[str, Any]:
    """The spec of an exported folder: its ``ftlit.json``, else one read from its config."""
    path = folder / SPEC_FILE
    if not path.is_file():
        return from_config(config)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(spec["task"], str) and isinstance(spec["data"]["init_args"], dict)
        assert isinstance(spec["data"]["class_path"], str) and isinstance(spec["predict"], dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ConfigError("model", f"'{path}' is damaged: export the checkpoint again") from None
    settings = spec["data"]["init_args"]
    spec["data"]["init_args"] = recorded(spec["data"]["class_path"], settings, settings)
    return spec


def write(folder: Path, ckpt: dict[str, Any]) -> None:
    """Write a checkpoint's spec into an exported folder."""
    (folder / SPEC_FILE).write_text(json.dumps(from_checkpoint(ckpt), indent=2) + "\n", encoding="utf-8")
