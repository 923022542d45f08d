"""How much each attention head of a fine-tuned model matters, and which heads to remove first.

Michel et al. 2019 ("Are Sixteen Heads Really Better than One?"): put a gate ``g_h = 1`` on every head's output;
a head's importance is ``|dL/dg_h|`` (how much the loss would change if the head were scaled down), summed over
batches, then divided by its layer's L2 norm so that layers compare. Heads with the lowest scores go first. This is
the scoring of Hugging Face's ``bertology`` example (absolute gradient per batch, per-layer normalisation); the
gate sits on the output projection's input, where the heads' outputs are concatenated, so it is the same gate for
every attention layout ``strategies.prune_heads`` handles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from lightning.pytorch.utilities import move_data_to_device
from torch import nn

from ftlit.core import strategies
from ftlit.core.anatomy import anatomy
from ftlit.core.module import FineTuneModule
from ftlit.errors import ConfigError


def attention_outputs(module: FineTuneModule) -> list[tuple[nn.Linear, int]]:
    """Each layer's output projection and its head count, bottom to top; refused in one line where the model has
    no layout ftlit prunes, shares its layers, or has heads removed already."""
    parts = anatomy(module.model)
    strategies.refuse_shared_layers(parts, "ckpt_path")
    found = []
    for layer in parts.layers:
        attention = strategies.attention_parts(layer)
        if attention is None:
            raise ConfigError("ckpt_path", f"{parts.name}'s attention is not a layout ftlit prunes (BERT, RoBERTa, "
                              "XLM-R, ELECTRA, DistilBERT)")  # fmt: skip
        holder, _, out, count = attention
        if hasattr(holder, strategies.PRUNED):
            raise ConfigError("ckpt_path", "this model has attention heads removed already (model.prune_heads): "
                              "score the checkpoint it was pruned from")  # fmt: skip
        found.append((out, getattr(holder, count)))
    return found


@contextlib.contextmanager
def gated(outputs: list[tuple[nn.Linear, int]], gates: list[torch.Tensor]) -> Iterator[None]:
    """Multiply each head's output by its gate while the block runs: ``gates[i][h]`` scales head ``h`` of layer
    ``i`` (1 changes nothing; 0 is the head removed)."""

    def hook(gate: torch.Tensor) -> Any:
        def scale(_: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            context = args[0]
            heads = context.unflatten(-1, (gate.numel(), -1)) * gate.to(context.dtype)[:, None]
            return (heads.flatten(-2), *args[1:])

        return scale

    handles = [out.register_forward_pre_hook(hook(gate)) for (out, _), gate in zip(outputs, gates, strict=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def head_importance(
    module: FineTuneModule, batches: Iterable[dict[str, Any]], normalize: bool = True
) -> tuple[list[list[float]], int]:
    """Each layer's head importances (``|dL/dg_h|`` summed over ``batches`` of labelled data, the task's own
    training loss, dropout off), and the number of batches read. ``normalize`` divides each layer's scores by their
    L2 norm. The model's weights and their gradients are left as they were."""
    outputs = attention_outputs(module)
    device = next(module.parameters()).device
    gates = [torch.ones(heads, device=device, requires_grad=True) for _, heads in outputs]
    scores = [torch.zeros(heads, dtype=torch.float64, device=device) for _, heads in outputs]
    trainable = [p for p in module.parameters() if p.requires_grad]
    was_training = module.training
    n = 0
    try:
        for p in trainable:  # only the gates need gradients: no weight gradients are computed or touched
            p.requires_grad_(False)
        module.eval()
        with torch.enable_grad(), gated(outputs, gates):
            for batch in batches:
                loss = module.training_loss(move_data_to_device(batch, device))[0]
                for score, grad in zip(scores, torch.autograd.grad(loss, gates), strict=True):
                    score += grad.abs().double()
                n += 1
    finally:
        for p in trainable:
            p.requires_grad_(True)
        module.train(was_training)
    if n == 0:
        raise ConfigError("split", "holds no batch to score the heads on: give a split with rows")
    if normalize:
        scores = [s / s.norm().clamp_min(1e-20) for s in scores]
    return [s.tolist() for s in scores], n


def check_share(remove: float) -> None:
    """Refuse a share of heads to remove outside (0, 1)."""
    if not 0 < remove < 1:
        raise ConfigError("remove", f"must be a share of the heads between 0 and 1 (e.g. 0.25), got {remove!r}")


def least_important(scores: list[list[float]], remove: float) -> dict[int, list[int]]:
    """The ``remove`` share of all heads with the lowest scores, as ``model.prune_heads`` takes them
    (``{layer: [head, ...]}``), never the last head of a layer (``model.keep_layers`` drops whole layers)."""
    check_share(remove)
    total = sum(len(layer) for layer in scores)
    wanted = min(round(remove * total), total - len(scores))
    if wanted < 1:
        raise ConfigError("remove", f"{remove} of {total} heads is none: raise it")
    left = [len(layer) for layer in scores]
    chosen: dict[int, list[int]] = {}
    for _, layer, head in sorted((s, i, h) for i, row in enumerate(scores) for h, s in enumerate(row)):
        if wanted == 0:
            break
        if left[layer] > 1:
            chosen.setdefault(layer, []).append(head)
            left[layer] -= 1
            wanted -= 1
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}
