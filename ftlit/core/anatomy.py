"""Where the parts of a Hugging Face encoder are: embeddings, the stack of layers, the rest, and the head.

Fine-tuning strategies (freezing, gradual unfreezing, layer-wise learning rates, re-initialisation) all need the
same map from a parameter to its depth; this module is the one place that knows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from transformers import PreTrainedModel

from ftlit.errors import ConfigError

SUPPORTED = "BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA, DeBERTa-v2/v3, ModernBERT, ALBERT"


@dataclass
class Anatomy:
    """The parts of a task model, bottom to top."""

    # The embeddings, with the projection to the layers' width where the model has one (ELECTRA, ALBERT).
    embeddings: nn.Module
    # The layer that runs at each depth, bottom to top. Where layers share their weights (ALBERT), the same module
    # appears at several depths and ``shared`` is set: per-layer strategies do not apply.
    layers: list[nn.Module]
    # Backbone parameters outside embeddings and layers (BERT's pooler, DeBERTa's relative embeddings, ...).
    top: list[nn.Module]
    # The task head: every module of the task model outside the backbone.
    head: list[nn.Module]
    # The backbone's pooler (part of ``top``), empty where the backbone has none.
    pooler: list[nn.Module] = field(default_factory=list)
    shared: bool = False
    name: str = "the backbone"  # the backbone's class name, for messages

    @property
    def backbone(self) -> list[nn.Module]:
        unique = list({id(m): m for m in self.layers}.values())  # shared layers once
        return [self.embeddings, *unique, *self.top]

    def depth_of_parameters(self) -> dict[int, str]:
        """``id(parameter) -> part`` where part is ``embeddings``, ``layer.<i>``, ``top`` or ``head``; the layers of
        a model whose layers share their weights are one part, ``layers``."""
        parts: dict[int, str] = {}
        for p in self.embeddings.parameters():
            parts[id(p)] = "embeddings"
        for i, layer in enumerate(self.layers):
            for p in layer.parameters():
                parts[id(p)] = "layers" if self.shared else f"layer.{i}"
        for part, modules in (("top", self.top), ("head", self.head)):
            for m in modules:
                for p in m.parameters():
                    parts.setdefault(id(p), part)
        return parts


def anatomy(model: PreTrainedModel) -> Anatomy:
    """Find embeddings, layer stack, other backbone modules and head of a BERT-family task model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper
    backbone = base.base_model
    config = base.config
    name = type(backbone).__name__
    n_layers = config.num_hidden_layers
    layers, shared = _layer_stack(backbone, n_layers, getattr(config, "num_hidden_groups", None))
    embeddings = backbone.get_input_embeddings()
    holder = next((m for m in backbone.children() if any(p is embeddings for p in m.modules())), None)
    if layers is None or holder is None:
        raise ConfigError(
            "model.backbone",
            f"cannot find the embeddings and the {n_layers} layers of {name}: ftlit fine-tunes {SUPPORTED} encoders",
        )
    inside = {id(sub) for part in [holder, *layers] for sub in part.modules()}
    # ELECTRA and ALBERT embed in a narrower width and project up before the first layer: that projection belongs
    # with the embeddings (frozen, decayed and thawed with them).
    width = getattr(config, "embedding_size", None)
    projections = [
        m
        for m in backbone.modules()
        if isinstance(m, nn.Linear)
        and id(m) not in inside
        and width not in (None, config.hidden_size)
        and (m.in_features, m.out_features) == (width, config.hidden_size)
    ]
    inside |= {id(sub) for m in projections for sub in m.modules()}
    names = {id(m): n for n, m in backbone.named_modules()}
    top = [m for m in backbone.modules() if id(m) not in inside and next(m.parameters(recurse=False), None) is not None]
    pooler = [m for m in top if names[id(m)].split(".")[0] == "pooler"]
    head = [m for m in base.children() if m is not backbone and next(m.parameters(), None) is not None]
    return Anatomy(
        embeddings=nn.ModuleList([holder, *projections]) if projections else holder,
        layers=layers,
        top=top,
        head=head,
        pooler=pooler,
        shared=shared,
        name=name,
    )


def _layer_stack(backbone: nn.Module, n_layers: int, n_groups: int | None) -> tuple[list[nn.Module] | None, bool]:
    """The layer at each depth, and whether layers share weights; ``None`` when no stack is found."""
    stacks = [m for m in backbone.modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    if stacks:
        return list(stacks[0]), False
    if n_groups and n_groups < n_layers:
        # ALBERT: ``num_hidden_groups`` groups of weights; group ``i * n_groups // n_layers`` runs at depth ``i``.
        groups = next((m for m in backbone.modules() if isinstance(m, nn.ModuleList) and len(m) == n_groups), None)
        if groups is not None:
            return [groups[i * n_groups // n_layers] for i in range(n_layers)], True
    return None, False
