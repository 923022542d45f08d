"""Where the parts of a Hugging Face encoder are: embeddings, the stack of layers, the rest, and the head.

Fine-tuning strategies (freezing, gradual unfreezing, layer-wise learning rates, re-initialisation) all need the
same map from a parameter to its depth; this module is the one place that knows it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel


@dataclass
class Anatomy:
    """The parts of a task model, bottom to top."""

    embeddings: nn.Module
    layers: list[nn.Module]
    # Backbone parameters outside embeddings and layers (BERT's pooler, DeBERTa's relative embeddings, ...).
    top: list[nn.Module]
    # The task head: every module of the task model outside the backbone.
    head: list[nn.Module]

    @property
    def backbone(self) -> list[nn.Module]:
        return [self.embeddings, *self.layers, *self.top]

    def depth_of_parameters(self) -> dict[int, str]:
        """``id(parameter) -> part`` where part is ``embeddings``, ``layer.<i>``, ``top`` or ``head``."""
        parts: dict[int, str] = {}
        for p in self.embeddings.parameters():
            parts[id(p)] = "embeddings"
        for i, layer in enumerate(self.layers):
            for p in layer.parameters():
                parts[id(p)] = f"layer.{i}"
        for part, modules in (("top", self.top), ("head", self.head)):
            for m in modules:
                for p in m.parameters():
                    parts.setdefault(id(p), part)
        return parts


def anatomy(model: PreTrainedModel) -> Anatomy:
    """Find embeddings, layer stack, other backbone modules and head of a BERT-family task model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper
    backbone = base.base_model
    n_layers = base.config.num_hidden_layers
    stacks = [m for m in backbone.modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    embeddings = backbone.get_input_embeddings()
    holder = next((m for m in backbone.children() if any(p is embeddings for p in m.modules())), None)
    if not stacks or holder is None:
        raise ValueError(f"cannot find the embeddings and the {n_layers} layers of {type(backbone).__name__}")
    layers = stacks[0]
    inside = {id(sub) for part in [holder, *layers] for sub in part.modules()}
    top = [m for m in backbone.modules() if id(m) not in inside and next(m.parameters(recurse=False), None) is not None]
    head = [m for m in base.children() if m is not backbone and next(m.parameters(), None) is not None]
    return Anatomy(embeddings=holder, layers=list(layers), top=top, head=head)
