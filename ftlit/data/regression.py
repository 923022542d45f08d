"""Regression data (STS-B style): one text or a text pair per row and one real-valued target."""

from __future__ import annotations

import math
from typing import Any

import datasets

from ftlit.data.classification import TargetEncoder, TextDataModule, column_error
from ftlit.errors import ConfigError


def _to_float(value: Any) -> float | None:
    """The target as a finite float (numbers written as text count: one stray word makes a CSV column text)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class RegressionDataModule(TextDataModule):
    """Text (or text-pair) regression: a score per row, e.g. STS-B similarity or review ratings."""

    def __init__(self, label_column: str = "label", **kwargs: Any) -> None:
        """
        Args:
            label_column: Column holding the numeric target.
            **kwargs: Text columns and shared data options: see ``TextDataModule`` and ``TaskDataModule``.
        """
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.check_target_columns("label_column", [label_column])
        self.label_column = label_column

    def check_targets(self, split: str, ds: datasets.Dataset) -> None:
        if self.label_column not in ds.column_names:
            raise column_error("data.label_column", self.label_column, split, ds)
        for row, value in enumerate(ds[self.label_column]):
            if _to_float(value) is None:
                raise ConfigError(
                    "data.label_column",
                    f"row {row} of the {split} split has target {value!r}: regression needs a finite number",
                )

    def target_fields(self) -> dict[str, Any]:
        return {"label": self.label_column}

    def target_encoder(self, ds: datasets.Dataset) -> TargetEncoder:
        column = self.label_column
        return lambda batch: [_to_float(v) for v in batch[column]]
