"""An exported ONNX graph (``ftlit export --onnx``, or its ``--quantize int8`` twin) run by onnxruntime, called like
the transformers model it was exported from, so a task's ``forward`` and ``predict_step`` run on it unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.utils import ModelOutput
from typing_extensions import override

from ftlit.errors import ConfigError


class OnnxModel(nn.Module):
    """``model(**inputs).logits`` (or ``.start_logits`` and ``.end_logits``) from an onnxruntime CPU session."""

    def __init__(self, path: str | Path, config: PretrainedConfig, field: str = "predictions.onnx_model") -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise ConfigError(field, f"'{path}' is not a file: give a model.onnx written by ftlit export --onnx")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(field, "running an ONNX model needs onnxruntime: pip install onnxruntime") from None
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for a file it cannot read
            raise ConfigError(field, f"'{path}' is not an ONNX model onnxruntime can run: {err}") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.config = config

    @override
    def forward(self, **inputs: torch.Tensor) -> ModelOutput:
        missing = [name for name in self.inputs if name not in inputs]
        if missing:
            raise ConfigError("predictions.onnx_model", f"the ONNX model takes {missing}, which the data lacks")
        feeds: dict[str, Any] = {name: inputs[name].detach().cpu().numpy().astype(np.int64) for name in self.inputs}
        device = next(iter(inputs.values())).device
        values = self.session.run(self.outputs, feeds)
        return ModelOutput(**{n: torch.from_numpy(v).to(device) for n, v in zip(self.outputs, values, strict=True)})
