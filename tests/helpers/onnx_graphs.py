"""Proof that onnxruntime answered, not PyTorch: an exported graph whose weights differ from the checkpoint's."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# Added to the classifier's bias (neg, pos) of a two-label export: the log-odds of neg over pos grow by 4.
SHIFT = (2.0, -2.0)
LOG_ODDS_SHIFT = SHIFT[0] - SHIFT[1]


def shifted(source: Path, target: Path, shift: tuple[float, ...] = SHIFT) -> Path:
    """A copy of ``source`` (``model.onnx`` or ``model.int8.onnx`` of a sequence classifier) whose classifier bias
    is moved by ``shift``. The bias is the graph's last term (``logits = ... + bias``, in fp32 in both graphs), so
    onnxruntime's logits on the copy are the source's plus ``shift``; PyTorch, on the checkpoint, knows nothing of
    it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    [bias] = [t for t in model.graph.initializer if t.name == "model.classifier.bias"]
    moved = numpy_helper.to_array(bias) + np.asarray(shift, dtype=np.float32)
    bias.CopyFrom(numpy_helper.from_array(moved.astype(np.float32), bias.name))
    onnx.save(model, str(target))
    return target


def log_odds(probs: list[float]) -> float:
    """log(p[0] / p[1]): the difference of the two logits, whatever softmax's constant."""
    return math.log(probs[0]) - math.log(probs[1])
