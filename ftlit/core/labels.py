"""A task's label set and its errors, stated once for every task that has one (single- and multi-label
classification, NER): given in ``data.labels`` or discovered in the train split, never listed twice, and every
split's labels known."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import datasets
from lightning.pytorch.utilities import rank_zero_warn

from ftlit.errors import ConfigError


def label_set(
    given: list[str] | None,
    raw: dict[str, datasets.Dataset],
    discover: Callable[[datasets.Dataset], list[str]],
    discovered_field: str,
    what: str = "labels",
) -> tuple[list[str], str]:
    """The label names in id order, and the config field they come from (named in later errors about them).

    Args:
        given: ``data.labels``, if set: used as given, in that order.
        raw: The splits as read; labels are discovered in ``train``.
        discover: The names found in the train split, in id order.
        discovered_field: The field that holds discovered labels (``data.label_column``).
        what: What the task calls its labels in messages (``tags`` for NER).

    Raises:
        ConfigError: No labels given and no train split to discover them in, or a name listed twice.
    """
    if given is not None:
        names, field = [str(name) for name in given], "data.labels"
    else:
        if "train" not in raw:
            raise ConfigError("data.labels", f"no train split to discover {what} from: list them in data.labels")
        names, field = discover(raw["train"]), discovered_field
    if len(set(names)) != len(names):
        raise ConfigError("data.labels", f"{what} listed twice: {names}")
    return names, field


def unknown_labels(
    split: str, found: Iterable[str], known: list[str], given: bool, what: str = "labels", row: int | None = None
) -> ConfigError | None:
    """The error for labels of ``split`` outside the label set (``None`` if there are none)."""
    unknown = sorted(set(found) - set(known))
    if not unknown:
        return None
    where = "in data.labels" if given else "seen in train"
    at = f"row {row} of the {split} split" if row is not None else f"{split} split"
    return ConfigError("data.labels", f"{at} has {what} not {where}: {unknown[:5]} (known: {known[:20]})")


def sort_names(names: Iterable[str]) -> list[str]:
    """Sorted label names; integer-like names sort numerically (``2`` before ``10``)."""
    names = set(names)
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


def warn_near_duplicates(field: str, names: list[str]) -> None:
    """Warn about label names that differ only by case or surrounding whitespace (``pos`` and ``Pos ``): they are
    different classes, which is rarely what the data meant."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        groups[name.strip().casefold()].append(name)
    alike = [group for group in groups.values() if len(group) > 1]
    if alike:
        shown = "; ".join(" and ".join(repr(n) for n in group) for group in alike[:5])
        rank_zero_warn(
            f"{field}: labels {shown} differ only by case or surrounding whitespace and are trained as different "
            "classes: clean the column if they are one"
        )


def column_error(field: str, column: str, split: str, ds: datasets.Dataset) -> ConfigError:
    """A missing-column error that lists the columns the split does have."""
    return ConfigError(field, f"column '{column}' not in the {split} split (columns: {', '.join(ds.column_names)})")
