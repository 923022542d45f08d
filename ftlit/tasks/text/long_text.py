"""Documents longer than the window (``data.max_length`` tokens): how a text data module reads them
(``data.long_text``: ``truncate``, ``head_tail`` or ``windows``), and how a text model pools the logits of a row's
windows into the row's one prediction.

A windowed split keeps each row's windows together in one cached row (``ftlit.core.windows``), so samplers shard
rows, not windows: under DDP each row is evaluated once, on one rank, and the metrics count it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from transformers import PreTrainedTokenizerBase

from ftlit.core.datamodule import META
from ftlit.core.windows import group_windows
from ftlit.errors import ConfigError

LongText = Literal["truncate", "head_tail", "windows"]
WindowPool = Literal["mean", "max"]
LONG_TEXTS = ("truncate", "head_tail", "windows")
POOLS = ("mean", "max")
# Per encoded row: whether its text was longer than the window (read back for the one line saying how many were).
LONG = "long"
# Under ``batch[META]`` of a batch of windowed rows: the batch row of each window, how many windows each row has, and
# how their logits are pooled.
WINDOW_ROW, WINDOWS, POOL = "window_row", "windows", "window_pool"
# The data keys that say how a long row is read: a checkpoint's values are compared with a test's or predict's.
READING_KEYS = ("long_text", "head_tokens", "stride", "window_pool")


def check_settings(
    long_text: str, head_tokens: int | None, stride: int | None, window_pool: str, max_length: int, pairs: bool
) -> None:
    """Refuse bad long-text settings in one line, before any work (what needs the tokenizer: :func:`check_room`)."""
    if long_text not in LONG_TEXTS:
        raise ConfigError("data.long_text", f"must be truncate, head_tail or windows, got {long_text!r}")
    if window_pool not in POOLS:
        raise ConfigError("data.window_pool", f"must be mean or max, got {window_pool!r}")
    if stride is not None and not 0 <= stride < max_length:
        raise ConfigError(
            "data.stride",
            f"must be >= 0 and below data.max_length={max_length} (tokens two windows share), got {stride}",
        )
    if head_tokens is not None and not 0 <= head_tokens < max_length:
        raise ConfigError("data.head_tokens", f"must be >= 0 and below data.max_length={max_length}, got {head_tokens}")
    if long_text == "head_tail" and pairs:
        raise ConfigError(
            "data.long_text",
            "head_tail keeps one text's first and last tokens: for text pairs use windows (they slide over "
            "data.text_pair_column) or truncate",
        )


def check_room(reading: Reading, special: int) -> None:
    """Refuse a stride or head that a window of a single text cannot hold, once the tokenizer's special tokens are
    known (a stride the window cannot slide by makes the tokenizer fail mid-encoding).

    Args:
        reading: The long-text settings.
        special: Special tokens the tokenizer adds to one text.
    """
    room = reading.max_length - special
    if reading.long_text == "windows" and reading.stride >= room:
        raise ConfigError(
            "data.stride",
            f"{reading.stride} leaves no room to slide: a window of data.max_length={reading.max_length} holds "
            f"{room} text tokens beside {special} special ones; give a stride below {room}",
        )
    if reading.long_text == "head_tail" and reading.head > room:
        raise ConfigError(
            "data.head_tokens",
            f"{reading.head} is more than the {room} text tokens a window of data.max_length={reading.max_length} "
            f"holds beside {special} special ones",
        )


@dataclass(frozen=True)
class Reading:
    """How a split's rows are tokenized: cut to the window (``truncate``, or ``head_tail`` keeping the first ``head``
    tokens and as many of the last as fit), or, ``windowed``, in overlapping windows sharing ``stride`` tokens, kept
    together per row. Plain values only: datasets pickles it with the tokenize function."""

    long_text: str
    max_length: int
    head: int
    stride: int
    windowed: bool

    def tokenize(self, tokenizer: PreTrainedTokenizerBase, texts: list[list[str]]) -> dict[str, list]:
        """The backbone inputs of a batch of rows and, under ``LONG``, whether each was longer than the window.

        Args:
            tokenizer: A fast tokenizer.
            texts: The text columns' values (one list, or two for pairs).
        """
        # Pairs under windows keep the first text whole and slide over the second (as QA slides over its context);
        # training on first windows cuts the same way, so it reads what evaluation's first window reads.
        truncation: bool | str = "only_second" if len(texts) == 2 and self.long_text == "windows" else True
        if self.windowed:
            enc = tokenizer(
                *texts,
                truncation=truncation,
                max_length=self.max_length,
                stride=self.stride,
                return_overflowing_tokens=True,
            )
            owner = enc.pop("overflow_to_sample_mapping")
            out = group_windows(dict(enc), owner, len(texts[0]))
            out[LONG] = [len(windows) > 1 for windows in out["input_ids"]]
            return out
        head_tail = self.long_text == "head_tail"
        enc = tokenizer(*texts, truncation=truncation, max_length=self.max_length, return_special_tokens_mask=head_tail)
        long = [bool(e.overflowing) for e in enc.encodings]
        out = {k: v for k, v in enc.items() if k != "special_tokens_mask"}
        if head_tail and any(long):
            self._keep_tail(tokenizer, texts[0], out, enc["special_tokens_mask"], long)
        out[LONG] = long
        return out

    def _keep_tail(
        self,
        tokenizer: PreTrainedTokenizerBase,
        texts: list[str],
        out: dict[str, list],
        special: list[list[int]],
        long: list[bool],
    ) -> None:
        """Replace, in each long row cut to its first tokens, everything after the first ``head`` text tokens with the
        text's last tokens (the special tokens around them stay as the tokenizer put them)."""
        rows = [i for i, is_long in enumerate(long) if is_long]
        content = tokenizer([texts[i] for i in rows], add_special_tokens=False)["input_ids"]
        for i, ids in zip(rows, content, strict=True):
            text_at = [t for t, s in enumerate(special[i]) if not s]
            start, end = text_at[0], text_at[-1] + 1  # the text's tokens, between the special ones
            tail = end - start - self.head
            for key, values in out.items():
                row = values[i]
                middle = ids[len(ids) - tail :] if key == "input_ids" else [row[start]] * tail
                values[i] = row[: start + self.head] + middle + row[end:]


def pool(logits: torch.Tensor, window_row: torch.Tensor, windows: torch.Tensor, how: str) -> torch.Tensor:
    """Each row's logits from its windows' (``[W, C]`` to ``[R, C]``), with no read-back to the host.

    Args:
        logits: The windows' logits.
        window_row: The row of each window (``[W]``).
        windows: How many windows each row has (``[R]``, each at least 1).
        how: ``mean`` or ``max`` (per logit).
    """
    shape = (windows.shape[0], logits.shape[-1])
    if how == "max":
        index = window_row[:, None].expand_as(logits)
        return logits.new_full(shape, float("-inf")).scatter_reduce(0, index, logits, "amax", include_self=False)
    summed = logits.new_zeros(shape).index_add(0, window_row, logits)
    return summed / windows[:, None].to(logits.dtype)


class PooledWindows:
    """What a text model adds to ``FineTuneModule`` for rows read in windows: one logit row per row (the windows'
    pooled), losses averaged over rows, and a line when a test or predict reads long rows unlike its checkpoint's run.
    """

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The backbone's logits for a batch, one row per input row (its windows' pooled, for windowed rows)."""
        logits = super().forward(batch)  # type: ignore[misc]
        meta = batch.get(META) or {}
        if WINDOW_ROW not in meta:
            return logits
        return pool(logits, meta[WINDOW_ROW], meta[WINDOWS], meta[POOL])

    def loss_weight(self, batch: dict[str, Any]) -> int:
        return batch["labels"].shape[0]  # rows, not windows

    def check_data(self, datamodule: Any) -> None:
        if getattr(self, "teacher", None) is not None and getattr(datamodule, "train_windows", False):
            raise ConfigError(
                "data.train_windows",
                "distillation reads one window per training row: drop train_windows (evaluation still pools windows) "
                "or model.teacher",
            )
        super().check_data(datamodule)  # type: ignore[misc]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        trainer = getattr(self, "_trainer", None)
        datamodule = getattr(trainer, "datamodule", None)
        saved = checkpoint.get("datamodule_hyper_parameters") or {}
        if datamodule is None or not saved or not hasattr(datamodule, "long_text"):
            return
        now = {key: datamodule.hparams.get(key) for key in READING_KEYS}
        then = {key: saved.get(key, now[key] if key != "long_text" else "truncate") for key in READING_KEYS}
        changed = [key for key in READING_KEYS if now[key] != then[key]]
        if changed:
            here = ", ".join(f"data.{key}={now[key]}" for key in changed)
            rank_zero_info(
                f"ftlit: long rows are read with {here} here; the checkpoint's run read them with "
                + ", ".join(f"{key}={then[key]}" for key in changed)
            )
