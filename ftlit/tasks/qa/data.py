"""Extractive question answering (SQuAD v1.1 / v2.0) data: a question, a context, and answers as character spans.

Sources: SQuAD JSON files (the nested ``{"version", "data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``
format), flat rows with ``id``/``question``/``context``/``answers`` columns (json, jsonl, csv, parquet: the layout of
Hugging Face's ``run_qa.py`` and of the Hub's ``squad``/``squad_v2``), or a Hub dataset.

Encoding follows ``run_qa.py``: the question comes first (second for tokenizers that pad on the left), only the context
is truncated, and a context longer than ``max_length`` is split into overlapping windows (``doc_stride`` tokens shared
by neighbours). Every window is a row:

* **train**: ``start_positions``/``end_positions``, the tokens of the first answer in the window that holds it whole;
  [CLS] in windows that do not (and for unanswerable questions).
* **validation/test**: the same positions (for ``val/loss``), plus the example's index and the character offsets of
  the window's context tokens (-1 elsewhere), which is what span decoding and
  :class:`~ftlit.tasks.qa.metric.SquadMetric` need.
  The example's context and gold answer texts ride on its first window only, so the cache holds each context once;
  :meth:`QuestionAnsweringDataModule.examples` reads them back for the metric on every process.
* **predict**: one row per *example* holding all its windows, so ``ftlit predict`` writes one answer per question in
  input order; the collate function flattens the windows of a batch.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import torch
from lightning.pytorch.utilities import rank_zero_info
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from ftlit.core.datamodule import META, TaskDataModule
from ftlit.core.windows import flatten_windows, group_windows
from ftlit.errors import ConfigError

# Columns of the encoded splits that are not backbone inputs: the answer positions (targets, batch keys of their own)
# and what the model reads under ``batch[META]``.
START, END = "start_positions", "end_positions"
EXAMPLE_IDX, OFFSETS = "example_idx", "offset_mapping"
CONTEXT, ANSWERS, ID = "context", "answer_texts", "id"
# Predict batches: the position in the batch of each window's example.
WINDOW_EXAMPLE = "window_example"
# Bumped when the encoded layout changes, so that an old cache is never read as a new one.
LAYOUT_VERSION = 1

ANSWERS_FEATURE = {
    "text": datasets.List(datasets.Value("string")),
    "answer_start": datasets.List(datasets.Value("int32")),
}


# --- sources ------------------------------------------------------------------------------------------------------


def read_squad_json(
    data: dict[str, Any], path: str, field: str, columns: dict[str, str], with_answers: bool
) -> datasets.Dataset:
    """Flatten a parsed SQuAD JSON file into one row per question.

    Args:
        data: The parsed file: ``{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``.
        path: The file, named in errors.
        field: Config field named in errors (e.g. ``data.train_file``).
        columns: Result column of each of ``id``, ``question``, ``context``, ``answers``.
        with_answers: Read answers (a missing ``answers`` list is an error); off for the predict split.

    Returns:
        Columns ``id``, ``title``, ``question``, ``context`` and, with answers, ``answers`` as
        ``{"text": [...], "answer_start": [...]}`` (the Hub's ``squad`` layout). A question marked
        ``is_impossible`` has no answers (SQuAD v2.0 lists ``plausible_answers`` beside them, which are not gold).

    Raises:
        ConfigError: An article, paragraph or question lacks a required key.
    """
    rows: dict[str, list] = {k: [] for k in ("id", "title", "question", "context", "answers")}

    def need(obj: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            what = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ConfigError(field, f"'{path}' is not valid SQuAD JSON: {where} has no {what} '{key}'")
        return value

    for a, article in enumerate(need(data, "data", "the top level", list)):
        title = article.get("title", "") if isinstance(article, dict) else ""
        for p, paragraph in enumerate(need(article, "paragraphs", f"data[{a}]", list)):
            where = f"data[{a}].paragraphs[{p}]"
            context = need(paragraph, "context", where, str)
            for q, qa in enumerate(need(paragraph, "qas", where, list)):
                at = f"{where}.qas[{q}]"
                rows["id"].append(str(need(qa, "id", at, (str, int))))
                rows["title"].append(str(title))
                rows["question"].append(need(qa, "question", at, str))
                rows["context"].append(context)
                answers = []
                if with_answers and not qa.get("is_impossible", False):
                    answers = need(qa, "answers", at, list)
                for n, answer in enumerate(answers):
                    need(answer, "text", f"{at}.answers[{n}]", str)
                    need(answer, "answer_start", f"{at}.answers[{n}]", int)
                rows["answers"].append(
                    {"text": [x["text"] for x in answers], "answer_start": [x["answer_start"] for x in answers]}
                )
    if not rows["id"]:
        raise ConfigError(field, f"file '{path}' has no questions: give a file with data rows")
    names = {"id": columns["id"], "title": "title", "question": columns["question"], "context": columns["context"]}
    out = {names[k]: v for k, v in rows.items() if k != "answers"}
    features = {name: datasets.Value("string") for name in out}
    if with_answers:
        out[columns["answers"]] = rows["answers"]
        features[columns["answers"]] = ANSWERS_FEATURE
    return datasets.Dataset.from_dict(out, features=datasets.Features(features))


def answer_lists(value: Any) -> tuple[list[Any], list[Any]] | None:
    """``(texts, starts)`` of one row's answers, from ``{"text": [...], "answer_start": [...]}`` (the Hub's layout)
    or a list of ``{"text", "answer_start"}`` (SQuAD's own), either also as a JSON string (a csv cell); ``None`` if
    ``value`` is none of these."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, dict) and "text" in value and "answer_start" in value:
        texts, starts = value["text"], value["answer_start"]
        if isinstance(texts, list) and isinstance(starts, list):
            return texts, starts
        return None
    if isinstance(value, list) and all(isinstance(a, dict) and "text" in a and "answer_start" in a for a in value):
        return [a["text"] for a in value], [a["answer_start"] for a in value]
    return None


# --- encoding -----------------------------------------------------------------------------------------------------


def tokenize_windows(
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    contexts: list[str],
    max_length: int,
    doc_stride: int,
    question_first: bool,
) -> Any:
    """Tokenize question/context pairs into windows of at most ``max_length`` tokens, as ``run_qa.py`` does.

    Only the context is truncated; its overflow starts new windows that repeat the last ``doc_stride`` context tokens
    of the previous one. Leading whitespace of questions is dropped (some SQuAD questions have a lot of it, and it
    would only eat into the window).

    Args:
        tokenizer: A fast tokenizer (offsets are needed).
        questions: Question of each example.
        contexts: Context of each example.
        max_length: Tokens per window, special tokens included.
        doc_stride: Context tokens shared by consecutive windows of one example.
        question_first: Question, then context; ``False`` (tokenizers that pad on the left) puts the context first.

    Returns:
        The ``BatchEncoding``, one entry per window, with ``offset_mapping`` and ``overflow_to_sample_mapping``.
    """
    questions = [q.lstrip() for q in questions]
    first, second = (questions, contexts) if question_first else (contexts, questions)
    return tokenizer(
        first,
        second,
        truncation="only_second" if question_first else "only_first",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def context_offsets(offsets: list[tuple[int, int]], sequence_ids: list[int | None], context_id: int) -> list[list[int]]:
    """Character offsets of the context tokens of one window, ``[-1, -1]`` for every other token."""
    return [list(o) if s == context_id else [-1, -1] for o, s in zip(offsets, sequence_ids, strict=True)]


def answer_positions(offsets: list[list[int]], start_char: int, end_char: int, cls_index: int) -> tuple[int, int]:
    """Start and end token of the answer ``[start_char, end_char)`` in one window, or ``(cls_index, cls_index)``.

    As ``run_qa.py``: the start is the last context token starting at or before ``start_char``, the end the first
    context token ending at or after ``end_char``; a window that does not hold the whole answer points at [CLS].
    Unlike ``run_qa.py``, the search never leaves the context (it would step onto [SEP] for an answer starting at the
    window's last token).

    Args:
        offsets: Per token, ``[start, end)`` characters in the context, ``[-1, -1]`` for tokens outside it.
        start_char: First character of the answer.
        end_char: One past its last character.
        cls_index: Position of the [CLS] token, the target for "not in this window".
    """
    inside = [t for t, (a, _) in enumerate(offsets) if a >= 0]
    if not inside or not (offsets[inside[0]][0] <= start_char and offsets[inside[-1]][1] >= end_char):
        return cls_index, cls_index
    start = max(t for t in inside if offsets[t][0] <= start_char)
    end = min(t for t in inside if offsets[t][1] >= end_char)
    return start, end


def _cls_index(input_ids: list[int], cls_id: int | None, bos_id: int | None) -> int:
    """Where [CLS] (or, for tokenizers without one, the BOS token) is; run_qa.py falls back to 0 too."""
    for token in (cls_id, bos_id):
        if token is not None and token in input_ids:
            return input_ids.index(token)
    return 0


class QuestionAnsweringDataModule(TaskDataModule):
    """Extractive question answering (SQuAD v1.1, SQuAD v2.0 with unanswerable questions) from files or the Hub."""

    def __init__(
        self,
        question_column: str = "question",
        context_column: str = "context",
        answers_column: str = "answers",
        id_column: str = "id",
        doc_stride: int = 128,
        version_2_with_negative: bool = False,
        max_length: int = 384,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            question_column: Column holding the question.
            context_column: Column holding the context (the passage the answer is taken from).
            answers_column: Column holding the answers: ``{"text": [...], "answer_start": [...]}`` (the Hub's
                ``squad`` layout) or a list of ``{"text", "answer_start"}``, in csv files as JSON; ``answer_start``
                is a character offset into the context. Not needed in the predict split. SQuAD JSON files are read
                into it.
            id_column: Column holding each question's id, written with its prediction; without one, the row number.
            doc_stride: Context tokens shared by two consecutive windows when a context is longer than
                ``max_length`` (``run_qa.py``'s ``doc_stride``). Must be below the room a window leaves for the
                context (``max_length`` minus the question and special tokens).
            version_2_with_negative: SQuAD v2.0: questions may have no answer (an empty answer list); the model
                then learns to point at [CLS] and may answer "" (see ``model.null_score_diff_threshold``). Without
                it, a question with no answer is an error.
            max_length: Tokens per window, question and special tokens included (``run_qa.py``'s
                ``max_seq_length``, 384 by default).
            **kwargs: Shared data options (files, Hub dataset, batch sizes, ...): see ``TaskDataModule``. Batch
                sizes count windows, except in the predict split, where they count questions (all windows of a
                question are decoded together).
        """
        super().__init__(max_length=max_length, **kwargs)
        self.save_hyperparameters()
        if doc_stride < 0:
            raise ConfigError("data.doc_stride", f"must be >= 0, got {doc_stride}")
        self.question_column = question_column
        self.context_column = context_column
        self.answers_column = answers_column
        self.id_column = id_column
        self.doc_stride = doc_stride
        self.version_2_with_negative = version_2_with_negative

    # --- sources --------------------------------------------------------------------------------------------

    def load_file(self, path: str, field: str) -> datasets.Dataset:
        """One local file: SQuAD's nested JSON is read here, flat rows (json, jsonl, csv, parquet) by the base.

        Args:
            path: The file.
            field: Config field named in errors.
        """
        p = Path(path).expanduser()
        if p.suffix.lower() == ".json" and p.is_file():
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                data = None  # JSON lines, or not JSON at all: the base reads it or says why not
            if isinstance(data, dict) and "data" in data:
                columns = {
                    "id": self.id_column,
                    "question": self.question_column,
                    "context": self.context_column,
                    "answers": self.answers_column,
                }
                return read_squad_json(data, path, field, columns, with_answers=field != "data.predict_file")
        return super().load_file(path, field)

    # --- checks ---------------------------------------------------------------------------------------------

    def _column_error(self, split: str, ds: datasets.Dataset, field: str, column: str) -> ConfigError:
        return ConfigError(
            f"data.{field}", f"column '{column}' not in the {split} split (columns: {', '.join(ds.column_names)})"
        )

    def _row(self, split: str, ds: datasets.Dataset, row: int) -> str:
        """``row 3 of the train split (id 'q3')``: where a bad row is, by number and, where there is one, by id."""
        has_id = self.id_column in ds.column_names
        return f"row {row} of the {split} split" + (f" (id '{ds[row][self.id_column]}')" if has_id else "")

    @property
    def pairs(self) -> bool:
        return True  # every window is a question/context pair

    def check_split(self, split: str, ds: datasets.Dataset) -> None:
        required = [("question_column", self.question_column), ("context_column", self.context_column)]
        if split != "predict":
            required.append(("answers_column", self.answers_column))
        for field, column in required:
            if column not in ds.column_names:
                raise self._column_error(split, ds, field, column)
        contexts = list(ds[self.context_column])
        for field, column, values in (
            ("question_column", self.question_column, ds[self.question_column]),
            ("context_column", self.context_column, contexts),
        ):
            for row, value in enumerate(values):
                if not isinstance(value, str) or not value.strip():
                    raise ConfigError(f"data.{field}", f"{self._row(split, ds, row)} has no text in '{column}'")
        self._check_room(split, ds)
        if split != "predict":
            self._check_answers(split, ds, contexts)

    def _check_answers(self, split: str, ds: datasets.Dataset, contexts: list[str]) -> None:
        """Every answer is found in its context at its ``answer_start``; empty answer lists only with v2."""
        for row, (value, context) in enumerate(zip(ds[self.answers_column], contexts, strict=True)):
            parsed = answer_lists(value)
            if parsed is None or len(parsed[0]) != len(parsed[1]):
                raise ConfigError(
                    "data.answers_column",
                    f"{self._row(split, ds, row)}: '{self.answers_column}' must be "
                    f'{{"text": [...], "answer_start": [...]}} with one start per text, got {str(value)[:80]}',
                )
            texts, starts = parsed
            if not texts and not self.version_2_with_negative:
                raise ConfigError(
                    "data.version_2_with_negative",
                    f"{self._row(split, ds, row)} has no answer: set data.version_2_with_negative=true for "
                    "unanswerable questions (SQuAD v2.0), or give it one",
                )
            for text, start in zip(texts, starts, strict=True):
                if not isinstance(text, str) or not text or not isinstance(start, int) or isinstance(start, bool):
                    raise ConfigError(
                        "data.answers_column",
                        f"{self._row(split, ds, row)}: answer {text!r} at {start!r}: give a non-empty text and an "
                        "integer answer_start",
                    )
                if not 0 <= start < len(context) or context[start : start + len(text)] != text:
                    found = context[start : start + len(text)] if 0 <= start < len(context) else "outside the context"
                    raise ConfigError(
                        "data.answers_column",
                        f"{self._row(split, ds, row)}: answer {text!r} is not at answer_start {start} of the context "
                        f"(found {found!r}): fix answer_start (a character offset into the context)",
                    )

    def _check_room(self, split: str, ds: datasets.Dataset) -> None:
        """Each window leaves room for at least ``doc_stride + 1`` context tokens beside the question.

        Otherwise the tokenizer cannot slide its window: it aborts the process (a Rust panic) or refuses the row.
        """
        tokenizer = self.tokenizer
        lengths = [len(ids) for ids in tokenizer(list(ds[self.question_column]), add_special_tokens=False)["input_ids"]]
        special = tokenizer.num_special_tokens_to_add(pair=True)
        row = max(range(len(lengths)), key=lengths.__getitem__)
        room = self.max_length - special - lengths[row]
        if self.doc_stride >= room:
            raise ConfigError(
                "data.doc_stride",
                f"{self.doc_stride} leaves no room to slide: the longest question, {self._row(split, ds, row)}, has "
                f"{lengths[row]} tokens, so a window of data.max_length={self.max_length} holds "
                f"{max(room, 0)} context tokens; lower doc_stride below that or raise max_length",
            )

    @property
    def question_first(self) -> bool:
        """Question before context, unless the tokenizer pads on the left (``run_qa.py``'s ``pad_on_right``)."""
        return self.tokenizer.padding_side == "right"

    def cache_fields(self) -> dict[str, Any]:
        return {
            "layout": LAYOUT_VERSION,
            "columns": [self.question_column, self.context_column, self.answers_column, self.id_column],
            "doc_stride": self.doc_stride,
            "question_first": self.question_first,
        }

    # --- encoding -------------------------------------------------------------------------------------------

    def encode(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        # Locals only (see map_rows).
        tokenizer, max_length, doc_stride, question_first = (
            self.tokenizer,
            self.max_length,
            self.doc_stride,
            self.question_first,
        )
        question_column, context_column, answers_column, id_column = (
            self.question_column,
            self.context_column,
            self.answers_column,
            self.id_column,
        )
        has_ids = id_column in ds.column_names
        context_id = 1 if question_first else 0
        cls_id, bos_id = tokenizer.cls_token_id, tokenizer.bos_token_id
        inputs = list(tokenizer.model_input_names)
        predict, train = split == "predict", split == "train"

        def tokenize(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
            contexts = batch[context_column]
            enc = tokenize_windows(tokenizer, batch[question_column], contexts, max_length, doc_stride, question_first)
            owner = enc["overflow_to_sample_mapping"]
            offsets = [
                context_offsets(enc["offset_mapping"][w], enc.sequence_ids(w), context_id) for w in range(len(owner))
            ]
            if predict:  # one row per example, holding all its windows
                per_window = {**{k: enc[k] for k in inputs}, OFFSETS: offsets}
                out: dict[str, list] = group_windows(per_window, owner, len(contexts))
                out[CONTEXT] = contexts
                out[ID] = batch[id_column] if has_ids else [str(i) for i in indices]
                out[ID] = [str(x) for x in out[ID]]
                return out
            out = {k: enc[k] for k in inputs}
            out[START], out[END] = [], []
            answers = [answer_lists(a) for a in batch[answers_column]]
            for w, i in enumerate(owner):
                cls = _cls_index(enc["input_ids"][w], cls_id, bos_id)
                texts, starts = answers[i]
                # Train on the first answer, as run_qa.py does; evaluation scores against all of them.
                first = (starts[0], starts[0] + len(texts[0])) if texts else None
                start, end = answer_positions(offsets[w], *first, cls) if first else (cls, cls)
                out[START].append(start)
                out[END].append(end)
            if not train:
                out[EXAMPLE_IDX] = [indices[i] for i in owner]
                out[OFFSETS] = offsets
                # The example's context and gold texts on its first window only: each context is stored once.
                firsts = [w == 0 or owner[w - 1] != i for w, i in enumerate(owner)]
                out[CONTEXT] = [contexts[i] if f else None for i, f in zip(owner, firsts, strict=True)]
                out[ANSWERS] = [answers[i][0] if f else None for i, f in zip(owner, firsts, strict=True)]
            return out

        features = self._features(split, inputs)
        encoded = self.map_rows(ds, split, tokenize, with_indices=True, features=features)
        windows = sum(len(w) for w in encoded["input_ids"]) if predict else len(encoded)
        if windows > len(ds):
            rank_zero_info(
                f"{split}: {len(ds)} questions make {windows} windows of data.max_length={max_length} tokens "
                f"(long contexts are split with data.doc_stride={doc_stride})"
            )
        return encoded

    @staticmethod
    def _features(split: str, inputs: list[str]) -> datasets.Features:
        """Arrow types of an encoded split (explicit: the None of later windows would otherwise leave them unknown)."""
        ints = datasets.List(datasets.Value("int32"))
        pairs = datasets.List(datasets.List(datasets.Value("int32")))
        if split == "predict":
            features = {k: datasets.List(ints) for k in inputs}
            features.update({OFFSETS: datasets.List(pairs), CONTEXT: datasets.Value("string")})
            features[ID] = datasets.Value("string")
            return datasets.Features(features)
        features = {k: ints for k in inputs}
        features.update({START: datasets.Value("int32"), END: datasets.Value("int32")})
        if split != "train":
            features.update(
                {
                    EXAMPLE_IDX: datasets.Value("int64"),
                    OFFSETS: pairs,
                    CONTEXT: datasets.Value("string"),
                    ANSWERS: datasets.List(datasets.Value("string")),
                }
            )
        return datasets.Features(features)

    # --- what the metric needs --------------------------------------------------------------------------------

    def examples(self, split: str) -> tuple[list[str], list[list[str]]]:
        """Context and gold answer texts of every example of an encoded validation/test split, by example index.

        Read from the cache, so every process has all of them, whichever windows it evaluates.

        Args:
            split: ``validation`` or ``test``.

        Returns:
            ``(contexts, answers)``; an empty answer list marks an unanswerable question.
        """
        if self.datasets is None or split not in self.datasets:
            raise ConfigError(f"data.{split}_file", f"no {split} split: give one to run this stage")
        ds = self.datasets[split].select_columns([EXAMPLE_IDX, CONTEXT, ANSWERS])
        contexts: list[str] = []
        answers: list[list[str]] = []
        for i, context, texts in zip(ds[EXAMPLE_IDX], ds[CONTEXT], ds[ANSWERS], strict=True):
            if context is not None:  # an example's first window
                if i != len(contexts):
                    raise RuntimeError(f"the {split} cache is out of order at example {i}: delete {self.cache_path}")
                contexts.append(context)
                answers.append(list(texts))
        return contexts, answers

    # --- batching -------------------------------------------------------------------------------------------

    @cached_property
    def _collator(self) -> DataCollatorWithPadding:
        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad windows into a batch.

        Training and evaluation rows are windows; the answer positions (targets) move with left padding. Evaluation
        batches add ``example_idx`` and ``offset_mapping`` (``[W, T, 2]``, -1 outside the context and in padding)
        under ``META``. Predict rows are questions: their windows are flattened into one batch, with
        ``window_example`` (the question of each window), ``context`` and ``id`` (one per question) under ``META``.
        """
        inputs = list(self.tokenizer.model_input_names)
        if ID in features[0]:
            windows, owner = flatten_windows(features, (*inputs, OFFSETS))
            batch = self._pad([w | {WINDOW_EXAMPLE: i} for w, i in zip(windows, owner, strict=True)], inputs)
            batch[META] |= {CONTEXT: [f[CONTEXT] for f in features], ID: [f[ID] for f in features]}
            return batch
        return self._pad(features, inputs)

    def _pad(self, windows: list[dict[str, Any]], inputs: list[str]) -> dict[str, Any]:
        batch: dict[str, Any] = dict(self._collator([{k: w[k] for k in inputs} for w in windows]))
        length = batch["input_ids"].shape[1]
        left = self.tokenizer.padding_side == "left"
        shifts = [length - len(w["input_ids"]) if left else 0 for w in windows]
        meta: dict[str, Any] = {}
        for key in (START, END):
            if key in windows[0]:
                batch[key] = torch.tensor([w[key] + s for w, s in zip(windows, shifts, strict=True)])
        for key in (EXAMPLE_IDX, WINDOW_EXAMPLE):
            if key in windows[0]:
                meta[key] = torch.tensor([w[key] for w in windows])
        if OFFSETS in windows[0]:
            offsets = torch.full((len(windows), length, 2), -1, dtype=torch.long)
            for i, (w, s) in enumerate(zip(windows, shifts, strict=True)):
                n = len(w[OFFSETS])
                start = s if left else 0
                offsets[i, start : start + n] = torch.tensor(w[OFFSETS], dtype=torch.long).view(n, 2)
            meta[OFFSETS] = offsets
        batch[META] = meta
        return batch
