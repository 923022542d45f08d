"""Cascaded fine-tuning (``model.init_from``): start a fine-tuning from a model fine-tuned before.

The source is an ftlit checkpoint or a folder written by ``ftlit export`` (any Hugging Face model folder works).
Its backbone always carries over; its head too when it is the same kind of head over the same labels, with its rows
put in the new run's label order. Anything else gets a new head, and one log line says what happened.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ftlit import backbone, upstream
from ftlit.checkpoint_io import read_checkpoint
from ftlit.core.anatomy import anatomy
from ftlit.core.strategies import full_width_heads
from ftlit.errors import ConfigError

FIELD = "model.init_from"
# What must agree between model.backbone and init_from for the weights to fit (and the tokenizer to be right).
ARCHITECTURE = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
_KINDS = "an ftlit checkpoint (.ckpt) or a model folder written by ftlit export"


def plain_model(model: nn.Module, label_names: list[str] | None) -> PreTrainedModel:
    """A task module's transformers model in eval mode, with LoRA adapters merged (a plain model that needs no
    peft) and ``label_names`` in its config."""
    if hasattr(model, "merge_and_unload"):
        # peft: fold W + BA into W and unwrap the head.
        model = model.merge_and_unload()
    if label_names and len(label_names) == model.config.num_labels:
        # The config already has them for ftlit's classifiers; this keeps any task's export self-describing.
        model.config.id2label = dict(enumerate(label_names))
        model.config.label2id = {name: i for i, name in enumerate(label_names)}
    return model.eval()


@contextmanager
def source_folder(init_from: str, trust_remote_code: bool = False, field: str = FIELD) -> Iterator[Path]:
    """A Hugging Face model folder of ``init_from``: the folder itself, or, for a checkpoint, its task model
    (LoRA merged) written to a temporary folder that is gone when the block ends; errors name ``field``."""
    path = Path(init_from).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(field, f"'{init_from}' is a folder without config.json: give {_KINDS}")
        yield path
        return
    if not path.is_file():
        raise ConfigError(field, f"'{init_from}' does not exist: give {_KINDS}")
    try:
        ckpt = read_checkpoint(path)
        from ftlit.core.module import FineTuneModule  # the task classes build on this module's caller

        module = FineTuneModule.load_from_checkpoint(path, map_location="cpu", trust_remote_code=trust_remote_code)
    except ConfigError as err:
        problem = str(err)[len(err.field) + 2 :]  # without the field it named
        raise ConfigError(field, f"{problem}: give {_KINDS}") from None
    # Pruned heads back at the config's width (zeros), as plain transformers builds it.
    model = full_width_heads(plain_model(module.model, ckpt.get("hyper_parameters", {}).get("label_names")))
    with tempfile.TemporaryDirectory(prefix="ftlit-init-") as tmp:
        backbone.unpack(tmp, model.config, ckpt["ftlit"]["tokenizer"], ckpt["ftlit"].get("code"))
        with backbone.quiet():
            model.save_pretrained(tmp)
        del module, model
        yield Path(tmp)


def check_architecture(init_from: str, start: PretrainedConfig, backbone_name: str, base: PretrainedConfig) -> None:
    """``init_from``'s weights fit ``model.backbone``'s architecture (whose tokenizer the data uses)."""
    differ = [k for k in ARCHITECTURE if getattr(start, k, None) != getattr(base, k, None)]
    if differ:
        ours = ", ".join(f"{k} {getattr(start, k, None)}" for k in differ)
        theirs = ", ".join(f"{k} {getattr(base, k, None)}" for k in differ)
        raise ConfigError(
            FIELD,
            f"'{init_from}' has {ours}, but model.backbone '{backbone_name}' has {theirs}: set model.backbone to the "
            "model init_from was fine-tuned from",
        )


def carry_over(model: PreTrainedModel, weights: PreTrainedModel, loading: dict[str, Any]) -> str | None:
    """Copy into ``model`` every weight ``weights`` loaded from ``init_from`` (``loading``: its missing and
    mismatched keys, which are not copied); returns which backbone weights ``model`` keeps from ``model.backbone``
    because ``init_from`` has none (a masked-LM model's missing pooler), or ``None``."""
    missing = {str(k) for k in loading.get("missing_keys") or []}
    missing |= {str(k[0] if isinstance(k, tuple) else k) for k in loading.get("mismatched_keys") or []}
    model.load_state_dict({k: v for k, v in weights.state_dict().items() if k not in missing}, strict=False)
    head = {f"{name}." for name, module in model.named_modules() if any(module is h for h in anatomy(model).head)}
    kept = sorted(k for k in missing if not any(k.startswith(prefix) for prefix in head))
    return f"init_from has no {_names(kept)}: those come from model.backbone" if kept else None


def fit_head(model: PreTrainedModel, start: PretrainedConfig, label_names: list[str] | None) -> str:
    """Keep, reorder or replace the head ``model`` loaded from ``init_from`` (whose config is ``start``); returns
    the line that says which.

    The head is kept when the source is the same kind of task model (its ``architectures``) over the same labels,
    in any order: the output rows are permuted to the new order. A task without label names (regression, question
    answering) keeps a head of the same size. Otherwise every head module is re-initialised, since a head whose
    shape happens to fit (2 labels for 2 other labels) must not be loaded silently.
    """
    arch = (start.architectures or ["an unknown model"])[0]
    ours = type(model).__name__
    if arch != ours:
        _new_head(model)
        return f"init_from is a {arch}, this task a {ours}: the backbone carries over, the head is new"
    if label_names is None:
        if start.num_labels == model.config.num_labels:
            return "init_from is the same task: backbone and head carry over"
        _new_head(model)
        return f"init_from has {start.num_labels} outputs, this task {model.config.num_labels}: the head is new"
    source = [str(start.id2label[i]) for i in range(start.num_labels)]
    if sorted(source) == sorted(label_names) and len(set(source)) == len(source):
        if source == list(label_names):
            return "init_from has the same labels: backbone and head carry over"
        _reorder_head(model, [source.index(name) for name in label_names])
        return "init_from has the same labels in another order: backbone and head carry over, rows reordered"
    _new_head(model)
    kept = [n for n in label_names if n in source]
    added = [n for n in label_names if n not in source]
    dropped = [n for n in source if n not in label_names]
    return (
        f"init_from has other labels: the backbone carries over, the head is new (kept {_names(kept)}, "
        f"added {_names(added)}, dropped {_names(dropped)})"
    )


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
    return f"[{shown}]"


def _new_head(model: PreTrainedModel) -> None:
    for module in anatomy(model).head:
        upstream.reinitialize(model, module)


def _reorder_head(model: PreTrainedModel, order: list[int]) -> None:
    """Put the output layer's rows (weight and bias) in ``order``: new row ``i`` is the source's row ``order[i]``."""
    outputs = [m for h in anatomy(model).head for m in h.modules() if isinstance(m, nn.Linear)]
    layer = next((m for m in reversed(outputs) if m.out_features == len(order)), None)
    if layer is None:
        raise ConfigError(FIELD, f"cannot find the output layer of {type(model).__name__}'s head to reorder")
    index = torch.tensor(order)
    with torch.no_grad():
        layer.weight.copy_(layer.weight[index])
        if layer.bias is not None:
            layer.bias.copy_(layer.bias[index])


def provenance(init_from: str, start: PretrainedConfig, head: str) -> dict[str, Any]:
    """What a checkpoint records of where its fine-tuning started."""
    return {"path": str(Path(init_from).expanduser().resolve()), "architecture": start.architectures, "head": head}
