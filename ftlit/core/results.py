"""The files a run writes for scripts, ``ftlit plot`` and ``ftlit report`` to read numbers instead of logs:
``test-results.json`` (every ``ftlit test``), ``metric-directions.json`` (every fit) and ``timing.json``. Imports
no torch, so the readers start fast."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RESULTS = "test-results.json"
# Whether higher is better for each metric a fit logs, written when it starts: plots and reports read it.
DIRECTIONS = "metric-directions.json"
# How long the fit and the test took (callbacks/clock.py).
TIMING = "timing.json"
# Bumped when a key changes meaning, so readers can refuse what they do not know.
FORMAT = 1
# At most this many points per curve in the file: enough to draw, small on a 100k-row test split.
CURVE_POINTS = 201


def versions() -> dict[str, str]:
    """Python's and the main libraries' versions, as a run's record."""
    found = {"python": platform.python_version()}
    for name in ("ftlit", "torch", "lightning", "transformers", "torchmetrics", "datasets"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def plain(value: Any) -> Any:
    """``value`` with tensors as numbers or lists and non-finite floats as ``None`` (JSON has no NaN)."""
    if hasattr(value, "tolist") and callable(value.tolist):  # tensors and numpy arrays; torch is not imported here
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def thin(*columns: list[float], points: int = CURVE_POINTS) -> list[list[float]]:
    """Every column of a curve cut to at most ``points`` evenly spaced rows, the first and last always kept."""
    n = len(columns[0]) if columns else 0
    if n <= points:
        return [list(c) for c in columns]
    keep = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
    return [[c[i] for i in keep] for c in columns]


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON atomically: a crash mid-write leaves the previous file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(plain(data), indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_results(folder: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results``, with the format, the time and the versions, to ``<folder>/test-results.json``."""
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return write_json(Path(folder) / RESULTS, {"format": FORMAT, "created": created, **results, "versions": versions()})


def score_table(
    names: list[str], tp: list[int], fp: list[int], fn: list[int], key: str = "label"
) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support of each class (or entity type) from its true positives, false positives and
    false negatives; 0 where a ratio has nothing to divide (torchmetrics' and scikit-learn's default)."""

    def ratio(a: float, b: float) -> float:
        return a / b if b else 0.0

    return [
        {
            key: name,
            "precision": ratio(t, t + p),
            "recall": ratio(t, t + n),
            "f1": ratio(2 * t, 2 * t + p + n),
            "support": int(t + n),
        }
        for name, t, p, n in zip(names, tp, fp, fn, strict=True)
    ]
