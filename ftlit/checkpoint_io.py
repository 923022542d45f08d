"""Checkpoint files: written atomically, read safely (``weights_only``), and their packed backbone checked, with each
error stated once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from fsspec.utils import get_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from ftlit import backbone
from ftlit.errors import ConfigError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place.

    A crash or a kill during a save leaves the previous file intact: never a truncated ``last.ckpt``. Lightning's own
    save (an fsspec transaction) writes its temporary file to the system's temp folder, so the final move is a copy
    wherever that is another file system, and a kill leaves the orphan there; this one renames within the folder,
    and ``run_folder.clean_stray_files`` removes a killed save's leftover at the next start.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if get_protocol(str(path)) != "file":
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @override
    def load_checkpoint(self, path: str | Path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except FileNotFoundError:
            raise ConfigError("ckpt_path", f"checkpoint '{path}' does not exist") from None
        except Exception as err:  # truncated zip, pickle from elsewhere, ...
            raise ConfigError("ckpt_path", f"'{path}' is not a readable checkpoint ({type(err).__name__})") from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only``), with a clear error for missing or foreign files; its packed
    backbone is checked (:func:`saved_backbone`) before any command reads it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("ckpt_path", f"checkpoint '{path}' does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError("ckpt_path", f"'{path}' is not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or "ftlit" not in ckpt:
        raise ConfigError("ckpt_path", f"'{path}' is not an ftlit checkpoint")
    saved_backbone(ckpt, f"'{path}'")
    return ckpt


def saved_backbone(ckpt: dict[str, Any], where: str = "the checkpoint") -> dict[str, Any]:
    """The backbone config, tokenizer and code packed in a checkpoint, checked to be data of the right shape: the
    one check every route that reads or unpacks them makes (:func:`ftlit.backbone.check_packed`)."""
    saved = ckpt["ftlit"]
    if not isinstance(saved, dict):
        raise ConfigError("ckpt_path", f"the packed backbone in {where} is damaged: no model config")
    backbone.check_packed(saved.get("config"), saved.get("tokenizer"), saved.get("code"), where)
    return saved
