"""Rows read in overlapping windows: a text longer than ``max_length`` tokens, tokenized with
``return_overflowing_tokens=True``, becomes several windows, which a cached row keeps together (one list per key) and
a batch flattens again. Question answering (a long context) and text classification (a long document) share this:
keeping a row's windows in one cached row means a sampler shards rows, not windows, so every row is evaluated once,
on one rank, whole."""

from __future__ import annotations

from typing import Any


def group_windows(values: dict[str, list], owner: list[int], rows: int) -> dict[str, list[list]]:
    """Each key's per-window values gathered under the row they came from, in window order.

    Args:
        values: Per key, one value per window (a tokenizer's output, offsets, ...).
        owner: The row of each window (the tokenizer's ``overflow_to_sample_mapping``).
        rows: How many rows were tokenized.
    """
    out: dict[str, list[list]] = {key: [[] for _ in range(rows)] for key in values}
    for key, per_window in values.items():
        for w, row in enumerate(owner):
            out[key][row].append(per_window[w])
    return out


def flatten_windows(features: list[dict[str, Any]], keys: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[int]]:
    """The windows of a batch's rows, one dict of ``keys`` each, and the batch row of each window.

    Args:
        features: Rows whose ``keys`` each hold one value per window (``input_ids`` among them).
        keys: The per-window keys to take.
    """
    windows, owner = [], []
    for row, feature in enumerate(features):
        for w in range(len(feature["input_ids"])):
            windows.append({key: feature[key][w] for key in keys})
            owner.append(row)
    return windows, owner
