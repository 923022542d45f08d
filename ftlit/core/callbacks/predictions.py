"""Writing ``ftlit predict`` results to a file, one row per input, in input order."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter
from typing_extensions import override

from ftlit.errors import ConfigError
from ftlit.run_folder import check_folder


class PredictionWriter(BasePredictionWriter):
    """Collects every rank's predictions and writes them, in input order, to JSONL or CSV."""

    def __init__(self, output: str | None = None, overwrite: bool = False, onnx_model: str | None = None) -> None:
        """
        Args:
            output: File to write (``.jsonl`` or ``.csv``); default ``<default_root_dir>/predictions.jsonl``.
            overwrite: Replace an existing output file; otherwise an existing file is an error.
            onnx_model: Predict with this ONNX model (``model.onnx`` or ``model.int8.onnx`` from ``ftlit export
                --onnx`` or ``--quantize int8`` of the same checkpoint) on onnxruntime's CPU engine instead of
                PyTorch; the rows are written as PyTorch's would be. Needs ``onnxruntime``.
        """
        super().__init__(write_interval="epoch")
        if output is not None and Path(output).suffix not in (".jsonl", ".csv"):
            raise ConfigError("predictions.output", f"'{output}' must end in .jsonl or .csv")
        if onnx_model is not None and not Path(onnx_model).is_file():
            raise ConfigError("predictions.onnx_model", f"'{onnx_model}' is not a file: give a model.onnx from ftlit "
                              "export --onnx")  # fmt: skip
        self.output = output
        self.overwrite = overwrite
        self.onnx_model = onnx_model

    def path(self, trainer: pl.Trainer) -> Path:
        return output_path(self.output, trainer.default_root_dir)

    @override
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_output(self.path(trainer), self.overwrite)
        if self.onnx_model is not None:
            # After the checkpoint is loaded: the task module keeps its config, labels and decoding, and its
            # transformers model gives way to the ONNX one.
            from ftlit.core.onnx_engine import OnnxModel

            pl_module.model = OnnxModel(self.onnx_model, pl_module.model.config)

    @override
    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: list[list[dict[str, Any]]],
        batch_indices: list[list[int]],
    ) -> None:
        # One predict dataloader: ``predictions`` is a list of batches, ``batch_indices`` one list per dataloader.
        rows = {}
        for batch, indices in zip(predictions, batch_indices[0], strict=True):
            rows.update(zip(indices, batch, strict=True))
        if trainer.world_size > 1:
            # DistributedSampler interleaves and pads with repeats: gather, then keep one row per input index.
            gathered: list[dict[int, Any] | None] = [None] * trainer.world_size
            dist.all_gather_object(gathered, rows)
            rows = {i: r for part in gathered for i, r in part.items()}
        if trainer.is_global_zero:
            write_rows(self.path(trainer), [rows[i] for i in sorted(rows)])


def output_path(output: str | None, root: str) -> Path:
    """Where predictions go: ``output``, else ``<root>/predictions.jsonl``."""
    return Path(output or os.path.join(root, "predictions.jsonl"))


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an output that could not be written after predicting (its folder is a file, or not writable) and an
    existing predictions file unless told to replace it."""
    if path.is_dir():
        raise ConfigError("predictions.output", f"'{path}' is a folder: give a file name ending in .jsonl or .csv")
    if path.exists() and not overwrite:
        raise ConfigError("predictions.output", f"'{path}' exists: set predictions.overwrite=true or another path")
    check_folder(path.parent, "predictions.output")


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` to ``path`` atomically (temp file + rename): a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        if path.suffix == ".csv":
            flat = [{k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in r.items()} for r in rows]
            writer = csv.DictWriter(f, fieldnames=list(flat[0]) if flat else [])
            writer.writeheader()
            writer.writerows(flat)
        else:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, path)
