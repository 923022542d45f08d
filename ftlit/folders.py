"""Writing an output folder atomically, shared by the small commands (``ftlit export``, ``ftlit plot``)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def sibling(target: Path, kind: str) -> Path:
    """A hidden, unique path beside ``target`` (same file system, so renames are atomic), e.g. ``.model.tmp-1a2b``."""
    return target.with_name(f".{target.name}.{kind}-{uuid.uuid4().hex[:8]}")


def replace_folder(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` to ``target``; an old ``target`` is removed only once the new one is in place."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = sibling(target, "old")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def arg_docs(function: Callable) -> dict[str, str]:
    """``function``'s ``Args:`` descriptions, for flags a parser adds by hand (they get the same help as the rest)."""
    from docstring_parser import parse  # jsonargparse[signatures] depends on it

    return {p.arg_name: " ".join((p.description or "").split()) for p in parse(function.__doc__ or "").params}
