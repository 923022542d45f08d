"""Domain-adversarial training (Ganin et al. 2016, "Domain-Adversarial Training of Neural Networks"): a domain
classifier on the pooled representation, behind a gradient-reversal layer, so that the encoder learns features
from which the domain of a text (labelled source or unlabelled target) cannot be told."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from typing_extensions import override

DomainSchedule = Literal["dann", "constant"]


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times ``-scale`` backward."""

    @staticmethod
    @override
    def forward(ctx: torch.autograd.function.FunctionCtx, features: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return features.view_as(features)

    @staticmethod
    @override
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * -ctx.scale, None


def reversal_scale(weight: float, schedule: DomainSchedule, progress: float, gamma: float = 10.0) -> float:
    """The reversal's strength at ``progress`` (0 at the start of training, 1 at its end): ``weight`` times
    Ganin et al.'s ramp ``2 / (1 + exp(-gamma * p)) - 1`` (``dann``: 0 at first, when the domain classifier is
    still noise, 0.76 by a seventh of training, then 1), or ``weight`` throughout (``constant``)."""
    if schedule == "constant":
        return weight
    p = min(max(progress, 0.0), 1.0)
    return weight * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


class DomainHead(nn.Module):
    """The domain classifier: gradient reversal, then a hidden layer with ReLU, then one logit per domain."""

    def __init__(self, hidden_size: int, domains: int = 2) -> None:
        """
        Args:
            hidden_size: Width of the pooled representation it reads.
            domains: Number of domains (2: source and target).
        """
        super().__init__()
        # Initialised on a forked random state: adding the head leaves the run's own random draws (dropout masks,
        # shuffles) as they are, so weight 0 trains exactly what plain fine-tuning trains.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.layers = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, domains))

    @override
    def forward(self, features: Tensor, scale: float) -> Tensor:
        """Domain logits of ``features`` ``[batch, hidden]``; the encoder below gets ``-scale`` times the gradient."""
        return self.layers(GradientReversal.apply(features, scale))
