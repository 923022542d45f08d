"""Masked-LM scores over the masked tokens only: perplexity and the share of masked tokens predicted exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from typing_extensions import override

IGNORE_INDEX = -100


class _MaskedTokens(Metric):
    """Sums over masked tokens (``labels != -100``), kept on the device: no host sync per batch, exact under DDP."""

    full_state_update = False
    is_differentiable = False

    total: Tensor
    tokens: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, values: Tensor, mask: Tensor) -> None:
        self.total += values.masked_fill(~mask, 0).sum(dtype=torch.float64)
        self.tokens += mask.sum()


class Perplexity(_MaskedTokens):
    """``exp`` of the mean cross-entropy over masked tokens: what the model pays, per token, to predict them."""

    higher_is_better = False

    @override
    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add a batch: ``logits`` ``[batch, tokens, vocab]``, ``labels`` ``[batch, tokens]`` (-100: not masked)."""
        mask = labels != IGNORE_INDEX
        nll = F.cross_entropy(logits.float().flatten(0, 1), labels.clamp(min=0).flatten(), reduction="none")
        self._add(nll.view_as(labels), mask)

    @override
    def compute(self) -> Tensor:
        return torch.exp(self.total / self.tokens.clamp(min=1)).float()


class MaskedAccuracy(_MaskedTokens):
    """The share of masked tokens whose most likely prediction is the original token."""

    higher_is_better = True

    @override
    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add a batch: ``logits`` ``[batch, tokens, vocab]``, ``labels`` ``[batch, tokens]`` (-100: not masked)."""
        mask = labels != IGNORE_INDEX
        self._add((logits.argmax(-1) == labels).to(torch.float64), mask)

    @override
    def compute(self) -> Tensor:
        return (self.total / self.tokens.clamp(min=1)).float()
