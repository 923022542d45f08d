"""The search file of ``ftlit tune``: which config keys to search, over what, toward which metric.

A search file is YAML::

    metric: val/acc              # default: the config's checkpoint.monitor (and its mode)
    direction: maximize          # or minimize
    sampler: tpe                 # tpe (default) or random; or {name: tpe, n_startup_trials: 5, ...}
    pruner: median               # median (default), hyperband or none; or {name: median, n_warmup_steps: 20, ...}
    space:
      model.learning_rate: {type: float, low: 1.0e-5, high: 3.0e-4, log: true}
      model.layer_lr_decay: {type: float, low: 0.7, high: 1.0}
      model.reinit_layers: {type: int, low: 0, high: 2}
      model.warmup_ratio: [0.0, 0.06, 0.1]                    # a list: a categorical choice
      model.lora_rank: {type: categorical, choices: [0, 8]}
      model.lora_alpha: {type: float, low: 8, high: 32, when: {model.lora_rank: 8}}
    enqueue:                     # trials to run first, e.g. the config as it is
      - {model.learning_rate: 1.0e-4}

Keys are dotted config paths as ``ftlit fit`` reads them (``model.init_args.learning_rate``; ``model.learning_rate``
is the same key), list items by their index (``trainer.callbacks.0.init_args.every_n_epochs``). ``when`` makes a key
conditional on an earlier one taking one of the given values; otherwise the key keeps the config's value.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ftlit.errors import ConfigError

if TYPE_CHECKING:
    import optuna

KINDS = ("float", "int", "categorical")
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler"}
PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "none": "NopPruner"}
TOP_KEYS = ("metric", "direction", "sampler", "pruner", "space", "enqueue")
SCALARS = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Param:
    """One searched config key and its distribution."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial) -> Any:
        """Draw this key's value for ``trial`` (under the key's own name, so the study's tables read as config)."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        if all(isinstance(c, SCALARS) for c in self.choices):
            return trial.suggest_categorical(self.key, list(self.choices))
        # Optuna stores scalars only: a list or mapping choice (a milestone list) is drawn by its JSON text.
        return json.loads(trial.suggest_categorical(self.key, [json.dumps(c) for c in self.choices]))

    def stored(self, value: Any) -> Any:
        """``value`` as the study stores it (an enqueued trial's values are stored before they are drawn)."""
        return (
            value
            if self.kind != "categorical" or all(isinstance(c, SCALARS) for c in self.choices)
            else (json.dumps(value))
        )

    def active(self, drawn: dict[str, Any]) -> bool:
        return all(drawn.get(key, _UNSET) in values for key, values in self.when.items())


_UNSET = object()


@dataclass(frozen=True)
class Search:
    """A parsed, checked search file."""

    params: tuple[Param, ...]
    metric: str | None
    direction: str | None
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    enqueue: tuple[dict[str, Any], ...]
    text: str  # the file as read: a study remembers it and refuses another

    def draw(self, trial: optuna.Trial) -> dict[str, Any]:
        """The config values of one trial, in the file's order; a conditional key only when its condition holds."""
        drawn: dict[str, Any] = {}
        for param in self.params:
            if param.active(drawn):
                drawn[param.key] = param.suggest(trial)
        return drawn

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return _build(optuna.samplers, SAMPLERS, self.sampler, "search.sampler", seed=seed)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        return make_pruner(self.pruner)


def make_pruner(options: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner a search file names (``{"name": "median", ...options}``): a study does not store its pruner, so
    the tune process and each trial's process build it from the same options."""
    import optuna

    return _build(optuna.pruners, PRUNERS, options, "search.pruner")


def _build(module: Any, names: dict[str, str], options: dict[str, Any], field: str, **fixed: Any) -> Any:
    """An Optuna sampler or pruner from its short name and options; a wrong option is one line naming it."""
    options = dict(options)
    cls = getattr(module, names[options.pop("name")])
    try:
        return cls(**fixed, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(field, f"{cls.__name__}: {' '.join(str(err).split())}") from None


def config_keys(config: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a config (mappings by name, lists by index), inner ones included."""
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for name, value in items:
        key = f"{prefix}{name}"
        yield key
        yield from config_keys(value, f"{key}.")


def resolve_key(key: str, keys: set[str], field: str) -> str:
    """``key`` as the config spells it (``model.x`` is ``model.init_args.x``), or a ConfigError with the closest."""
    if key in keys:
        return key
    head, _, rest = key.partition(".")
    if f"{head}.init_args.{rest}" in keys:
        return f"{head}.init_args.{rest}"
    close = difflib.get_close_matches(key, sorted(keys), n=1, cutoff=0.6)
    hint = f": did you mean {close[0]}?" if close else ": see `ftlit fit --print_config` for the keys"
    raise ConfigError(field, f"'{key}' is not a config key{hint}")


def _number(spec: dict[str, Any], name: str, field: str) -> float:
    value = spec.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{field}.{name}", f"must be a finite number, got {value!r}")
    return float(value)


def parse_param(key: str, spec: Any, field: str, earlier: dict[str, Param]) -> Param:
    """One ``space`` entry: a list (categorical) or a mapping with ``type`` and its range or choices."""
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise ConfigError(field, f"expected a list of choices or a mapping with type, got {spec!r}")
    kind = spec.get("type", "categorical" if "choices" in spec else None)
    if kind not in KINDS:
        raise ConfigError(f"{field}.type", f"unknown distribution {kind!r}: use one of {', '.join(KINDS)}")
    allowed = {"type", "when"} | ({"choices"} if kind == "categorical" else {"low", "high", "log", "step"})
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ConfigError(f"{field}.{extra[0]}", f"not an option of a {kind} choice: use {', '.join(sorted(allowed))}")
    when = _parse_when(spec.get("when") or {}, f"{field}.when", earlier)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{field}.choices", "an empty choice: give a list of at least one value")
        return Param(key, kind, choices=tuple(choices), when=when)
    low, high = _number(spec, "low", field), _number(spec, "high", field)
    log, step = bool(spec.get("log", False)), spec.get("step")
    if low > high:
        raise ConfigError(field, f"an empty range: low {low:g} is above high {high:g}")
    if log and low <= 0:
        raise ConfigError(f"{field}.low", f"a log range must start above 0, got {low:g}")
    if step is not None and (log or _number(spec, "step", field) <= 0):
        raise ConfigError(f"{field}.step", "a step must be a positive number, and cannot go with log: true")
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ConfigError(field, f"an int range needs whole bounds, got {low:g} to {high:g}: use type: float")
    return Param(key, kind, low=low, high=high, log=log, step=step, when=when)


def _parse_when(when: Any, field: str, earlier: dict[str, Param]) -> dict[str, tuple[Any, ...]]:
    if not isinstance(when, dict):
        raise ConfigError(field, f"expected a mapping of an earlier key to its value(s), got {when!r}")
    out = {}
    for name, values in when.items():
        known = next((p.key for n, p in earlier.items() if name in (n, p.key)), None)
        if known is None:
            raise ConfigError(field, f"'{name}' is not a key searched above this one: conditions name earlier keys")
        out[known] = tuple(values) if isinstance(values, list) else (values,)
    return out


def _parse_named(value: Any, names: dict[str, str], field: str, default: str) -> dict[str, Any]:
    options = {} if value is None else {"name": value} if isinstance(value, str) else value
    if not isinstance(options, dict):
        raise ConfigError(field, f"expected a name or a mapping with name, got {value!r}")
    options = {"name": default, **options}
    if options["name"] not in names:
        raise ConfigError(f"{field}.name", f"unknown {field} {options['name']!r}: use one of {', '.join(names)}")
    return options


def load_search(path: str | Path, keys: set[str]) -> Search:
    """Read and check a search file against the config's ``keys``: every problem is one ConfigError, before any
    trial runs."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("search", f"'{path}' is not a file: give a search YAML (see configs/search/)")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError("search", f"'{path}' is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError("search", f"'{path}' must be a mapping with a space: see configs/search/quickstart.yaml")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"search.{unknown[0]}", f"not a search file key: use {', '.join(TOP_KEYS)}")
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise ConfigError("search.space", "no keys to search: map config keys to their ranges or choices")
    params: dict[str, Param] = {}
    for name, spec in space.items():
        key = resolve_key(str(name), keys, f"search.space.{name}")
        if key in {p.key for p in params.values()}:
            raise ConfigError(f"search.space.{name}", f"'{key}' is searched twice")
        params[str(name)] = parse_param(key, spec, f"search.space.{name}", params)
    direction = raw.get("direction")
    if direction not in (None, "maximize", "minimize"):
        raise ConfigError("search.direction", f"must be maximize or minimize, got {direction!r}")
    metric = raw.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise ConfigError("search.metric", f"must be a logged metric's name such as val/acc, got {metric!r}")
    enqueue = raw.get("enqueue") or []
    if not isinstance(enqueue, list) or not all(isinstance(t, dict) for t in enqueue):
        raise ConfigError("search.enqueue", "must be a list of mappings of searched keys to values")
    by_name = {**{p.key: p for p in params.values()}, **params}
    queued = []
    for i, trial in enumerate(enqueue):
        missing = [k for k in trial if k not in by_name]
        if missing:
            raise ConfigError(f"search.enqueue.{i}", f"'{missing[0]}' is not a searched key: enqueue searched keys")
        queued.append({by_name[k].key: by_name[k].stored(v) for k, v in trial.items()})
    return Search(
        params=tuple(params.values()),
        metric=metric,
        direction=direction,
        sampler=_parse_named(raw.get("sampler"), SAMPLERS, "search.sampler", "tpe"),
        pruner=_parse_named(raw.get("pruner"), PRUNERS, "search.pruner", "median"),
        enqueue=tuple(queued),
        text=text,
    )


def set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` (list items by index) in a nested config mapping."""
    *parents, last = key.split(".")
    node: Any = config
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
