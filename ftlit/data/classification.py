"""Sequence classification data: one text or a text pair per row, one label."""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import datasets
import torch
from transformers import DataCollatorWithPadding

from ftlit.data.base import TaskDataModule
from ftlit.errors import ConfigError


def _label_text(feature: Any):
    """A function mapping a raw label value to its name (ClassLabel ints become their names)."""
    if isinstance(feature, datasets.ClassLabel):
        return lambda v: feature.int2str(int(v)) if v is not None and v >= 0 else None
    return lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _sort_names(names: set[str]) -> list[str]:
    """Sorted label names; integer-like names sort numerically (``2`` before ``10``)."""
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


class ClassificationDataModule(TaskDataModule):
    """Text (or text-pair) classification from local files or a Hub dataset."""

    def __init__(
        self,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        labels: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            text_column: Column holding the input text.
            text_pair_column: Second text column for sentence-pair tasks (MRPC, RTE, NLI); none for single text.
            label_column: Column holding the label (string or integer).
            labels: Label names in id order; by default discovered from the train split, sorted.
            **kwargs: Shared data options (files, Hub dataset, batch sizes, ...): see ``TaskDataModule``.
        """
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.given_labels = labels

    @property
    def text_columns(self) -> list[str]:
        return [c for c in (self.text_column, self.text_pair_column) if c is not None]

    @cached_property
    def label_names(self) -> list[str]:
        """Label names in id order: given, or every label seen in train, sorted."""
        if self.given_labels is not None:
            return list(self.given_labels)
        if "train" not in self.raw:
            raise ConfigError("data.labels", "no train split to discover labels from: list them in data.labels")
        train = self.raw["train"]
        names = {n for n in map(_label_text(train.features[self.label_column]), train[self.label_column])}
        return _sort_names(names)

    def check_split(self, split: str, ds: datasets.Dataset) -> None:
        required = self.text_columns + ([self.label_column] if split != "predict" else [])
        fields = {self.text_column: "text_column", self.text_pair_column: "text_pair_column"}
        for col in required:
            if col not in ds.column_names:
                field = fields.get(col, "label_column")
                raise ConfigError(
                    f"data.{field}",
                    f"column '{col}' not in the {split} split (columns: {', '.join(ds.column_names)})",
                )
        if split == "predict":
            return
        to_name = _label_text(ds.features[self.label_column])
        names = [to_name(v) for v in ds[self.label_column]]
        if None in names:
            row = names.index(None)
            raise ConfigError("data.label_column", f"row {row} of the {split} split has no label: fill or drop it")
        known = set(self.label_names) if split != "train" or self.given_labels else None
        if known is not None:
            unknown = sorted(set(names) - known)
            if unknown:
                raise ConfigError(
                    "data.labels",
                    f"{split} split has labels not seen in train: {unknown[:5]} (known: {sorted(known)[:10]})",
                )

    def cache_fields(self) -> dict[str, Any]:
        return {"text": self.text_columns, "label": self.label_column, "labels": self.label_names}

    def encode(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        label2id = {name: i for i, name in enumerate(self.label_names)}
        to_name = _label_text(ds.features[self.label_column]) if self.label_column in ds.column_names else None
        has_labels = split != "predict" and to_name is not None

        # Locals only: datasets pickles the function to fingerprint it, and `self` reaches the trainer and model.
        tokenizer, columns, max_length, label_column = (
            self.tokenizer,
            self.text_columns,
            self.max_length,
            self.label_column,
        )

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            out = tokenizer(*[batch[c] for c in columns], truncation=True, max_length=max_length)
            if has_labels:
                out["labels"] = [label2id[to_name(v)] for v in batch[label_column]]
            return out

        return ds.map(tokenize, batched=True, remove_columns=ds.column_names, desc=f"Tokenizing {split}")

    @cached_property
    def _collator(self) -> DataCollatorWithPadding:
        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self._collator(features)
