"""A fine-tuned model ready to answer requests: loaded once from an ftlit checkpoint or an exported folder, it turns
input rows (the fields of the task's data files) into the rows ``ftlit predict`` writes for them.

Inputs go through the task's own data module (its checks, tokenization and padding) and its own ``predict_step``,
so a served prediction is ``ftlit predict``'s by construction, not a second implementation of it.
"""

from __future__ import annotations

import math
import tempfile
import uuid
from pathlib import Path
from typing import Any, Literal

import datasets
import torch
from datasets.table import InMemoryTable

from ftlit import backbone
from ftlit.checkpoint_io import read_checkpoint, saved_backbone
from ftlit.classes import find_class
from ftlit.core.datamodule import TaskDataModule
from ftlit.core.module import FineTuneModule
from ftlit.errors import ConfigError
from ftlit.serve import spec as specs
from ftlit.tasks.ner import TokenClassificationDataModule
from ftlit.tasks.qa import QuestionAnsweringDataModule
from ftlit.tasks.text import SequenceRegressor, TextDataModule

Engine = Literal["torch", "onnx", "onnx-int8"]
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
# Rows run together are at most this many times as long as the shortest of them: on a CPU a forward pass costs about
# its padded tokens, and a batch of single texts in arrival order is mostly padding (quickstart, 32 test sentences:
# 2.8 padded tokens per real one).
PAD_RATIO = 1.5
# How the served tasks are named to clients.
TASK_NAMES = {
    "SequenceClassifier": "classification",
    "SequenceRegressor": "regression",
    "MultiLabelClassifier": "multi-label classification",
    "TokenClassifier": "named-entity recognition",
    "QuestionAnswering": "question answering",
}


def as_dataset(rows: list[dict[str, Any]]) -> datasets.Dataset:
    """Request rows (all of the same fields) as the Dataset a task's checks and encoding read. Not
    ``Dataset.from_list``: most of its cost is hashing the rows for a fingerprint, which no request needs (a request
    is never cached), and it would run for each request on the server's event loop."""
    return datasets.Dataset(InMemoryTable.from_pylist(rows), fingerprint=uuid.uuid4().hex)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None``: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


class Predictor:
    """One model and its data module, in eval mode; :meth:`predict` is not thread-safe (one caller at a time)."""

    def __init__(self, module: FineTuneModule, datamodule: TaskDataModule, source: str, engine: Engine) -> None:
        self.module = module.eval()
        self.datamodule = datamodule
        self.source = source
        self.engine = engine
        self.task = TASK_NAMES.get(type(module).__name__, type(module).__name__)
        module.attach_data(datamodule)
        datasets.disable_progress_bars()

    @classmethod
    def load(cls, model: str, engine: Engine = "torch", trust_remote_code: bool = False) -> Predictor:
        """Load ``model``: an ftlit checkpoint file, or a folder written by ``ftlit export`` (or any Hugging Face
        folder of a task head ftlit has). ``engine`` ``onnx``/``onnx-int8`` runs the folder's ``model.onnx`` /
        ``model.int8.onnx`` on onnxruntime instead of PyTorch. A checkpoint's own remote-code setting is never used."""
        if engine not in ("torch", *ONNX_FILES):
            raise ConfigError("engine", f"{engine!r} is not an engine: use torch, onnx or onnx-int8")
        path = Path(model)
        if not path.exists():
            raise ConfigError("model", f"'{model}' does not exist: give an ftlit checkpoint or an exported folder")
        if engine != "torch":
            if not path.is_dir():
                raise ConfigError("engine", f"{engine} runs an exported folder's {ONNX_FILES[engine]}: give --model "
                                  "a folder from ftlit export --onnx (or --quantize int8)")  # fmt: skip
            if not (path / ONNX_FILES[engine]).is_file():
                flag = "--onnx" if engine == "onnx" else "--quantize int8"
                raise ConfigError("engine", f"'{path}' has no {ONNX_FILES[engine]}: export it with ftlit export {flag}")
        with backbone.quiet():
            module, data = (
                cls._from_folder(path, trust_remote_code)
                if path.is_dir()
                else cls._from_checkpoint(path, trust_remote_code)
            )
        if engine != "torch":
            from ftlit.core.onnx_engine import OnnxModel

            module.model = OnnxModel(path / ONNX_FILES[engine], module.model.config, field="engine")
        return cls(module, data, str(model), engine)

    @staticmethod
    def _from_checkpoint(path: Path, trust_remote_code: bool) -> tuple[FineTuneModule, TaskDataModule]:
        try:
            ckpt = read_checkpoint(path)
            spec = specs.from_checkpoint(ckpt)
            saved = saved_backbone(ckpt)
        except ConfigError as err:
            raise ConfigError("model", str(err).split(": ", 1)[1]) from None
        cls = specs.task_class(spec["task"], "model")
        module = cls.load_from_checkpoint(path, map_location="cpu", trust_remote_code=trust_remote_code)
        with tempfile.TemporaryDirectory() as tmp:
            backbone.unpack(tmp, saved["config"], saved["tokenizer"], saved.get("code"))
            data = Predictor._data_module(spec, tmp, trust_remote_code)
        return module, data

    @staticmethod
    def _from_folder(folder: Path, trust_remote_code: bool) -> tuple[FineTuneModule, TaskDataModule]:
        config = backbone.load_config(str(folder), "model", trust_remote_code=trust_remote_code)
        spec = specs.read(folder, config)
        cls = specs.task_class(spec["task"], "model")
        # A regressor's one output has no label name (its config says LABEL_0).
        labels = None if issubclass(cls, SequenceRegressor) else [config.id2label[i] for i in range(config.num_labels)]
        module = cls(backbone=str(folder), label_names=labels, trust_remote_code=trust_remote_code, **spec["predict"])
        return module, Predictor._data_module(spec, str(folder), trust_remote_code)

    @staticmethod
    def _data_module(spec: dict[str, Any], tokenizer: str, trust_remote_code: bool) -> TaskDataModule:
        data_cls = find_class(spec["data"]["class_path"], imported_only=True)
        if not (isinstance(data_cls, type) and issubclass(data_cls, TaskDataModule)):
            raise ConfigError("model", f"names data module {spec['data']['class_path']}, which is not ftlit's")
        data = data_cls.for_requests(tokenizer, trust_remote_code=trust_remote_code, **spec["data"]["init_args"])
        data.tokenizer  # noqa: B018 - read now, while its folder exists
        return data

    # --- the task's inputs --------------------------------------------------------------------------------------

    @property
    def input_fields(self) -> dict[str, bool]:
        """The fields of one input (the task's data columns) and whether each is required."""
        dm = self.datamodule
        if isinstance(dm, QuestionAnsweringDataModule):
            return {dm.question_column: True, dm.context_column: True, dm.id_column: False}
        if isinstance(dm, TextDataModule):
            return dict.fromkeys(dm.text_columns, True)
        if isinstance(dm, TokenClassificationDataModule):
            return {dm.text_column: True}
        raise ConfigError("model", f"{type(self.module).__name__} models cannot be served")

    @property
    def labels(self) -> list[str]:
        return list(self.module.label_names or [])

    @property
    def max_length(self) -> int:
        return self.datamodule.max_length

    def check(self, rows: list[dict[str, Any]]) -> None:
        """Raise a ConfigError for rows the task cannot read (its data module's own checks of a predict file)."""
        self.datamodule.check_split("predict", as_dataset(rows))

    def truncated(self, rows: list[dict[str, Any]]) -> list[int]:
        """The rows longer than ``max_length`` tokens, which are cut as in training. Question answering and NER read
        a long text in overlapping windows and cut nothing, as do text tasks with ``data.long_text=windows``."""
        dm = self.datamodule
        if isinstance(dm, QuestionAnsweringDataModule | TokenClassificationDataModule):
            return []
        if isinstance(dm, TextDataModule) and dm.long_text == "windows":
            return []
        columns = [[r[c] for r in rows] for c in dm.text_columns]
        encoded = dm.tokenizer(*columns, truncation=True, max_length=dm.max_length)
        return [i for i, e in enumerate(encoded.encodings) if e.overflowing]

    @torch.inference_mode()
    def predict(self, rows: list[dict[str, Any]], batch_size: int = 32) -> list[dict[str, Any]]:
        """``ftlit predict``'s row for each input row, in order, in batches of ``batch_size`` padded to their
        longest; NaN and infinities come out as ``None``."""
        encoded = self.datamodule.encode("predict", as_dataset(rows))
        features = [encoded[i] for i in range(len(encoded))]
        out: list[dict[str, Any]] = [{}] * len(features)
        inputs = [f["input_ids"] for f in features]
        # A row that holds its windows (NER, QA) is as long as their tokens.
        lengths = [sum(map(len, ids)) if ids and isinstance(ids[0], list) else len(ids) for ids in inputs]
        for chunk in self._chunks(lengths, batch_size):
            predicted = self.module.predict_step(self.datamodule.collate([features[i] for i in chunk]), 0)
            for i, row in zip(chunk, predicted, strict=True):
                out[i] = row
        return finite(out)

    def _chunks(self, lengths: list[int], batch_size: int) -> list[list[int]]:
        """The encoded rows' indices in the groups that run together: at most ``batch_size``, and, where each row is
        one input, of similar lengths (none longer than ``PAD_RATIO`` times the group's shortest), so little of a
        forward pass is spent on padding. A question's context windows stay together, in order."""
        n = len(lengths)
        if isinstance(self.datamodule, QuestionAnsweringDataModule):
            return [list(range(a, min(a + batch_size, n))) for a in range(0, n, batch_size)]
        chunks: list[list[int]] = []
        for i in sorted(range(n), key=lengths.__getitem__):
            if not chunks or len(chunks[-1]) == batch_size or lengths[i] > PAD_RATIO * lengths[chunks[-1][0]]:
                chunks.append([])
            chunks[-1].append(i)
        return chunks
