"""Multi-label classification data: one text or a text pair per row, any number of labels.

Labels come either as one column holding each row's label list (``["sports", "politics"]``; a string is split at
``label_separator``, so CSV files work too), or as several 0/1 columns, one per label (``label_columns``), the layout
of GoEmotions or the Jigsaw toxic-comment data.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import datasets

from ftlit.data.classification import TargetEncoder, TextDataModule, column_error, sort_names, warn_near_duplicates
from ftlit.errors import ConfigError


def _label_lists(feature: Any, separator: str) -> Callable[[Any], list[str] | None]:
    """A function from a cell of the label column to its label names (``None`` when the cell is no label list).

    Text cells are split at ``separator``, and an empty one (a blank CSV cell reads as ``None``) means no label;
    ``Sequence(ClassLabel)`` ids become their names.
    """
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return lambda value: [name.strip() for name in (value or "").split(separator) if name.strip()]
    inner = getattr(feature, "feature", None)
    # A Hub list of ClassLabel ids (GoEmotions): the ids' names are the labels.
    name = inner.int2str if isinstance(inner, datasets.ClassLabel) else str
    return lambda value: [name(v) for v in value] if isinstance(value, list) else None


class MultiLabelDataModule(TextDataModule):
    """Text (or text-pair) tagging with any number of labels per row (topics, emotions, toxicity types)."""

    def __init__(
        self,
        label_column: str = "labels",
        label_columns: list[str] | None = None,
        labels: list[str] | None = None,
        label_separator: str = ",",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            label_column: Column holding each row's labels: a list of names, or one string split at
                ``label_separator``; an empty list means no label applies.
            label_columns: Instead of ``label_column``: one 0/1 column per label, named after the label.
            labels: Label names in id order; by default ``label_columns``, or every label seen in train, sorted.
            label_separator: Separator of labels written in one string (``sports,politics``).
            **kwargs: Text columns and shared data options: see ``TextDataModule`` and ``TaskDataModule``.
        """
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if label_columns is not None and labels is not None and list(labels) != list(label_columns):
            raise ConfigError("data.labels", "with label_columns the labels are the column names: drop data.labels")
        if label_columns is not None and len(set(label_columns)) != len(label_columns):
            raise ConfigError("data.label_columns", f"columns listed twice: {label_columns}")
        if label_columns is not None:
            self.check_target_columns("label_columns", list(label_columns))
        else:
            self.check_target_columns("label_column", [label_column])
        self.label_column = label_column
        self.label_columns = label_columns
        self.given_labels = labels
        self.label_separator = label_separator

    @cached_property
    def label_names(self) -> list[str]:
        """Label names in id order: given, the 0/1 column names, a ClassLabel's names, or every label seen in train,
        sorted."""
        if self.label_columns is not None:
            return list(self.label_columns)
        if self.given_labels is not None:
            names = list(self.given_labels)
            if len(set(names)) != len(names):
                raise ConfigError("data.labels", f"labels listed twice: {names}")
            return names
        if "train" not in self.raw:
            raise ConfigError("data.labels", "no train split to discover labels from: list them in data.labels")
        train = self.raw["train"]
        if self.label_column not in train.column_names:
            raise column_error("data.label_column", self.label_column, "train", train)
        inner = getattr(train.features[self.label_column], "feature", None)
        if isinstance(inner, datasets.ClassLabel):
            return list(inner.names)  # the dataset's own id order, as its card documents it
        to_names = _label_lists(train.features[self.label_column], self.label_separator)
        names = sort_names({n for v in train[self.label_column] for n in to_names(v) or []})
        warn_near_duplicates("data.label_column", names)
        return names

    def check_targets(self, split: str, ds: datasets.Dataset) -> None:
        if self.label_columns is not None:
            for column in self.label_columns:
                if column not in ds.column_names:
                    raise column_error("data.label_columns", column, split, ds)
                bad = next((i for i, v in enumerate(ds[column]) if v not in (0, 1)), None)
                if bad is not None:
                    raise ConfigError(
                        "data.label_columns",
                        f"row {bad} of the {split} split has {ds[column][bad]!r} in '{column}': give 0 or 1",
                    )
            return
        if self.label_column not in ds.column_names:
            raise column_error("data.label_column", self.label_column, split, ds)
        known = set(self.label_names)
        to_names = _label_lists(ds.features[self.label_column], self.label_separator)
        for row, value in enumerate(ds[self.label_column]):
            names = to_names(value)
            if names is None:
                raise ConfigError(
                    "data.label_column", f"row {row} of the {split} split has {value!r}: give a list of labels"
                )
            unknown = sorted(set(names) - known)
            if unknown:
                where = "in data.labels" if self.given_labels is not None else "seen in train"
                raise ConfigError(
                    "data.labels",
                    f"row {row} of the {split} split has labels not {where}: {unknown[:5]} (known: {self.label_names})",
                )

    def target_fields(self) -> dict[str, Any]:
        return {
            "label": self.label_column,
            "columns": self.label_columns,
            "labels": self.label_names,
            "separator": self.label_separator,
        }

    def target_encoder(self, ds: datasets.Dataset) -> TargetEncoder:
        # Multi-hot float vectors: what BCE-with-logits (and transformers' multi-label head) expects.
        names, columns, column = self.label_names, self.label_columns, self.label_column
        if columns is not None:
            return lambda batch: [[float(v) for v in row] for row in zip(*(batch[c] for c in columns), strict=True)]
        index = {name: i for i, name in enumerate(names)}
        to_names = _label_lists(ds.features[column], self.label_separator)

        def encode(batch: dict[str, list]) -> list[list[float]]:
            rows = []
            for value in batch[column]:
                hot = [0.0] * len(names)
                for name in to_names(value):
                    hot[index[name]] = 1.0
                rows.append(hot)
            return rows

        return encode
