"""Token classification (NER, POS, chunking) data: one sentence per row, one tag per word.

Sources: CoNLL-style column files (``.conll``/``.txt``), JSON/JSONL rows with a list of words and a list of tags, or a
Hub dataset whose tags are a ``Sequence(ClassLabel)`` (``conll2003``-style ``tokens``/``ner_tags``). Words are
tokenized with ``is_split_into_words=True`` and each word's tag goes to its first sub-token, as in Hugging Face's
``run_ner.py``. The predict split holds raw text, split at whitespace; the character span of every word travels with
the batch so predictions come back as entities with offsets into that text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import torch
from lightning.pytorch.utilities import rank_zero_warn
from transformers import DataCollatorForTokenClassification

from ftlit.core.datamodule import META, TaskDataModule, check_texts
from ftlit.core.labels import column_error, label_set, unknown_labels
from ftlit.errors import ConfigError
from ftlit.tasks.ner.metric import IGNORE_INDEX, split_tag

CONLL_SUFFIXES = (".conll", ".txt")
# Columns of the encoded predict split that the model reads under ``batch[META]`` (not backbone inputs).
WORD_IDS, WORD_SPANS, TEXT = "word_ids", "word_spans", "text"
_WORD = re.compile(r"\S+")


def read_conll(path: str, field: str, tag_column: int | None, tokens_column: str, tags_column: str) -> datasets.Dataset:
    """Read a CoNLL-style file: one token per line, whitespace-separated columns, a blank line between sentences.

    ``-DOCSTART-`` lines are document boundaries and are skipped.

    Args:
        path: The file.
        field: Config field named in errors (e.g. ``data.train_file``).
        tag_column: Index of the tag column (negative counts from the end); ``None`` reads tokens only.
        tokens_column: Name of the tokens column in the result.
        tags_column: Name of the tags column in the result.

    Returns:
        One row per sentence, with a list of tokens (and a list of tags unless ``tag_column`` is ``None``).

    Raises:
        ConfigError: The file is missing or has no sentences, or a line lacks the tag column.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(field, f"'{path}' is a folder, not a file: give the path of a CoNLL file in it")
    if not p.is_file():
        raise ConfigError(field, f"file '{path}' does not exist: check the path")
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    labels: list[str] = []
    with open(p, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if words:
                    tokens.append(words)
                    tags.append(labels)
                    words, labels = [], []
                continue
            if tag_column is not None:
                # Column 0 is the token itself: a line needs at least one more column.
                if len(cols) < 2 or not -len(cols) <= tag_column < len(cols):
                    raise ConfigError(
                        "data.tag_column",
                        f"line {number} of '{path}' has {len(cols)} column(s), no tag column {tag_column}: "
                        "expected 'token ... tag' per line",
                    )
                labels.append(cols[tag_column])
            words.append(cols[0])
    if words:
        tokens.append(words)
        tags.append(labels)
    if not tokens:
        raise ConfigError(field, f"file '{path}' has no sentences: give a file with data rows")
    words_feature = datasets.List(datasets.Value("string"))
    if tag_column is None:
        return datasets.Dataset.from_dict(
            {tokens_column: tokens}, features=datasets.Features({tokens_column: words_feature})
        )
    features = datasets.Features({tokens_column: words_feature, tags_column: words_feature})
    return datasets.Dataset.from_dict({tokens_column: tokens, tags_column: tags}, features=features)


def word_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of the whitespace-separated words of ``text``."""
    return [m.span() for m in _WORD.finditer(text)]


def _tag_names(feature: Any) -> Callable[[list], list[str | None]]:
    """A function mapping a row's raw tag values to tag names (``Sequence(ClassLabel)`` ids become names)."""
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return lambda row: [inner.int2str(int(v)) if v is not None and v >= 0 else None for v in row]
    return lambda row: [None if v is None else str(v) for v in row]


def align_labels(word_ids: list[int | None], tag_ids: list[int], inside: list[int] | None) -> list[int]:
    """Per-token label ids for one sentence, from its per-word tag ids (as ``run_ner.py`` aligns them).

    Args:
        word_ids: The word of each token (``None`` for special tokens), from ``BatchEncoding.word_ids``.
        tag_ids: Tag id of each word.
        inside: To label every sub-token: for each tag id, the id of its ``I-`` form (``B-X`` -> ``I-X``), given to
            a word's continuation sub-tokens. ``None`` labels the first sub-token only.

    Returns:
        The word's tag id on its first sub-token, -100 (ignored) on special tokens, and on continuation sub-tokens
        -100 or the ``inside`` form of the word's tag.
    """
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE_INDEX)
        elif word != previous:
            labels.append(tag_ids[word])
        else:
            labels.append(IGNORE_INDEX if inside is None else inside[tag_ids[word]])
        previous = word
    return labels


def inside_tags(names: list[str]) -> list[int]:
    """For each tag id, the id of its ``I-`` form (``B-X`` -> ``I-X`` where ``I-X`` exists), else itself."""
    index = {name: i for i, name in enumerate(names)}
    return [index.get(f"I-{name[2:]}", i) if name.startswith("B-") else i for i, name in enumerate(names)]


def _is_word_list(feature: Any) -> bool:
    inner = getattr(feature, "feature", None)
    return isinstance(inner, datasets.Value) and inner.dtype in ("string", "large_string")


class TokenClassificationDataModule(TaskDataModule):
    """Named-entity recognition (or any per-word tagging) from CoNLL files, JSON/JSONL rows or a Hub dataset."""

    def __init__(
        self,
        tokens_column: str = "tokens",
        tags_column: str = "tags",
        text_column: str = "text",
        tag_column: int = -1,
        labels: list[str] | None = None,
        label_all_subtokens: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            tokens_column: Column holding each sentence's words (a list of strings); CoNLL files are read into it.
            tags_column: Column holding each sentence's tags (a list of strings, or a ``Sequence(ClassLabel)`` on
                the Hub, e.g. ``ner_tags``), one per word; CoNLL files are read into it.
            text_column: Column of raw text in the predict split, split into words at whitespace; without it, the
                predict split's ``tokens_column`` is used (offsets then refer to the words joined by spaces).
            tag_column: Which whitespace-separated column of a CoNLL file holds the tag (``-1``: the last, as in
                CoNLL-2003's ``token POS chunk NER``; column 0 is the token).
            labels: Tag names in id order, e.g. ``[O, B-PER, I-PER]``; by default the ClassLabel's names, or every
                tag seen in train, sorted.
            label_all_subtokens: Train and score every sub-token of a word, not just the first; continuation
                sub-tokens of a ``B-X`` word get ``I-X`` (``run_ner.py``'s ``label_all_tokens``).
            **kwargs: Shared data options (files, Hub dataset, batch sizes, ...): see ``TaskDataModule``.
                Local files may also be CoNLL column files (``.conll`` or ``.txt``).
        """
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if tag_column == 0:
            raise ConfigError("data.tag_column", "column 0 is the token: choose the tag column, e.g. -1 (the last)")
        self.tokens_column = tokens_column
        self.tags_column = tags_column
        self.text_column = text_column
        self.tag_column = tag_column
        self.given_labels = labels
        self.label_all_subtokens = label_all_subtokens

    # --- sources --------------------------------------------------------------------------------------------

    def load_file(self, path: str, field: str) -> datasets.Dataset:
        """One local file: CoNLL column files are read here, every other format by ``sources.load_file``.

        Args:
            path: The file.
            field: Config field named in errors.
        """
        if Path(path).suffix.lower() not in CONLL_SUFFIXES:
            return super().load_file(path, field)
        tag_column = None if field == "data.predict_file" else self.tag_column
        return read_conll(path, field, tag_column, self.tokens_column, self.tags_column)

    # --- labels and checks ----------------------------------------------------------------------------------

    def _check_columns(self, split: str, ds: datasets.Dataset) -> None:
        for field, column in (("tokens_column", self.tokens_column), ("tags_column", self.tags_column)):
            if column not in ds.column_names:
                raise column_error(f"data.{field}", column, split, ds)
        if not _is_word_list(ds.features[self.tokens_column]):
            raise ConfigError(
                "data.tokens_column",
                f"column '{self.tokens_column}' of the {split} split must hold lists of words, "
                f"got {ds.features[self.tokens_column]}",
            )
        if getattr(ds.features[self.tags_column], "feature", None) is None:
            raise ConfigError(
                "data.tags_column",
                f"column '{self.tags_column}' of the {split} split must hold lists of tags, "
                f"got {ds.features[self.tags_column]}",
            )

    @cached_property
    def label_names(self) -> list[str]:
        """Tag names in id order: given, the train split's ClassLabel names, or every tag seen in train, sorted."""

        def discover(train: datasets.Dataset) -> list[str]:
            self._check_columns("train", train)
            inner = train.features[self.tags_column].feature
            if isinstance(inner, datasets.ClassLabel):
                # run_ner.py keeps the dataset's own id order, so ids mean what the dataset card says.
                return list(inner.names)
            to_names = _tag_names(train.features[self.tags_column])
            return sorted({t for row in train[self.tags_column] for t in to_names(row or []) if t is not None})

        names, field = label_set(self.given_labels, self.raw, discover, "data.tags_column", what="tags")
        for name in names:
            try:
                split_tag(name)
            except ValueError:
                raise ConfigError(
                    field, f"tag '{name}' is not an IOB tag: use O, B-TYPE, I-TYPE (or E-TYPE, S-TYPE)"
                ) from None
        if not any(name != "O" for name in names):
            raise ConfigError(field, f"no entity tags, only {names}: label some entities (B-TYPE, I-TYPE)")
        return names

    def check_split(self, split: str, ds: datasets.Dataset) -> None:
        if split == "predict":
            if self.text_column in ds.column_names:
                check_texts("data.text_column", self.text_column, split, ds)
            elif self.tokens_column not in ds.column_names or not _is_word_list(ds.features[self.tokens_column]):
                raise ConfigError(
                    "data.text_column",
                    f"column '{self.text_column}' not in the predict split (columns: {', '.join(ds.column_names)}): "
                    f"give raw text in it, or lists of words in '{self.tokens_column}'",
                )
            return
        self._check_columns(split, ds)
        to_names = _tag_names(ds.features[self.tags_column])
        seen: set[str] = set()
        for row, (words, tags) in enumerate(zip(ds[self.tokens_column], ds[self.tags_column], strict=True)):
            for field, value in (("tokens_column", words), ("tags_column", tags)):
                if value is None:
                    raise ConfigError(f"data.{field}", f"row {row} of the {split} split has none: give a list")
            if len(words) != len(tags):
                raise ConfigError(
                    "data.tags_column",
                    f"row {row} of the {split} split has {len(words)} tokens but {len(tags)} tags: give one per token",
                )
            names = to_names(tags)
            if None in names:
                raise ConfigError("data.tags_column", f"row {row} of the {split} split has a missing tag")
            seen.update(names)
        error = unknown_labels(split, seen, self.label_names, self.given_labels is not None, what="tags")
        if error is not None:
            raise error

    def cache_fields(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens_column,
            "tags": self.tags_column,
            "text": self.text_column,
            "tag_column": self.tag_column,
            "labels": self.label_names,
            "label_all_subtokens": self.label_all_subtokens,
        }

    # --- encoding -------------------------------------------------------------------------------------------

    def _warn_truncated(self, split: str, count: int, total: int) -> None:
        if count:
            rank_zero_warn(
                f"{count} of {total} sentences in the {split} split are longer than data.max_length="
                f"{self.max_length} tokens and were truncated: their last words get no tag and are not scored"
            )

    def encode(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        if split == "predict":
            return self._encode_text(ds)
        tag_id = {name: i for i, name in enumerate(self.label_names)}
        to_names = _tag_names(ds.features[self.tags_column])
        inside = inside_tags(self.label_names) if self.label_all_subtokens else None
        # Locals only (see map_rows).
        tokenizer, max_length, tokens_column, tags_column = (
            self.tokenizer,
            self.max_length,
            self.tokens_column,
            self.tags_column,
        )
        truncated = 0

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            nonlocal truncated
            out = tokenizer(batch[tokens_column], is_split_into_words=True, truncation=True, max_length=max_length)
            out["labels"] = [
                align_labels(out.word_ids(i), [tag_id[t] for t in to_names(tags)], inside)
                for i, tags in enumerate(batch[tags_column])
            ]
            truncated += sum(bool(e.overflowing) for e in out.encodings)
            return out

        encoded = self.map_rows(ds, split, tokenize)  # never from datasets' cache: the count must see every row
        self._warn_truncated(split, truncated, len(ds))
        return encoded

    def _encode_text(self, ds: datasets.Dataset) -> datasets.Dataset:
        """Raw text split at whitespace, tokenized as words; keeps each token's word and each word's characters."""
        has_text = self.text_column in ds.column_names
        tokenizer, max_length, text_column, tokens_column = (
            self.tokenizer,
            self.max_length,
            self.text_column,
            self.tokens_column,
        )
        truncated = 0

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            nonlocal truncated
            texts = batch[text_column] if has_text else [" ".join(w) for w in batch[tokens_column]]
            spans = [word_spans(t) for t in texts]
            words = [[t[a:b] for a, b in s] for t, s in zip(texts, spans, strict=True)]
            out = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
            # -1 marks special tokens: the column must be one integer type for Arrow.
            out[WORD_IDS] = [[-1 if w is None else w for w in out.word_ids(i)] for i in range(len(texts))]
            out[WORD_SPANS] = [[list(span) for span in s] for s in spans]
            out[TEXT] = texts
            truncated += sum(bool(e.overflowing) for e in out.encodings)
            return out

        encoded = self.map_rows(ds, "predict", tokenize)
        self._warn_truncated("predict", truncated, len(ds))
        return encoded

    # --- batching -------------------------------------------------------------------------------------------

    @cached_property
    def _collator(self) -> DataCollatorForTokenClassification:
        return DataCollatorForTokenClassification(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad rows into a batch; a predict batch adds ``word_ids`` (-1 padded), ``word_spans`` and ``text`` under
        ``META``."""
        if WORD_IDS not in features[0]:
            return self._collator(features)
        extra = {k: [f[k] for f in features] for k in (WORD_IDS, WORD_SPANS, TEXT)}
        batch = self._collator([{k: v for k, v in f.items() if k not in extra} for f in features])
        length = batch["input_ids"].shape[1]
        most = max(len(s) for s in extra[WORD_SPANS])
        spans = torch.full((len(features), most, 2), -1, dtype=torch.long)
        for i, s in enumerate(extra[WORD_SPANS]):
            if s:
                spans[i, : len(s)] = torch.tensor(s)
        batch[META] = {
            WORD_IDS: torch.tensor([ids + [-1] * (length - len(ids)) for ids in extra[WORD_IDS]]),
            WORD_SPANS: spans,
            TEXT: extra[TEXT],
        }
        return batch
