"""Fine-tuning strategies that change the model or its optimizer: dropping layers, freezing, re-initialisation,
L2-SP, LoRA and layer-wise learning rates. Each takes the model's ``Anatomy`` so it works across BERT-family
architectures."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from typing_extensions import override

from ftlit import upstream
from ftlit.core.anatomy import Anatomy
from ftlit.errors import ConfigError

# What each per-layer strategy cannot do on layers that share their weights (ALBERT), and what to do instead.
_PER_LAYER = {
    "model.freeze_layers": "they cannot be frozen one by one: use model.freeze_backbone or model.freeze_embeddings",
    "model.reinit_layers": "they cannot be re-initialised one by one: drop the key",
    "model.layer_lr_decay": "they cannot have a learning rate each: set it to 1.0 (model.head_lr still applies)",
    "GradualUnfreezing": "they cannot thaw one by one: drop the callback, or use model.freeze_embeddings",
    "model.keep_layers": "they cannot be dropped one by one: drop the key",
    "model.prune_heads": "their heads cannot be removed one layer at a time: drop the key",
}


def refuse_shared_layers(anatomy: Anatomy, key: str) -> None:
    """Raise the one-line error for per-layer strategy ``key`` (a key of ``_PER_LAYER``) on shared layers."""
    if anatomy.shared:
        raise ConfigError(
            key, f"{anatomy.name}'s {len(anatomy.layers)} layers share one set of weights, so {_PER_LAYER[key]}"
        )


def check_per_layer(
    anatomy: Anatomy, freeze_layers: int = 0, reinit_layers: int = 0, layer_lr_decay: float = 1.0
) -> None:
    """Refuse per-layer strategies on a model whose layers share their weights, before anything is built on it."""
    for key, used in (
        ("model.freeze_layers", freeze_layers > 0),
        ("model.reinit_layers", reinit_layers > 0),
        ("model.layer_lr_decay", layer_lr_decay != 1.0),
    ):
        if used:
            refuse_shared_layers(anatomy, key)


def keep_layers(model: PreTrainedModel, anatomy: Anatomy, keep: list[int]) -> None:
    """Keep only the encoder layers at indices ``keep`` (bottom first), dropping the others: the model gets smaller
    and faster ("Poor Man's BERT", Sajjad et al. 2023: every other layer, or the bottom k, keep most of the
    accuracy). Its config says the new depth, so checkpoints and exports rebuild at that size in plain
    transformers."""
    refuse_shared_layers(anatomy, "model.keep_layers")
    n = len(anatomy.layers)
    outside = [i for i in keep if not 0 <= i < n]
    if not keep or outside:
        raise ConfigError("model.keep_layers", f"{keep} names no layer or one outside 0..{n - 1} ({n} layers)")
    if list(keep) != sorted(set(keep)):
        raise ConfigError("model.keep_layers", f"{keep}: list each layer once, bottom first, e.g. [0, 2, 4]")
    stacks = [
        (name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and list(m) == anatomy.layers
    ]
    parent_name, _, attribute = stacks[0][0].rpartition(".")
    parent = model.get_submodule(parent_name)
    setattr(parent, attribute, nn.ModuleList(anatomy.layers[i] for i in keep))
    config = model.config
    config.num_hidden_layers = len(keep)
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds follow their layers
        config.layer_types = [config.layer_types[i] for i in keep]


# Where each attention layout keeps its per-head projections, relative to an encoder layer: the module holding
# query, key and value (and its head-count attribute), their names, and the output projection that reads the heads.
# Both reshape by ``-1`` heads of a fixed size, so narrower projections run as they are.
_ATTENTION_LAYOUTS = (
    # BERT, RoBERTa, XLM-R, ELECTRA
    ("attention.self", ("query", "key", "value"), "attention.output.dense", "num_attention_heads"),
    ("attention", ("q_lin", "k_lin", "v_lin"), "attention.out_lin", "n_heads"),  # DistilBERT
)
PRUNED = "ftlit_heads"  # on a pruned attention module: (the original head count, the original indices kept)


def attention_parts(layer: nn.Module) -> tuple[nn.Module, list[nn.Linear], nn.Linear, str] | None:
    """A layer's attention module, its query/key/value projections, output projection and head-count attribute."""
    for holder, names, output, count in _ATTENTION_LAYOUTS:
        try:
            attention, out = layer.get_submodule(holder), layer.get_submodule(output)
        except AttributeError:
            continue
        projections = [getattr(attention, n, None) for n in names]
        if all(isinstance(m, nn.Linear) for m in [*projections, out]) and hasattr(attention, count):
            return attention, projections, out, count  # type: ignore[return-value]
    return None


def prune_heads(model: PreTrainedModel, anatomy: Anatomy, heads: dict[int, list[int]]) -> int:
    """Remove attention heads, ``{layer: [head, ...]}``: each layer's query, key and value projections lose the
    heads' rows and its output projection their columns, so the model really gets smaller and faster (Michel et
    al. 2019, "Are Sixteen Heads Really Better than One?"). Returns the number of heads removed.

    transformers 5 dropped ``prune_heads``; ``full_width_heads`` writes a pruned model back at its config's width.
    """
    key = "model.prune_heads"
    refuse_shared_layers(anatomy, key)
    n = len(anatomy.layers)
    removed = 0
    # Keys arrive as strings from a command line or a YAML mapping written with quotes.
    if any(not str(k).lstrip("-").isdigit() for k in heads):
        raise ConfigError(key, f"{heads}: map layer numbers to head numbers, e.g. {{0: [1, 5], 3: [2]}}")
    for layer_index, drop in sorted((int(k), v) for k, v in heads.items()):
        if not 0 <= layer_index < n:
            raise ConfigError(key, f"layer {layer_index} is outside 0..{n - 1} ({n} layers, counted after keep_layers)")
        parts = attention_parts(anatomy.layers[layer_index])
        if parts is None:
            raise ConfigError(
                key,
                f"{anatomy.name}'s attention is not a layout ftlit prunes (BERT, RoBERTa, XLM-R, ELECTRA, "
                "DistilBERT): drop the key",
            )
        attention, _, _, count = parts
        total = getattr(attention, count)
        if len(set(drop)) != len(drop) or any(not 0 <= h < total for h in drop):
            raise ConfigError(key, f"layer {layer_index}: {drop} must list heads of 0..{total - 1} once each")
        if len(drop) == total:
            raise ConfigError(
                key, f"layer {layer_index}: keep at least one of its {total} heads (model.keep_layers drops a layer)"
            )
        if not drop:
            continue
        keep = [h for h in range(total) if h not in drop]
        _resize_heads(anatomy.layers[layer_index], parts, keep, len(keep), _narrowed)
        setattr(attention, PRUNED, (total, keep))
        removed += len(drop)
    return removed


def full_width_heads(model: PreTrainedModel) -> PreTrainedModel:
    """``model`` as its config says it is: a copy whose pruned attention layers are back at full width, the removed
    heads' weights zero (their output-projection columns zero, so they add nothing: the outputs are the pruned
    model's), which plain transformers loads. ``model`` itself when no head was removed."""
    if not any(hasattr(m, PRUNED) for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    for layer in list(model.modules()):
        parts = attention_parts(layer)
        if parts is None or not hasattr(parts[0], PRUNED):
            continue
        total, keep = getattr(parts[0], PRUNED)
        _resize_heads(layer, parts, keep, total, _widened)
        delattr(parts[0], PRUNED)
    return model


def _resize_heads(layer: nn.Module, parts: tuple, keep: list[int], heads: int, resize: Any) -> None:
    """Give a layer's attention ``heads`` heads: ``resize(linear, index, width, dim)`` makes each projection of the
    ``keep`` heads (``index``: their rows of the query/key/value outputs, columns of the output projection)."""
    attention, projections, out, count = parts
    size = projections[0].out_features // getattr(attention, count)
    index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in keep])
    for name, linear in zip(_names_of(attention, projections), projections, strict=True):
        setattr(attention, name, resize(linear, index, heads * size, dim=0))
    _replace(layer, out, resize(out, index, heads * size, dim=1))
    setattr(attention, count, heads)
    if hasattr(attention, "all_head_size"):
        attention.all_head_size = heads * size


def _names_of(attention: nn.Module, projections: list[nn.Linear]) -> list[str]:
    names = {id(m): n for n, m in attention.named_children()}
    return [names[id(m)] for m in projections]


def _replace(layer: nn.Module, old: nn.Module, new: nn.Module) -> None:
    path = next(n for n, m in layer.named_modules() if m is old)
    parent, _, name = path.rpartition(".")
    setattr(layer.get_submodule(parent), name, new)


def _narrowed(linear: nn.Linear, index: torch.Tensor, width: int, dim: int) -> nn.Linear:
    """A copy of ``linear`` keeping only the output rows (``dim=0``) or input columns (``dim=1``) at ``index``
    (``width`` of them)."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = None if linear.bias is None else linear.bias.detach().clone()
    if dim == 0 and bias is not None:
        bias = bias[index].clone()
    return _linear(weight, bias, linear)


def _widened(linear: nn.Linear, index: torch.Tensor, width: int, dim: int) -> nn.Linear:
    """The inverse of ``_narrowed``: ``linear``'s rows or columns placed at ``index`` of ``width``, zeros elsewhere."""
    shape = list(linear.weight.shape)
    shape[dim] = width
    weight = linear.weight.detach().new_zeros(shape).index_copy(dim, index, linear.weight.detach())
    bias = None if linear.bias is None else linear.bias.detach().clone()
    if dim == 0 and bias is not None:
        bias = bias.new_zeros(width).index_copy(0, index, bias)
    return _linear(weight, bias, linear)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, like: nn.Linear) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    layer.train(like.training)
    layer.requires_grad_(like.weight.requires_grad)
    return layer


def freeze(anatomy: Anatomy, backbone: bool = False, embeddings: bool = False, layers: int = 0) -> None:
    """Stop gradients to the whole backbone, to the embeddings, and/or to the bottom ``layers`` layers."""
    check_per_layer(anatomy, freeze_layers=layers)
    parts = anatomy.backbone if backbone else ([anatomy.embeddings] if embeddings else []) + anatomy.layers[:layers]
    for module in parts:
        module.requires_grad_(False)


def reinit_top_layers(model: PreTrainedModel, anatomy: Anatomy, layers: int, pooler: bool = False) -> None:
    """Re-initialise the top ``layers`` layers (and the pooler) with the model's own initialiser.

    Zhang et al. 2021, "Revisiting Few-sample BERT Fine-tuning": the top layers are the most pretraining-specific,
    and fresh ones fine-tune better on small data.
    """
    check_per_layer(anatomy, reinit_layers=layers)
    if pooler and not anatomy.pooler:
        # Only the pooler: DeBERTa's relative position embeddings or ELECTRA's projection are pretrained weights.
        raise ConfigError("model.reinit_pooler", f"{type(model).__name__} has no pooler: drop the key")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    modules = anatomy.layers[len(anatomy.layers) - layers :] + (anatomy.pooler if pooler else [])
    for part in modules:
        upstream.reinitialize(base, part)


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

    @override
    def forward(self) -> torch.Tensor:
        anchors = [getattr(self, f"anchor_{i}") for i in range(len(self.params))]
        total = sum(((p - a) ** 2).sum() for p, a in zip(self.params, anchors, strict=True))
        return 0.5 * self.alpha * total


# LoRA's default targets, the attention's query and value projections, where they are not named query and value.
LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"], "deberta-v2": ["query_proj", "value_proj"], "modernbert": ["Wqkv"]}


def lora_targets(model: PreTrainedModel) -> list[str]:
    """The modules LoRA adapts by default: the query and value projections (ModernBERT: its fused ``Wqkv``)."""
    return LORA_TARGETS.get(model.config.model_type, ["query", "value"])


def apply_lora(
    model: PreTrainedModel,
    anatomy: Anatomy,
    rank: int,
    alpha: float,
    dropout: float,
    targets: list[str] | None = None,
) -> nn.Module:
    """Wrap ``model`` with LoRA adapters (peft) on ``targets`` (default: ``lora_targets``); only the adapters and
    the task head stay trainable."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("model.lora_rank", "LoRA needs peft: pip install 'ftlit[peft]'") from None
    default = lora_targets(model)
    targets = targets or default
    linear = {
        n.rsplit(".", 1)[-1] for m in anatomy.layers for n, sub in m.named_modules() if isinstance(sub, nn.Linear)
    }
    if not linear & set(targets):
        raise ConfigError(
            "model.lora_target_modules",
            f"{anatomy.name}'s layers have no linear module named {' or '.join(targets)}: "
            f"use {default}, or others of {sorted(linear)}",
        )
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
    Layers that share their weights (one part, ``layers``) cannot decay: ``decay`` must be 1 for them.
    """
    if decay != 1.0 and "layers" in parts.values():
        raise ConfigError(
            "model.layer_lr_decay",
            f"the {n_layers} layers share one set of weights, so {_PER_LAYER['model.layer_lr_decay']}",
        )
    factors = {"embeddings": decay**n_layers, "top": 1.0, "layers": 1.0}
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
