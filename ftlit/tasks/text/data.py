"""What the text tasks share: one text or a text pair per row and a target (``TextDataModule``: text columns,
tokenization, padding). Single-label classification, multi-label classification and regression build on it in their
own modules, each beside its model."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from functools import cached_property
from typing import Any, Literal

import datasets
import torch
from lightning.pytorch.utilities import rank_zero_info
from transformers import DataCollatorWithPadding

from ftlit.core.datamodule import META, TaskDataModule, blank_rows, check_texts, is_text
from ftlit.core.labels import column_error
from ftlit.errors import ConfigError

# A test row's index in its split (under ``batch[META]``), for naming the inputs a test got wrong.
ROW = "row"
# A training row's domain (0: labelled source, 1: unlabelled target), for domain-adversarial training.
DOMAIN = "domain"
# Turns a batch of raw rows (``{column: values}``) into one target per row.
TargetEncoder = Callable[[dict[str, list]], list]


def label_text(feature: Any):
    """A function mapping a raw label value to its name (ClassLabel ints become their names; a whole float such as
    ``1.0``, how a CSV column of numbers with a gap reads, is the class ``1``)."""
    if isinstance(feature, datasets.ClassLabel):
        return lambda v: feature.int2str(int(v)) if v is not None and v >= 0 else None

    def name(v: Any) -> str | None:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    return name


class TextDataModule(TaskDataModule):
    """Shared base of the text classification variants: one text (or a pair) per row, and a target."""

    def __init__(
        self,
        text_column: str = "text",
        text_pair_column: str | None = None,
        empty_texts: Literal["error", "drop"] = "error",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            text_column: Column holding the input text.
            text_pair_column: Second text column for sentence-pair tasks (MRPC, STS-B, NLI); none for single text.
            empty_texts: What a labelled row with an empty or whitespace-only text does: ``error`` stops before any
                work and says how many there are; ``drop`` leaves those rows out (and logs how many). The predict
                split never drops rows: it is answered one row per input.
            **kwargs: Shared data options (files, Hub dataset, batch sizes, ...): see ``TaskDataModule``.
        """
        super().__init__(**kwargs)
        if empty_texts not in ("error", "drop"):
            raise ConfigError("data.empty_texts", f"must be error or drop, got {empty_texts!r}")
        if text_pair_column is not None and text_pair_column == text_column:
            raise ConfigError(
                "data.text_pair_column",
                f"'{text_pair_column}' is also data.text_column: name the pair's second column, or drop the key",
            )
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.empty_texts = empty_texts

    @property
    def text_columns(self) -> list[str]:
        return [c for c in (self.text_column, self.text_pair_column) if c is not None]

    @property
    def pairs(self) -> bool:
        return self.text_pair_column is not None

    def check_target_columns(self, field: str, columns: list[str]) -> None:
        """Refuse a target column that is also a text column: the model would read the answer it is scored on.

        Args:
            field: The target's config field (``label_column``, ``label_columns``).
            columns: The target columns.
        """
        fields = {self.text_column: "text_column", self.text_pair_column: "text_pair_column"}
        for column in columns:
            if column in self.text_columns:
                raise ConfigError(
                    f"data.{field}",
                    f"'{column}' is also data.{fields[column]}: the model would read its own target; "
                    "give the target and the text their own columns",
                )

    # --- what a variant supplies ----------------------------------------------------------------------------

    @abstractmethod
    def check_targets(self, split: str, ds: datasets.Dataset) -> None:
        """Raise a ConfigError if a labelled split's targets are missing or invalid."""

    @abstractmethod
    def target_encoder(self, ds: datasets.Dataset) -> TargetEncoder:
        """A function from a batch of raw rows to their encoded targets; it must not reference ``self``."""

    @abstractmethod
    def target_fields(self) -> dict[str, Any]:
        """Target settings that change the encoded data (folded into the cache key)."""

    # --- shared ---------------------------------------------------------------------------------------------

    def drop_rows(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        """With ``empty_texts=drop``, a labelled split without its rows of empty or blank text."""
        if self.empty_texts != "drop" or split == "predict":
            return ds
        # A missing or non-text column is left for check_split to name.
        columns = [c for c in self.text_columns if c in ds.column_names and is_text(ds.features[c])]
        blank = sorted({row for c in columns for row in blank_rows(ds[c])})
        if not blank:
            return ds
        if len(blank) == len(ds):
            raise ConfigError("data.text_column", f"every row of the {split} split has empty text: nothing is left")
        rank_zero_info(f"data.empty_texts=drop: dropped {len(blank)} of {len(ds)} rows of the {split} split: no text")
        dropped = set(blank)
        return ds.select([row for row in range(len(ds)) if row not in dropped])

    def check_split(self, split: str, ds: datasets.Dataset) -> None:
        fields = {self.text_column: "text_column", self.text_pair_column: "text_pair_column"}
        if split == "predict":
            fix = "fill or remove those rows (a prediction is written for every input row)"
        else:
            fix = "fill or remove those rows, or set data.empty_texts=drop"
        for col in self.text_columns:
            if col not in ds.column_names:
                raise column_error(f"data.{fields[col]}", col, split, ds)
            check_texts(f"data.{fields[col]}", col, split, ds, blank_fix=fix)
        if split != "predict":
            self.check_targets(split, ds)

    def cache_fields(self) -> dict[str, Any]:
        return {"text": self.text_columns, "empty_texts": self.empty_texts, **self.target_fields()}

    def encode(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        targets = self.target_encoder(ds) if split != "predict" else None
        # Locals only (see map_rows).
        tokenizer, columns, max_length = self.tokenizer, self.text_columns, self.max_length

        def tokenize(batch: dict[str, list], rows: list[int] | None = None) -> dict[str, list]:
            out = tokenizer(*[batch[c] for c in columns], truncation=True, max_length=max_length)
            if targets is not None:
                out["labels"] = targets(batch)
            if rows is not None:
                out[ROW] = rows
            if DOMAIN in batch:
                out[DOMAIN] = batch[DOMAIN]
            return out

        # Test rows keep their index in the split, so a test can name the inputs it got wrong.
        return self.map_rows(ds, split, tokenize, with_indices=split == "test")

    @cached_property
    def _collator(self) -> DataCollatorWithPadding:
        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad rows into a batch; test rows' indices in their split and training rows' domains go under ``META``."""
        meta = [k for k in (ROW, DOMAIN) if k in features[0]]
        if not meta:
            return self._collator(features)
        batch = self._collator([{k: v for k, v in f.items() if k not in meta} for f in features])
        batch[META] = {k: torch.tensor([f[k] for f in features]) for k in meta}
        return batch

    def row_text(self, split: str) -> Callable[[int], tuple[str, str | None]]:
        """The input of a row of ``split`` as read, by its index: its text and its pair's second text (or None)."""
        ds, columns = self.raw[split], self.text_columns

        def text(row: int) -> tuple[str, str | None]:
            values = [str(ds[row][c]) for c in columns]
            return values[0], values[1] if len(values) > 1 else None

        return text
