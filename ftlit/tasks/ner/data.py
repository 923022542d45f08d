"""Token classification (NER, POS, chunking) data: one sentence per row, one tag per word.

Sources: CoNLL-style column files (``.conll``/``.txt``, the character-per-line files of Chinese corpora too),
JSON/JSONL rows with a list of words (or a raw text, split into words by ``data.words``) and a list of tags, or a Hub
dataset whose tags are a ``Sequence(ClassLabel)`` (``conll2003``-style ``tokens``/``ner_tags``). BIOES (IOBES) and BMES
tags are read into IOB2 (``data.tag_scheme``, :mod:`ftlit.tasks.ner.schemes`). Words are tokenized with
``is_split_into_words=True`` and each word's tag goes to its first sub-token, as in Hugging Face's ``run_ner.py``.

Training rows are sentences cut at ``max_length`` (or, with ``data.train_windows``, overlapping windows of
``max_length`` tokens sharing ``data.stride``). Validation, test and predict rows are whole sentences, each holding
all its windows, as QA's contexts do (the collate flattens them): every word's tag is read once, at its first
sub-token in the window where that token is furthest from a cut edge, so no word goes untagged or is scored twice.
The predict split holds raw text, split into words by :mod:`ftlit.core.words` (``data.words``); the character span of
every word travels with the batch so predictions come back as entities with offsets into that text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import datasets
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from transformers import DataCollatorForTokenClassification, PreTrainedTokenizerBase

from ftlit.core import words as word_splitters
from ftlit.core.datamodule import META, TaskDataModule, check_texts, is_text
from ftlit.core.labels import column_error, label_set, unknown_labels
from ftlit.core.windows import flatten_windows, group_windows
from ftlit.errors import ConfigError
from ftlit.tasks.ner import schemes
from ftlit.tasks.ner.metric import IGNORE_INDEX, split_tag
from ftlit.tasks.ner.schemes import TagScheme

CONLL_SUFFIXES = (".conll", ".txt")
# Columns of the encoded evaluation and predict splits that the model reads under ``batch[META]`` (not backbone
# inputs): per window token, the word whose tag is read there (-1 elsewhere); each word's characters and the text.
WORD_IDS, WORD_SPANS, TEXT = "word_ids", "word_spans", "text"
# Evaluation and predict batches: the row (sentence) in the batch of each window.
WINDOW_ROW = "window_row"
# Bumped when the encoded layout changes, so that an old cache is never read as a new one.
LAYOUT_VERSION = 2
Words = Literal["auto", "whitespace", "bert", "characters"]
# What `words: auto` means for a new fit.
FIT_WORDS = "bert"
# What a checkpoint (or export) of an ftlit from before data.words and data.tag_scheme did: split predict text at
# whitespace, read tags as written.
_BEFORE = {"words": "whitespace", "tag_scheme": "none"}


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
    """``(start, end)`` character offsets of the whitespace-separated words of ``text`` (``data.words: whitespace``;
    :func:`ftlit.core.words.split` gives any splitter's)."""
    return word_splitters.whitespace(text)


def checkpoint_words(data_hparams: Mapping[str, Any]) -> str:
    """The word splitter a checkpoint's NER data module used (its ``datamodule_hyper_parameters``; an export's
    ``ftlit.json`` ``data.init_args``): what predict, serve and explain must split with. ``whitespace`` for one from
    before ``data.words``."""
    words = data_hparams.get("words", _BEFORE["words"])
    return FIT_WORDS if words == "auto" else str(words)


def words_mismatch(recorded: str, used: str) -> ConfigError | None:
    """The error for data split into words otherwise than the checkpoint's model was trained on (``None`` if they
    agree, or ``used`` is ``auto``, which takes the checkpoint's)."""
    if used in ("auto", recorded):
        return None
    return ConfigError(
        "data.words",
        f"the checkpoint was trained on words split by {recorded}, this data splits them by {used}: "
        f"set data.words: {recorded}",
    )


def _tag_names(feature: Any) -> Callable[[list], list[str | None]]:
    """A function mapping a row's raw tag values to tag names (``Sequence(ClassLabel)`` ids become names)."""
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return lambda row: [inner.int2str(int(v)) if v is not None and v >= 0 else None for v in row]
    return lambda row: [None if v is None else str(v) for v in row]


def align_labels(
    word_ids: list[int | None], tag_ids: list[int], inside: list[int] | None, firsts: list[bool] | None = None
) -> list[int]:
    """Per-token label ids for one sentence (or window), from its per-word tag ids (as ``run_ner.py`` aligns them).

    Args:
        word_ids: The word of each token (``None`` for special tokens), from ``BatchEncoding.word_ids``.
        tag_ids: Tag id of each word.
        inside: To label every sub-token: for each tag id, the id of its ``I-`` form (``B-X`` -> ``I-X``), given to
            a word's continuation sub-tokens. ``None`` labels the first sub-token only.
        firsts: Whether each token is its word's first sub-token (:func:`first_subtokens`: a window may start
            inside a word); by default a token whose word differs from the previous token's.

    Returns:
        The word's tag id on its first sub-token, -100 (ignored) on special tokens, and on continuation sub-tokens
        -100 or the ``inside`` form of the word's tag.
    """
    if firsts is None:
        firsts = [word != previous for word, previous in zip(word_ids, [None, *word_ids], strict=False)]
    labels = []
    for word, first in zip(word_ids, firsts, strict=True):
        if word is None:
            labels.append(IGNORE_INDEX)
        elif first:
            labels.append(tag_ids[word])
        else:
            labels.append(IGNORE_INDEX if inside is None else inside[tag_ids[word]])
    return labels


def tokenize_windows(
    tokenizer: PreTrainedTokenizerBase, words: list[list[str]], max_length: int, stride: int, inputs: list[str]
) -> dict[str, list[list]]:
    """Tokenize sentences of words into windows of at most ``max_length`` tokens, consecutive windows of a sentence
    sharing ``stride`` tokens (the tokenizer's ``return_overflowing_tokens``, as QA's ``doc_stride``).

    Returns:
        Per sentence, its windows in order (:func:`~ftlit.core.windows.group_windows`): each of ``inputs`` and
        ``word_ids`` (the word of each token, ``None`` on special tokens).
    """
    enc = tokenizer(
        words,
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
    )
    owner = list(enc["overflow_to_sample_mapping"])
    per_window = {k: enc[k] for k in inputs} | {WORD_IDS: [enc.word_ids(w) for w in range(len(owner))]}
    return group_windows(per_window, owner, len(words))


def first_subtokens(windows: list[list[int | None]], stride: int) -> list[list[bool]]:
    """For one sentence's windows (each token's word, ``None`` on special tokens), whether each token is its word's
    first sub-token: a window after the first starts ``stride`` tokens before the previous one ended, which may be
    inside a word."""
    first: dict[int, int] = {}  # each word's first sub-token, counted over the sentence's text tokens
    start = 0  # where the window's first text token is, so counted
    out = []
    for ids in windows:
        text = [t for t, word in enumerate(ids) if word is not None]
        lo = text[0] if text else 0
        flags = [False] * len(ids)
        for t in text:
            at = start + t - lo
            flags[t] = first.setdefault(ids[t], at) == at
        out.append(flags)
        start += len(text) - stride
    return out


def reading_positions(windows: list[list[int | None]], firsts: list[list[bool]]) -> list[list[int]]:
    """Where each word of one sentence is read, once: per window token, the word's index at the token that reads it
    and -1 elsewhere. A word is read at its first sub-token, in the window where that token is furthest from an
    edge where the window cuts the sentence (its own start and end cut nothing)."""
    best: dict[int, tuple[float, int, int]] = {}  # word -> (distance to the nearer cut, window, token)
    last = len(windows) - 1
    for w, (ids, flags) in enumerate(zip(windows, firsts, strict=True)):
        text = [t for t, word in enumerate(ids) if word is not None]
        for t in text:
            if not flags[t]:
                continue
            distance = min(t - text[0] if w > 0 else math.inf, text[-1] - t if w < last else math.inf)
            word = ids[t]
            if word not in best or distance > best[word][0]:
                best[word] = (distance, w, t)
    reads = [[-1] * len(ids) for ids in windows]
    for word, (_, w, t) in best.items():
        reads[w][t] = word
    return reads


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
        words: Words = "auto",
        tag_scheme: TagScheme = "auto",
        stride: int | None = None,
        train_windows: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            tokens_column: Column holding each sentence's words (a list of strings); CoNLL files are read into it.
            tags_column: Column holding each sentence's tags (a list of strings, or a ``Sequence(ClassLabel)`` on
                the Hub, e.g. ``ner_tags``), one per word; CoNLL files are read into it.
            text_column: Column of raw text, split into words by ``words``: the predict split's input (without it,
                the predict split's ``tokens_column`` is used, and offsets refer to the words joined by spaces); a
                labelled file without ``tokens_column`` may give its sentences here, with one tag per word.
            tag_column: Which whitespace-separated column of a CoNLL file holds the tag (``-1``: the last, as in
                CoNLL-2003's ``token POS chunk NER``; column 0 is the token).
            labels: Tag names in id order, e.g. ``[O, B-PER, I-PER]``; by default the ClassLabel's names, or every
                tag seen in train, sorted (after ``tag_scheme`` read them into IOB2).
            label_all_subtokens: Train every sub-token of a word, not just the first; continuation sub-tokens of a
                ``B-X`` word get ``I-X`` (``run_ner.py``'s ``label_all_tokens``). Evaluation and predictions read
                each word at its first sub-token.
            words: How raw text is split into words (each word gets one tag): ``bert`` as BERT's basic tokenization
                (every CJK ideograph and every punctuation mark a word, other scripts split at whitespace),
                ``whitespace``, or ``characters`` (every character a word: Thai, Japanese). ``auto``: what the
                checkpoint recorded when testing, predicting or serving one (``whitespace`` for a checkpoint from
                before this key), ``bert`` for a new fit. The checkpoint and ``ftlit export`` record the splitter.
            tag_scheme: How the files write their tags: ``iob2`` (B-, I-), ``bioes``/``iobes`` (B-, I-, E-, S-) or
                ``bmes`` (B-, M-, E-, S-), read into IOB2; ``auto`` tells each split's scheme from its tags (BMES if
                any ``M-``, BIOES if any ``E-``/``S-``); ``none`` keeps the tags as written (the model then learns
                E-/S- tags).
            stride: Tokens shared by consecutive windows of a sentence longer than ``max_length`` (default: a
                quarter of ``max_length``). Validation, test and predict always read long sentences in windows,
                each word from the window where it is furthest from a cut; training does with ``train_windows``.
            train_windows: Train on every window of a sentence longer than ``max_length`` instead of cutting it
                there (its last words then go unlearnt, with a warning).
            **kwargs: Shared data options (files, Hub dataset, batch sizes, ...): see ``TaskDataModule``.
                Local files may also be CoNLL column files (``.conll`` or ``.txt``).
        """
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if tag_column == 0:
            raise ConfigError("data.tag_column", "column 0 is the token: choose the tag column, e.g. -1 (the last)")
        if words != "auto":
            word_splitters.splitter(words, "data.words")
        if tag_scheme not in get_args(TagScheme):
            raise ConfigError(
                "data.tag_scheme", f"{tag_scheme!r} is not a tag scheme: use {', '.join(get_args(TagScheme))}"
            )
        if stride is not None and not 0 <= stride < self.max_length:
            raise ConfigError(
                "data.stride",
                f"must be >= 0 and below data.max_length={self.max_length} (consecutive windows share that many "
                f"tokens), got {stride}",
            )
        self.tokens_column = tokens_column
        self.tags_column = tags_column
        self.text_column = text_column
        self.tag_column = tag_column
        self.given_labels = labels
        self.label_all_subtokens = label_all_subtokens
        # The splitter of a new fit; the CLI and ftlit serve resolve `auto` to what a checkpoint recorded first.
        self.words = FIT_WORDS if words == "auto" else words
        self.hparams.words = self.words  # the checkpoint records the splitter used, never "auto"
        self.tag_scheme = tag_scheme
        self.stride = self.max_length // 4 if stride is None else stride
        self.train_windows = train_windows
        self._schemes: dict[str, str] = {}

    @classmethod
    def checkpoint_settings(cls, given: Mapping[str, Any], saved: Mapping[str, Any]) -> dict[str, Any]:
        """``words`` and ``tag_scheme`` left at ``auto`` take the checkpoint's: the splitter it trained with (an
        older ftlit's split at whitespace and read tags as written); another splitter than its is refused."""
        error = words_mismatch(checkpoint_words(saved), given.get("words", "auto"))
        if error is not None:
            raise error
        return {key: saved.get(key, before) for key, before in _BEFORE.items() if given.get(key, "auto") == "auto"}

    def split_words(self, text: str) -> list[tuple[int, int]]:
        """The ``(start, end)`` spans of ``text``'s words, as ``data.words`` splits it."""
        return word_splitters.split(text, self.words)

    # --- sources --------------------------------------------------------------------------------------------

    def load_file(self, path: str, field: str) -> datasets.Dataset:
        """One local file: CoNLL column files are read here, every other format by ``sources.load_file``. Labelled
        rows of raw text (``text_column``, no ``tokens_column``) are split into words by ``data.words``.

        Args:
            path: The file.
            field: Config field named in errors.
        """
        if Path(path).suffix.lower() in CONLL_SUFFIXES:
            tag_column = None if field == "data.predict_file" else self.tag_column
            return read_conll(path, field, tag_column, self.tokens_column, self.tags_column)
        ds = super().load_file(path, field)
        columns = ds.column_names
        if field == "data.predict_file" or self.tokens_column in columns or self.text_column not in columns:
            return ds
        if self.tags_column in columns and is_text(ds.features[self.text_column]):
            split, column = word_splitters.splitter(self.words), self.text_column
            words = [None if t is None else [t[a:b] for a, b in split(t)] for t in ds[column]]
            ds = ds.add_column(self.tokens_column, words, feature=datasets.List(datasets.Value("string")))
        return ds

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

    def scheme(self, split: str, ds: datasets.Dataset) -> str:
        """The tag scheme a labelled split is read with: ``data.tag_scheme``, or under ``auto`` the one its tags
        are written in (:func:`~ftlit.tasks.ner.schemes.detect`)."""
        if self.tag_scheme != "auto":
            return schemes.canonical(self.tag_scheme)
        if split not in self._schemes:
            to_names = _tag_names(ds.features[self.tags_column])
            rows = ([t for t in to_names(row or []) if t is not None] for row in ds[self.tags_column])
            self._schemes[split] = schemes.detect(rows)
        return self._schemes[split]

    @cached_property
    def label_names(self) -> list[str]:
        """Tag names in id order: given, the train split's ClassLabel names, or every tag seen in train, sorted; read
        into IOB2 by the split's tag scheme."""

        def discover(train: datasets.Dataset) -> list[str]:
            self._check_columns("train", train)
            scheme = self.scheme("train", train)
            inner = train.features[self.tags_column].feature
            if isinstance(inner, datasets.ClassLabel):
                # run_ner.py keeps the dataset's own id order, so ids mean what the dataset card says.
                return list(dict.fromkeys(schemes.to_iob2(name, scheme) for name in inner.names))
            to_names = _tag_names(train.features[self.tags_column])
            rows = train[self.tags_column]
            return sorted({schemes.to_iob2(t, scheme) for row in rows for t in to_names(row or []) if t is not None})

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
        scheme = self.scheme(split, ds)
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
            found = schemes.problem(names, scheme)
            if found is not None:
                raise self._scheme_error(split, row, names, scheme, *found)
            seen.update(schemes.to_iob2(name, scheme) for name in names)
        error = unknown_labels(split, seen, self.label_names, self.given_labels is not None, what="tags")
        if error is not None:
            raise error

    def _scheme_error(
        self, split: str, row: int, tags: list[str], scheme: str, at: int, problem: str, of_scheme: bool
    ) -> ConfigError:
        """The one line for a tag the split's scheme cannot read: the tag, where it is, and why."""
        where = f"tag '{tags[at]}' at word {at} of row {row} of the {split} split"
        if not of_scheme:
            return ConfigError("data.tags_column", f"{where} {problem}")
        if self.tag_scheme != "auto":
            how = f"data.tag_scheme is {self.tag_scheme}: set the scheme the file is written in"
        else:
            marks = "M-" if scheme == "bmes" else "E-/S-"
            how = (
                f"the split has {marks} tags, so auto reads it as {schemes.NAMES[scheme]}: a file that mixes "
                f"{schemes.NAMES[scheme]} with IOB2 must be written in one scheme"
            )
        return ConfigError("data.tag_scheme", f"{where} {problem} ({how})")

    def cache_fields(self) -> dict[str, Any]:
        return {
            "layout": LAYOUT_VERSION,
            "tokens": self.tokens_column,
            "tags": self.tags_column,
            "text": self.text_column,
            "tag_column": self.tag_column,
            "labels": self.label_names,
            "label_all_subtokens": self.label_all_subtokens,
            "words": self.words,
            "tag_scheme": self.tag_scheme,
            "stride": self.stride,
            "train_windows": self.train_windows,
        }

    def _check_lengths(self, tok: PreTrainedTokenizerBase) -> None:
        super()._check_lengths(tok)
        room = self.max_length - tok.num_special_tokens_to_add(pair=False)
        if self.stride >= room:
            raise ConfigError(
                "data.stride",
                f"{self.stride} leaves no room to slide: a window of data.max_length={self.max_length} tokens holds "
                f"{room} of text beside the tokenizer's special tokens; lower data.stride below {room}",
            )

    # --- encoding -------------------------------------------------------------------------------------------

    def encode(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        """Train: one row per sentence cut at ``max_length`` (per window with ``train_windows``). Validation, test
        and predict: one row per sentence holding all its windows, each word read once (:func:`reading_positions`)."""
        if split == "predict":
            return self._encode_text(ds)
        tag_id = {name: i for i, name in enumerate(self.label_names)}
        to_names = _tag_names(ds.features[self.tags_column])
        scheme = self.scheme(split, ds)
        inside = inside_tags(self.label_names) if self.label_all_subtokens else None
        # Locals only (see map_rows).
        tokenizer, max_length, stride, tokens_column, tags_column = (
            self.tokenizer,
            self.max_length,
            self.stride,
            self.tokens_column,
            self.tags_column,
        )
        inputs = list(tokenizer.model_input_names)
        evaluated, windowed = split != "train", split != "train" or self.train_windows
        long = 0

        def tag_ids(tags: list) -> list[int]:
            return [tag_id[schemes.to_iob2(t, scheme)] for t in to_names(tags)]

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            nonlocal long
            words, tags = batch[tokens_column], [tag_ids(t) for t in batch[tags_column]]
            if not windowed:
                out = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
                out["labels"] = [align_labels(out.word_ids(i), t, inside) for i, t in enumerate(tags)]
                long += sum(bool(e.overflowing) for e in out.encodings)
                return out
            grouped = tokenize_windows(tokenizer, words, max_length, stride, inputs)
            long += sum(len(row) > 1 for row in grouped["input_ids"])
            firsts = [first_subtokens(ids, stride) for ids in grouped[WORD_IDS]]
            if evaluated:  # one row per sentence; labels where each word is read, once
                reads = [reading_positions(ids, f) for ids, f in zip(grouped[WORD_IDS], firsts, strict=True)]
                out = {k: grouped[k] for k in inputs} | {WORD_IDS: reads}
                out["labels"] = [
                    [[IGNORE_INDEX if r < 0 else t[r] for r in window] for window in row]
                    for row, t in zip(reads, tags, strict=True)
                ]
                return out
            # One row per window, every word of it labelled at its first sub-token.
            out = {k: [window for row in grouped[k] for window in row] for k in inputs}
            out["labels"] = [
                align_labels(ids, tags[i], inside, flags)
                for i, (row, row_firsts) in enumerate(zip(grouped[WORD_IDS], firsts, strict=True))
                for ids, flags in zip(row, row_firsts, strict=True)
            ]
            return out

        features = _window_features(inputs, labels=True) if evaluated else None
        encoded = self.map_rows(ds, split, tokenize, features=features)  # not datasets' cache: counts see every row
        self._report_long(split, long, len(ds), windowed)
        return encoded

    def _report_long(self, split: str, count: int, total: int, windowed: bool) -> None:
        if not count:
            return
        longer = f"{count} of {total} sentences in the {split} split are longer than data.max_length={self.max_length}"
        if windowed:
            rank_zero_info(f"{longer} tokens: read in overlapping windows sharing data.stride={self.stride} tokens")
        else:
            rank_zero_warn(
                f"{longer} tokens and were truncated: their last words are not trained on "
                "(data.train_windows: true trains on them in windows)"
            )

    def _encode_text(self, ds: datasets.Dataset) -> datasets.Dataset:
        """Raw text split into words (``data.words``), tokenized as words in windows; keeps where each word is read
        and each word's characters."""
        has_text = self.text_column in ds.column_names
        split_text = word_splitters.splitter(self.words)
        tokenizer, max_length, stride, text_column, tokens_column = (
            self.tokenizer,
            self.max_length,
            self.stride,
            self.text_column,
            self.tokens_column,
        )
        inputs = list(tokenizer.model_input_names)
        long = 0

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            nonlocal long
            if has_text:
                texts = batch[text_column]
                spans = [split_text(t) for t in texts]
            else:  # given words: the text is them joined by spaces
                texts = [" ".join(w) for w in batch[tokens_column]]
                spans = [_joined_spans(w) for w in batch[tokens_column]]
            words = [[t[a:b] for a, b in s] for t, s in zip(texts, spans, strict=True)]
            grouped = tokenize_windows(tokenizer, words, max_length, stride, inputs)
            long += sum(len(row) > 1 for row in grouped["input_ids"])
            out: dict[str, list] = {k: grouped[k] for k in inputs}
            out[WORD_IDS] = [reading_positions(ids, first_subtokens(ids, stride)) for ids in grouped[WORD_IDS]]
            out[WORD_SPANS] = [[list(span) for span in s] for s in spans]
            out[TEXT] = texts
            return out

        encoded = self.map_rows(ds, "predict", tokenize, features=_window_features(inputs, labels=False))
        self._report_long("predict", long, len(ds), windowed=True)
        return encoded

    # --- batching -------------------------------------------------------------------------------------------

    @cached_property
    def _collator(self) -> DataCollatorForTokenClassification:
        return DataCollatorForTokenClassification(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad rows into a batch. Training rows are one window each. Evaluation and predict rows are sentences: their
        windows are flattened into the batch, with ``word_ids`` (per token, the word read there; -1 elsewhere) and
        ``window_row`` (each window's row) under ``META``; predict batches add ``word_spans`` and ``text``."""
        if WORD_IDS not in features[0]:
            return self._collator(features)
        keys = tuple(k for k in (*self.tokenizer.model_input_names, "labels") if k in features[0])
        windows, owner = flatten_windows(features, keys)
        batch = self._collator(windows)
        length = batch["input_ids"].shape[1]
        left = self.tokenizer.padding_side == "left"
        rows = [r for f in features for r in f[WORD_IDS]]
        reads = [[-1] * (length - len(r)) + r if left else r + [-1] * (length - len(r)) for r in rows]
        meta: dict[str, Any] = {
            WORD_IDS: torch.tensor(reads, dtype=torch.long),
            WINDOW_ROW: owner,
        }
        if WORD_SPANS in features[0]:
            most = max(len(f[WORD_SPANS]) for f in features)
            spans = torch.full((len(features), most, 2), -1, dtype=torch.long)
            for i, f in enumerate(features):
                if f[WORD_SPANS]:
                    spans[i, : len(f[WORD_SPANS])] = torch.tensor(f[WORD_SPANS])
            meta |= {WORD_SPANS: spans, TEXT: [f[TEXT] for f in features]}
        batch[META] = meta
        return batch


def _joined_spans(words: list[str]) -> list[tuple[int, int]]:
    """The spans of ``words`` in ``" ".join(words)``."""
    spans, at = [], 0
    for word in words:
        spans.append((at, at + len(word)))
        at += len(word) + 1
    return spans


def _window_features(inputs: list[str], labels: bool) -> datasets.Features:
    """Arrow types of an evaluation (``labels``) or predict split: explicit, or a split of empty rows would leave
    them unknown."""
    windows = datasets.List(datasets.List(datasets.Value("int32")))
    features = {k: windows for k in (*inputs, WORD_IDS, *(["labels"] if labels else []))}
    if not labels:
        features[WORD_SPANS] = datasets.List(datasets.List(datasets.Value("int32")))
        features[TEXT] = datasets.Value("string")
    return datasets.Features(features)
