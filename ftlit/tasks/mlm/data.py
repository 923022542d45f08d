"""Unlabelled in-domain text for masked-language-model pretraining: documents packed into ``max_length`` chunks,
masked as BERT was (15% of tokens; of those 80% ``[MASK]``, 10% a random token, 10% unchanged), as in Hugging Face's
``run_mlm.py`` and Gururangan et al. 2020 ("Don't Stop Pretraining")."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import datasets
import torch
from lightning.pytorch.utilities import rank_zero_info
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

from ftlit.core.datamodule import TaskDataModule, blank_rows, check_texts
from ftlit.core.labels import column_error
from ftlit.errors import ConfigError

TEXT_SUFFIXES = (".txt", ".text")
# Which tokens of a chunk are special ([CLS], [SEP], padding): never masked.
SPECIAL = "special_tokens_mask"
OFFSETS = "offset_mapping"
IGNORE_INDEX = -100


def read_documents(path: str, field: str, documents: Literal["line", "paragraph"]) -> datasets.Dataset:
    """A plain text file as one ``text`` column: one document per line, or per paragraph (blank-line separated).

    Args:
        path: The file (UTF-8).
        field: Config field named in errors.
        documents: ``line`` or ``paragraph``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(field, f"file '{path}' does not exist: check the path")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(field, f"'{path}' is not UTF-8 text (byte {err.start}): convert it to UTF-8") from None
    parts = text.splitlines() if documents == "line" else re.split(r"\n\s*\n", text)
    docs = [" ".join(part.split()) for part in parts]
    docs = [d for d in docs if d]
    if not docs:
        raise ConfigError(field, f"'{path}' holds no text: give a file with one document per line")
    return datasets.Dataset.from_dict({"text": docs})


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one text (BERT: ``[CLS]`` and ``[SEP]``)."""
    alone = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    at = next(i for i in range(len(full) - len(alone) + 1) if full[i : i + len(alone)] == alone)
    return full[:at], full[at + len(alone) :]


class MaskedLMDataModule(TaskDataModule):
    """Documents from a text column (csv, tsv, json, jsonl, parquet, a Hub dataset) or plain ``.txt`` files, packed
    into chunks of ``max_length`` tokens and masked for masked-language-model training.

    Training chunks are masked afresh in every batch (from torch's random state, which checkpoints restore, so a
    resumed run draws the same masks); validation and test chunks are masked once, with ``seed``, so their scores
    compare across epochs and runs. Predict rows are texts with the tokenizer's mask token (``[MASK]``) to fill.
    """

    def __init__(
        self,
        text_column: str = "text",
        documents: Literal["line", "paragraph"] = "line",
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        whole_word_mask: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            text_column: Column holding the documents (files other than ``.txt``).
            documents: How a ``.txt`` file holds documents: one per ``line``, or one per ``paragraph`` (separated
                by blank lines).
            mlm_probability: Share of tokens (of words, with ``whole_word_mask``) chosen for prediction.
            mask_replace_prob: Of the chosen tokens, the share replaced by the mask token.
            random_replace_prob: Of the chosen tokens, the share replaced by a random token; the rest stay as they
                are.
            whole_word_mask: Choose whole words: every sub-token of a chosen word is masked (always with the mask
                token, as in the original whole-word-masking BERT).
            **kwargs: Shared data options (files, Hub dataset, max_length, batch sizes, ...): see
                ``TaskDataModule``.
        """
        super().__init__(**kwargs)
        if documents not in ("line", "paragraph"):
            raise ConfigError("data.documents", f"must be line or paragraph, got {documents!r}")
        if not 0.0 < mlm_probability < 1.0:
            raise ConfigError("data.mlm_probability", f"must be in (0, 1), got {mlm_probability}")
        for name, value in (("mask_replace_prob", mask_replace_prob), ("random_replace_prob", random_replace_prob)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"data.{name}", f"must be in [0, 1], got {value}")
        if mask_replace_prob + random_replace_prob > 1.0:
            raise ConfigError(
                "data.random_replace_prob",
                f"mask_replace_prob + random_replace_prob is {mask_replace_prob + random_replace_prob}, above 1: "
                "lower one (0.8 and 0.1 are BERT's)",
            )
        if whole_word_mask and random_replace_prob:
            raise ConfigError(
                "data.random_replace_prob",
                "whole-word masking always uses the mask token: set random_replace_prob: 0 and mask_replace_prob: 1",
            )
        self.text_column = text_column
        self.documents = documents
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.whole_word_mask = whole_word_mask

    def load_file(self, path: str, field: str) -> datasets.Dataset:
        """``.txt`` files are read here (see ``documents``), every other format by ``sources.load_file``."""
        if Path(path).suffix.lower() in TEXT_SUFFIXES:
            return read_documents(path, field, self.documents)
        return super().load_file(path, field)

    def drop_rows(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        """Documents without text hold nothing to learn: left out of every split but predict (one answer per row)."""
        if split == "predict" or self.text_column not in ds.column_names:
            return ds
        try:
            blank = set(blank_rows(ds[self.text_column]))
        except (AttributeError, TypeError):  # not a text column: check_split names it
            return ds
        if not blank:
            return ds
        if len(blank) == len(ds):
            raise ConfigError(
                f"data.{split}_file", f"every document of the {split} split is empty: give a file with text"
            )
        rank_zero_info(f"ftlit: left out {len(blank)} empty documents of {len(ds)} in the {split} split")
        return ds.select([row for row in range(len(ds)) if row not in blank])

    def check_split(self, split: str, ds: datasets.Dataset) -> None:
        if self.text_column not in ds.column_names:
            raise column_error("data.text_column", self.text_column, split, ds)
        check_texts("data.text_column", self.text_column, split, ds, blank_fix="fill or remove those rows")
        if split == "predict":
            mask = self.tokenizer.mask_token
            missing = [i for i, text in enumerate(ds[self.text_column]) if mask not in text]
            if missing:
                raise ConfigError(
                    "data.predict_file",
                    f"{len(missing)} of {len(ds)} texts (the first is row {missing[0]}) have no {mask} to fill: "
                    f"put {mask} where a word should be predicted",
                )

    def cache_fields(self) -> dict[str, Any]:
        return {
            "text": self.text_column,
            "documents": self.documents,
            # Validation and test are masked when they are encoded.
            "masking": [self.mlm_probability, self.mask_replace_prob, self.random_replace_prob, self.whole_word_mask],
        }

    def masker(self, seed: int | None = None) -> DataCollatorForLanguageModeling:
        """transformers' masking (BERT's 80/10/10, or whole words): from torch's random state, or from its own
        generator when ``seed`` is given."""
        if self.tokenizer.mask_token is None:
            raise ConfigError("model.backbone", "its tokenizer has no mask token: masked-LM training needs one")
        masker = DataCollatorForLanguageModeling(
            self.tokenizer,
            mlm_probability=self.mlm_probability,
            mask_replace_prob=self.mask_replace_prob,
            random_replace_prob=self.random_replace_prob,
            whole_word_mask=self.whole_word_mask,
            seed=seed,
        )
        if seed is not None:
            masker.create_rng("pt")
        return masker

    @cached_property
    def _train_masker(self) -> DataCollatorForLanguageModeling:
        return self.masker()

    def encode(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        tokenizer, column, max_length = self.tokenizer, self.text_column, self.max_length
        if split == "predict":
            return self.map_rows(
                ds, split, lambda batch: tokenizer(batch[column], truncation=True, max_length=max_length)
            )
        prefix, suffix = special_tokens(tokenizer)
        special_ids = set(tokenizer.all_special_ids)
        size = max_length - len(prefix) - len(suffix)
        separator = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        # Evaluation chunks are masked once, the same way in every run with this seed; training chunks per batch.
        masker = None if split == "train" else self.masker(self.seed)

        def pack(batch: dict[str, list]) -> dict[str, list]:
            """The batch's documents, joined by the separator token, cut into chunks of ``max_length`` tokens."""
            encoded = tokenizer(batch[column], add_special_tokens=False, return_offsets_mapping=True)
            ids: list[int] = []
            offsets: list[tuple[int, int]] = []
            for doc_ids, doc_offsets in zip(encoded["input_ids"], encoded[OFFSETS], strict=True):
                if ids and separator is not None:
                    ids.append(separator)
                    offsets.append((0, 0))
                ids += doc_ids
                offsets += [tuple(o) for o in doc_offsets]
            out: dict[str, list] = {"input_ids": [], SPECIAL: [], OFFSETS: []}
            for start in range(0, len(ids), size):
                chunk = prefix + ids[start : start + size] + suffix
                out["input_ids"].append(chunk)
                out[SPECIAL].append([int(t in special_ids) for t in chunk])
                out[OFFSETS].append([(0, 0)] * len(prefix) + offsets[start : start + size] + [(0, 0)] * len(suffix))
            if masker is None:
                return out
            masked = []
            labels = []
            for chunk, special, spans in zip(out["input_ids"], out[SPECIAL], out[OFFSETS], strict=True):
                inputs, target = masker.torch_mask_tokens(
                    torch.tensor([chunk]), torch.tensor([special]), torch.tensor([spans])
                )
                masked.append(inputs[0].tolist())
                labels.append(target[0].tolist())
            return {"input_ids": masked, "labels": labels}

        return self.map_rows(ds, split, pack)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad chunks into a batch; training chunks are masked here, evaluation chunks were masked once."""
        padded = self.tokenizer.pad(
            [{"input_ids": f["input_ids"]} for f in features],
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        batch = dict(padded)
        width = batch["input_ids"].shape[1]
        if "labels" in features[0]:
            batch["labels"] = torch.tensor(
                [f["labels"] + [IGNORE_INDEX] * (width - len(f["labels"])) for f in features]
            )
        elif SPECIAL in features[0]:
            # Padding counts as special: never masked, never scored.
            special = torch.tensor([f[SPECIAL] + [1] * (width - len(f[SPECIAL])) for f in features])
            offsets = torch.tensor([f[OFFSETS] + [[0, 0]] * (width - len(f[OFFSETS])) for f in features])
            batch["input_ids"], batch["labels"] = self._train_masker.torch_mask_tokens(
                batch["input_ids"], special, offsets
            )
        return batch
