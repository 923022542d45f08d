"""Reading raw splits from local files or the Hugging Face Hub, with errors that name the field to fix."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import datasets
from datasets.exceptions import DatasetGenerationError

from ftlit.errors import ConfigError

# file extension -> (datasets builder, extra builder kwargs)
FORMATS: dict[str, tuple[str, dict]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
SPLITS = ("train", "validation", "test", "predict")


def check_file(path: str, field: str) -> Path:
    """An existing, non-empty file with a known extension, or a ConfigError naming ``field``."""
    p = Path(path).expanduser()
    if p.is_dir():
        # Checked first: a folder has no suffix, and "unknown file type" or "does not exist" would mislead.
        inside = sorted(c.name for c in p.iterdir() if c.is_file() and c.suffix.lower() in FORMATS)
        hint = f"one of its files ({', '.join(inside[:5])})" if inside else f"a data file ({', '.join(FORMATS)})"
        raise ConfigError(field, f"'{path}' is a folder, not a file: give the path of {hint}")
    if p.suffix.lower() not in FORMATS:
        known = ", ".join(FORMATS)
        raise ConfigError(field, f"unknown file type '{p.suffix}' for '{path}': use one of {known}")
    if not p.is_file():
        raise ConfigError(field, f"file '{path}' does not exist: check the path")
    if p.stat().st_size == 0:
        raise ConfigError(field, f"file '{path}' is empty: give a file with data rows")
    return p


def file_fingerprint(path: str) -> dict:
    """What identifies a file's content cheaply for the tokenization cache key."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def load_file(path: str, field: str, cache_dir: str | None = None) -> datasets.Dataset:
    """One local file as a ``datasets.Dataset``, its Arrow copy written under ``cache_dir`` (the run's cache:
    without it, datasets writes to its own, ``~/.cache/huggingface/datasets``, whatever the user's cache setting)."""
    p = check_file(path, field)
    builder, kwargs = FORMATS[p.suffix.lower()]
    if builder == "csv" and _header_only(p):
        raise ConfigError(field, f"file '{path}' has no rows below its header: give a file with data rows")
    try:
        ds = datasets.load_dataset(builder, data_files={"data": str(p)}, split="data", cache_dir=cache_dir, **kwargs)
    except Exception as err:  # datasets raises many types for malformed files
        raise ConfigError(field, f"could not read '{path}' as {builder}: {_reason(err)}") from None
    if len(ds) == 0:
        raise ConfigError(field, f"file '{path}' has no rows: give a file with data rows")
    return ds


def _reason(err: BaseException) -> str:
    """The first line of the parser's error, which datasets wraps in a generic ``DatasetGenerationError``."""
    while isinstance(err, DatasetGenerationError) and (err.__cause__ or err.__context__) is not None:
        err = err.__cause__ or err.__context__
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _header_only(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return len(list(islice((line for line in f if line.strip()), 2))) <= 1


def load_hub(
    name: str, config: str | None, splits: dict[str, str] | None, cache_dir: str | None = None
) -> dict[str, datasets.Dataset]:
    """The requested splits of a Hub dataset, ``{ftlit split: dataset}``, downloaded and cached under ``cache_dir``
    (as :func:`load_file`).

    Without ``splits``, the dataset's own ``train``/``validation``/``test`` splits are used where present.
    """
    try:
        available = datasets.load_dataset(name, config, cache_dir=cache_dir)
    except Exception as err:
        raise ConfigError(
            "data.dataset", f"could not load '{name}' ({_reason(err)}): check the name or use local files"
        ) from None
    if splits is None:
        splits = {s: s for s in ("train", "validation", "test") if s in available}
    for theirs in splits.values():
        if theirs not in available:
            raise ConfigError("data.hub_splits", f"'{name}' has no split '{theirs}' (it has: {', '.join(available)})")
    return {ours: available[theirs] for ours, theirs in splits.items()}
