"""Sequence classification data: one text or a text pair per row, one label.

``TextDataModule`` holds what the text-in, one-target-out tasks share (text columns, tokenization, padding);
regression and multi-label classification build on it in their own modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property
from typing import Any

import datasets
import torch
from transformers import DataCollatorWithPadding

from ftlit.data.base import TaskDataModule, check_texts
from ftlit.errors import ConfigError

# Turns a batch of raw rows (``{column: values}``) into one target per row.
TargetEncoder = Callable[[dict[str, list]], list]


def _label_text(feature: Any):
    """A function mapping a raw label value to its name (ClassLabel ints become their names)."""
    if isinstance(feature, datasets.ClassLabel):
        return lambda v: feature.int2str(int(v)) if v is not None and v >= 0 else None
    return lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def sort_names(names: set[str]) -> list[str]:
    """Sorted label names; integer-like names sort numerically (``2`` before ``10``)."""
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


def column_error(field: str, column: str, split: str, ds: datasets.Dataset) -> ConfigError:
    """A missing-column error that lists the columns the split does have."""
    return ConfigError(field, f"column '{column}' not in the {split} split (columns: {', '.join(ds.column_names)})")


class TextDataModule(TaskDataModule):
    """Shared base of the text classification variants: one text (or a pair) per row, and a target."""

    def __init__(self, text_column: str = "text", text_pair_column: str | None = None, **kwargs: Any) -> None:
        """
        Args:
            text_column: Column holding the input text.
            text_pair_column: Second text column for sentence-pair tasks (MRPC, STS-B, NLI); none for single text.
            **kwargs: Shared data options (files, Hub dataset, batch sizes, ...): see ``TaskDataModule``.
        """
        super().__init__(**kwargs)
        self.text_column = text_column
        self.text_pair_column = text_pair_column

    @property
    def text_columns(self) -> list[str]:
        return [c for c in (self.text_column, self.text_pair_column) if c is not None]

    # --- what a variant supplies ----------------------------------------------------------------------------

    def check_targets(self, split: str, ds: datasets.Dataset) -> None:
        """Raise a ConfigError if a labelled split's targets are missing or invalid."""
        raise NotImplementedError

    def target_encoder(self, ds: datasets.Dataset) -> TargetEncoder:
        """A function from a batch of raw rows to their encoded targets; it must not reference ``self``."""
        raise NotImplementedError

    def target_fields(self) -> dict[str, Any]:
        """Target settings that change the encoded data (folded into the cache key)."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------------------

    def check_split(self, split: str, ds: datasets.Dataset) -> None:
        fields = {self.text_column: "text_column", self.text_pair_column: "text_pair_column"}
        for col in self.text_columns:
            if col not in ds.column_names:
                raise column_error(f"data.{fields[col]}", col, split, ds)
            check_texts(f"data.{fields[col]}", col, split, ds)
        if split != "predict":
            self.check_targets(split, ds)

    def cache_fields(self) -> dict[str, Any]:
        return {"text": self.text_columns, **self.target_fields()}

    def encode(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        targets = self.target_encoder(ds) if split != "predict" else None
        # Locals only (see map_rows).
        tokenizer, columns, max_length = self.tokenizer, self.text_columns, self.max_length

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            out = tokenizer(*[batch[c] for c in columns], truncation=True, max_length=max_length)
            if targets is not None:
                out["labels"] = targets(batch)
            return out

        return self.map_rows(ds, split, tokenize)

    @cached_property
    def _collator(self) -> DataCollatorWithPadding:
        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self._collator(features)


class ClassificationDataModule(TextDataModule):
    """Text (or text-pair) classification, one label per row, from local files or a Hub dataset."""

    def __init__(self, label_column: str = "label", labels: list[str] | None = None, **kwargs: Any) -> None:
        """
        Args:
            label_column: Column holding the label (string or integer).
            labels: Label names in id order; by default discovered from the train split, sorted.
            **kwargs: Text columns and shared data options: see ``TextDataModule`` and ``TaskDataModule``.
        """
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.label_column = label_column
        self.given_labels = labels

    @cached_property
    def label_names(self) -> list[str]:
        """Label names in id order: given, or every label seen in train, sorted."""
        if self.given_labels is not None:
            names, field = [str(n) for n in self.given_labels], "data.labels"
            if len(set(names)) != len(names):
                raise ConfigError(field, f"labels listed twice: {names}")
        else:
            if "train" not in self.raw:
                raise ConfigError("data.labels", "no train split to discover labels from: list them in data.labels")
            train = self.raw["train"]
            if self.label_column not in train.column_names:
                raise column_error("data.label_column", self.label_column, "train", train)
            to_name = _label_text(train.features[self.label_column])
            names = sort_names({n for n in map(to_name, train[self.label_column]) if n is not None})
            field = "data.label_column"
        if len(names) < 2:
            raise ConfigError(field, f"only one label ({names}): a classifier needs at least two")
        return names

    def check_targets(self, split: str, ds: datasets.Dataset) -> None:
        if self.label_column not in ds.column_names:
            raise column_error("data.label_column", self.label_column, split, ds)
        to_name = _label_text(ds.features[self.label_column])
        names = [to_name(v) for v in ds[self.label_column]]
        if None in names:
            row = names.index(None)
            raise ConfigError("data.label_column", f"row {row} of the {split} split has no label: fill or drop it")
        unknown = sorted(set(names) - set(self.label_names))
        if unknown:
            where = "in data.labels" if self.given_labels is not None else "seen in train"
            raise ConfigError(
                "data.labels", f"{split} split has labels not {where}: {unknown[:5]} (known: {self.label_names[:10]})"
            )

    def target_fields(self) -> dict[str, Any]:
        return {"label": self.label_column, "labels": self.label_names}

    def target_encoder(self, ds: datasets.Dataset) -> TargetEncoder:
        label2id = {name: i for i, name in enumerate(self.label_names)}
        to_name, column = _label_text(ds.features[self.label_column]), self.label_column
        return lambda batch: [label2id[to_name(v)] for v in batch[column]]
