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
from typing_extensions import override

from ftlit.core.datamodule import META, TaskDataModule, blank_rows, check_texts, is_text
from ftlit.core.labels import column_error
from ftlit.core.windows import flatten_windows
from ftlit.errors import ConfigError
from ftlit.tasks.text.long_text import (
    LONG,
    POOL,
    WINDOW_ROW,
    WINDOWS,
    LongText,
    Reading,
    WindowPool,
    check_room,
    check_settings,
)

# A test row's index in its split (under ``batch[META]``), for naming the inputs a test got wrong.
ROW = "row"
# A training row's domain (0: labelled source, 1: unlabelled target), for domain-adversarial training.
DOMAIN = "domain"
# Turns a batch of raw rows (``{column: values}``) into one target per row.
TargetEncoder = Callable[[dict[str, list]], list]
# The splits each stage reads, for the line saying how many of their rows are longer than the window.
STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("predict",)}


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
        long_text: LongText = "truncate",
        head_tokens: int | None = None,
        stride: int | None = None,
        window_pool: WindowPool = "mean",
        train_windows: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            text_column: Column holding the input text.
            text_pair_column: Second text column for sentence-pair tasks (MRPC, STS-B, NLI); none for single text.
            empty_texts: What a labelled row with an empty or whitespace-only text does: ``error`` stops before any
                work and says how many there are; ``drop`` leaves those rows out (and logs how many). The predict
                split never drops rows: it is answered one row per input.
            long_text: How a row longer than ``max_length`` tokens is read (fit, test and predict log how many are):
                ``truncate``, its first tokens; ``head_tail``, its first ``head_tokens`` and as many of its last as
                fit (Sun et al. 2019 found it best on long reviews; single texts only); ``windows``, all of it, in
                overlapping windows of ``max_length`` tokens whose logits are pooled into the row's
                (``window_pool``) in validation, test, predict and serve, and in training with ``train_windows``.
                For text pairs the windows slide over the second text, the first repeated in each. Saved with the
                checkpoint and the export, so serving reads rows the same way.
            head_tokens: With ``head_tail``: how many of the first tokens are kept, the rest of the window holding
                the last ones; default a quarter of ``max_length`` (128 + 382 for 512, as Sun et al.).
            stride: With ``windows``: tokens two neighbouring windows share (as QA's ``doc_stride``), below
                ``max_length`` less the special tokens; default a quarter of ``max_length``.
            window_pool: With ``windows``: a row's logits are its windows' ``mean``, or their ``max`` per label (one
                window sure of a label decides; suits a deciding passage anywhere in a long text).
            train_windows: With ``windows``: train on all windows of a long row too, the loss on the row's pooled
                logits (``batch_size`` still counts rows, so a batch holds more windows); off, training reads each
                row's first window, as ``truncate`` does.
            **kwargs: Shared data options (files, Hub dataset, batch sizes, ...): see ``TaskDataModule``.
        """
        super().__init__(**kwargs)
        if empty_texts not in ("error", "drop"):
            raise ConfigError("data.empty_texts", f"must be error or drop, got {empty_texts!r}")
        check_settings(long_text, head_tokens, stride, window_pool, self.max_length, text_pair_column is not None)
        if text_pair_column is not None and text_pair_column == text_column:
            raise ConfigError(
                "data.text_pair_column",
                f"'{text_pair_column}' is also data.text_column: name the pair's second column, or drop the key",
            )
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.empty_texts = empty_texts
        self.long_text = long_text
        self.head_tokens = self.max_length // 4 if head_tokens is None else head_tokens
        self.stride = self.max_length // 4 if stride is None else stride
        self.window_pool = window_pool
        self.train_windows = train_windows
        self._told_long: set[str] = set()  # the splits whose long rows were counted in the log

    @property
    def text_columns(self) -> list[str]:
        return [c for c in (self.text_column, self.text_pair_column) if c is not None]

    @property
    def pairs(self) -> bool:
        return self.text_pair_column is not None

    def reading(self, split: str) -> Reading:
        """How ``split``'s rows are tokenized: windowed (all windows kept per row) under ``windows``, except
        training's without ``train_windows``."""
        windowed = self.long_text == "windows" and (split != "train" or self.train_windows)
        return Reading(self.long_text, self.max_length, self.head_tokens, self.stride, windowed)

    def _check_lengths(self, tok: Any) -> None:
        super()._check_lengths(tok)
        if not self.pairs:  # a pair's room depends on its first text: see check_split
            check_room(self.reading("test"), tok.num_special_tokens_to_add(pair=False))

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
        if self.pairs and self.long_text == "windows":
            self._check_pair_room(split, ds)
        if split != "predict":
            self.check_targets(split, ds)

    def _check_pair_room(self, split: str, ds: datasets.Dataset) -> None:
        """Windows of a pair repeat its first text: the longest one leaves room for more than ``stride`` tokens of
        the second, or the tokenizer cannot slide (it fails mid-encoding)."""
        tokenizer = self.tokenizer
        lengths = [len(ids) for ids in tokenizer(list(ds[self.text_column]), add_special_tokens=False)["input_ids"]]
        row = max(range(len(lengths)), key=lengths.__getitem__)
        room = self.max_length - tokenizer.num_special_tokens_to_add(pair=True) - lengths[row]
        if self.stride >= room:
            raise ConfigError(
                "data.stride",
                f"{self.stride} leaves no room to slide: row {row} of the {split} split has {lengths[row]} tokens in "
                f"'{self.text_column}', which every window repeats, so a window of data.max_length={self.max_length} "
                f"holds {max(room, 0)} of '{self.text_pair_column}'; lower the stride below that, raise max_length, "
                "or put the long text second",
            )

    def cache_fields(self) -> dict[str, Any]:
        long_text = [self.long_text, self.head_tokens, self.stride, self.train_windows]
        return {
            "text": self.text_columns,
            "empty_texts": self.empty_texts,
            "long_text": long_text,
            **self.target_fields(),
        }

    def encode(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        targets = self.target_encoder(ds) if split != "predict" else None
        # Locals only (see map_rows).
        tokenizer, columns, reading = self.tokenizer, self.text_columns, self.reading(split)

        def tokenize(batch: dict[str, list], rows: list[int] | None = None) -> dict[str, list]:
            out = reading.tokenize(tokenizer, [batch[c] for c in columns])
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
        """Pad rows into a batch; test rows' indices in their split and training rows' domains go under ``META``.

        Windowed rows (``long_text=windows``) are flattened into their windows, one target per row: ``META`` adds
        the row of each window, each row's window count and the pooling, which the model applies to the logits.
        """
        meta = [k for k in (ROW, DOMAIN) if k in features[0]]
        rows = {k: torch.tensor([f[k] for f in features]) for k in meta}
        if isinstance(features[0]["input_ids"][0], list):
            inputs = tuple(k for k in features[0] if k not in (*meta, LONG, "labels"))
            windows, owner = flatten_windows(features, inputs)
            batch = self._collator(windows)
            if "labels" in features[0]:
                batch["labels"] = torch.tensor([f["labels"] for f in features])
            counts = torch.tensor([len(f["input_ids"]) for f in features])
            batch[META] = rows | {WINDOW_ROW: torch.tensor(owner), WINDOWS: counts, POOL: self.window_pool}
            return batch
        batch = self._collator([{k: v for k, v in f.items() if k not in (*meta, LONG)} for f in features])
        if rows:
            batch[META] = rows
        return batch

    @override
    def setup(self, stage: str | None = None) -> None:
        """Load the cached splits, and say once how many rows of the stage's splits are longer than the window."""
        super().setup(stage)
        assert self.datasets is not None
        splits = [s for s in STAGE_SPLITS.get(stage or "", tuple(self.datasets)) if s in self.datasets]
        counts = {s: (sum(self.datasets[s][LONG]), len(self.datasets[s])) for s in splits if s not in self._told_long}
        self._told_long.update(counts)
        line = self.long_rows_line({s: c for s, c in counts.items() if c[0]})
        if line is not None:
            rank_zero_info(line)

    def long_rows_line(self, counts: dict[str, tuple[int, int]]) -> str | None:
        """The log line for the rows longer than the window (``{split: (long, rows)}``); none when there are none."""
        if not counts:
            return None
        where = ", ".join(f"{n} of {total} {split} rows" for split, (n, total) in counts.items())
        if self.long_text == "truncate":
            how = f"data.long_text=truncate reads their first {self.max_length} only (head_tail or windows read more)"
        elif self.long_text == "head_tail":
            how = (
                f"data.long_text=head_tail reads their first {self.head_tokens} tokens and as many of their last as fit"
            )
        else:
            how = (
                f"data.long_text=windows reads them whole in windows sharing data.stride={self.stride} tokens, their "
                f"logits pooled by {self.window_pool}"
            )
            if "train" in counts and not self.train_windows:
                how += " (training reads their first window: data.train_windows=true trains on all)"
        return f"ftlit: {where} are longer than data.max_length={self.max_length} tokens; {how}"

    def row_text(self, split: str) -> Callable[[int], tuple[str, str | None]]:
        """The input of a row of ``split`` as read, by its index: its text and its pair's second text (or None)."""
        ds, columns = self.raw[split], self.text_columns

        def text(row: int) -> tuple[str, str | None]:
            values = [str(ds[row][c]) for c in columns]
            return values[0], values[1] if len(values) > 1 else None

        return text
