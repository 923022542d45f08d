"""Which attention implementation a backbone is built with: PyTorch's fused attention (SDPA) where the architecture
has it, else the one it has (DeBERTa-v2/v3 have eager attention only)."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

from transformers import PretrainedConfig, PreTrainedModel


def build_with_attention(build: Callable[..., PreTrainedModel], *args: Any, **kwargs: Any) -> PreTrainedModel:
    """``build(*args, **kwargs)`` (a ``from_pretrained`` or ``from_config``) with SDPA where the model supports it.

    The model class is looked up first (``_supports_sdpa``), so a model without SDPA is built once, with eager
    attention, whether it comes from a folder (fit) or from a checkpoint's config (``ftlit export``). Where the
    class is not known before building (a model with its own code), SDPA is tried on copies of the config: a
    failed try writes its request into the config it was given, which would make the fallback fail too.
    """
    supported = supports_sdpa(build, args, kwargs)
    if supported is not None:
        return build(*args, attn_implementation="sdpa" if supported else "eager", **kwargs)
    try:
        return build(*_copy_configs(args), attn_implementation="sdpa", **_copy_configs(kwargs))
    except (ValueError, ImportError):
        return build(*args, attn_implementation="eager", **kwargs)


def supports_sdpa(build: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> bool | None:
    """Whether the class ``build`` makes supports SDPA; ``None`` when that is only known once it is built."""
    owner = getattr(build, "__self__", None)  # a model class, or an Auto class with its mapping
    if isinstance(owner, type) and issubclass(owner, PreTrainedModel):
        cls: Any = owner
    else:
        config = kwargs.get("config", args[0] if args else None)
        mapping = getattr(owner, "_model_mapping", None)
        # A config with an ``auto_map`` may name a class from the model's own code instead of the library's.
        if mapping is None or not isinstance(config, PretrainedConfig) or getattr(config, "auto_map", None):
            return None
        try:
            cls = mapping[type(config)]
        except (KeyError, ValueError):
            return None
    flag = inspect.getattr_static(cls, "_supports_sdpa", None) if isinstance(cls, type) else None
    return flag if isinstance(flag, bool) else None  # a property (composite models) decides per instance


def _copy_configs(values: Any) -> Any:
    if isinstance(values, dict):
        return {k: copy.deepcopy(v) if isinstance(v, PretrainedConfig) else v for k, v in values.items()}
    return tuple(copy.deepcopy(v) if isinstance(v, PretrainedConfig) else v for v in values)
