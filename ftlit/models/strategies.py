"""Fine-tuning strategies that change the model or its optimizer: freezing, re-initialisation, L2-SP, LoRA and
layer-wise learning rates. Each takes the model's ``Anatomy`` so it works across BERT-family architectures."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ftlit.models.anatomy import Anatomy


def freeze(anatomy: Anatomy, backbone: bool = False, embeddings: bool = False, layers: int = 0) -> None:
    """Stop gradients to the whole backbone, to the embeddings, and/or to the bottom ``layers`` layers."""
    parts = anatomy.backbone if backbone else ([anatomy.embeddings] if embeddings else []) + anatomy.layers[:layers]
    for module in parts:
        module.requires_grad_(False)


def reinit_top_layers(model: PreTrainedModel, anatomy: Anatomy, layers: int, pooler: bool = False) -> None:
    """Re-initialise the top ``layers`` layers (and the pooler) with the model's own initialiser.

    Zhang et al. 2021, "Revisiting Few-sample BERT Fine-tuning": the top layers are the most pretraining-specific,
    and fresh ones fine-tune better on small data.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    modules = anatomy.layers[len(anatomy.layers) - layers :] + (anatomy.top if pooler else [])
    for part in modules:
        for m in part.modules():
            # transformers skips parameters it marked as loaded from the checkpoint: unmark them first.
            for p in m.parameters(recurse=False):
                p._is_hf_initialized = False
            base._init_weights(m)


class L2SP(nn.Module):
    """L2-SP (Li et al. 2018): ``alpha/2 * ||theta - theta*||^2`` toward the pretrained weights ``theta*``.

    The anchors are non-persistent buffers: they follow the model to its device but never enter a checkpoint.
    A resumed run rebuilds the model from the pretrained weights first, so the anchors are again ``theta*``.
    """

    def __init__(self, params: Iterable[nn.Parameter], alpha: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.params = list(params)
        for i, p in enumerate(self.params):
            self.register_buffer(f"anchor_{i}", p.detach().clone(), persistent=False)

    def forward(self) -> torch.Tensor:
        anchors = [getattr(self, f"anchor_{i}") for i in range(len(self.params))]
        total = sum(((p - a) ** 2).sum() for p, a in zip(self.params, anchors, strict=True))
        return 0.5 * self.alpha * total


def apply_lora(
    model: PreTrainedModel, anatomy: Anatomy, rank: int, alpha: float, dropout: float, targets: list[str]
) -> nn.Module:
    """Wrap ``model`` with LoRA adapters (peft); only the adapters and the task head stay trainable."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        from ftlit.errors import ConfigError

        raise ConfigError("model.lora_rank", "LoRA needs peft: pip install 'ftlit[peft]'") from None
    # The head must be listed, or peft neither trains nor saves it (peft #310, #577).
    head = [name for name, m in model.named_children() if any(m is h for h in anatomy.head)]
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, modules_to_save=head)
    return get_peft_model(model, config)


def layerwise_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    parts: dict[int, str],
    n_layers: int,
    lr: float,
    decay: float,
    head_lr: float | None,
    weight_decay: float,
    no_decay: set[int],
) -> list[dict[str, Any]]:
    """Parameter groups per part (``embeddings``, ``layer.<i>``, ``top``, ``head``), weight decay and not.

    Layer-wise learning-rate decay: ``lr * decay ** (distance from the top)``; the top layer and the backbone's
    other top modules (pooler) get ``lr``, the embeddings ``lr * decay ** n_layers``, the head ``head_lr``.
    """
    factors = {"embeddings": decay**n_layers, "top": 1.0}
    factors.update({f"layer.{i}": decay ** (n_layers - 1 - i) for i in range(n_layers)})
    groups: dict[str, dict[str, Any]] = {}
    for name, p in named_params:
        part = parts.get(id(p), "head")
        plain = name.endswith("bias") or id(p) in no_decay
        key = f"{part}/no_decay" if plain else part
        if key not in groups:
            group_lr = (head_lr or lr) if part == "head" else lr * factors[part]
            groups[key] = {"name": key, "params": [], "lr": group_lr, "weight_decay": 0.0 if plain else weight_decay}
        groups[key]["params"].append(p)
    return list(groups.values())
