"""What the small commands (``ftlit export``, ``plot``, ``report``, ``explain``) share: their parser, and writing
an output folder atomically."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser

from ftlit.errors import ConfigError
from ftlit.run_folder import check_folder


def check_target(target: Path, overwrite: bool, protected: dict[str, Path] | None = None) -> bool:
    """Refuse an output folder that would lose data; return whether an existing folder is to be replaced.

    A file, or a non-empty folder without ``overwrite``, is an error; so is a folder holding a ``protected`` path
    (``{what: path}``, e.g. the checkpoint) or the current directory, which ``--overwrite`` would delete.
    """
    check_folder(target, "out")
    if not target.is_dir() or not any(target.iterdir()):
        return False
    if not overwrite:
        raise ConfigError("out", f"'{target}' exists and is not empty: pass --overwrite or another folder")
    resolved = target.resolve()
    for what, inside in {**(protected or {}), "the current directory": Path.cwd()}.items():
        if inside.resolve().is_relative_to(resolved):
            raise ConfigError("out", f"'{target}' holds {what}, and --overwrite would delete it: give another folder")
    return True


def sibling(target: Path, kind: str) -> Path:
    """A hidden, unique path beside ``target`` (same file system, so renames are atomic), e.g. ``.model.tmp-1a2b``."""
    return target.with_name(f".{target.name}.{kind}-{uuid.uuid4().hex[:8]}")


def readable_as_umask_allows(folder: Path) -> None:
    """Give every file under ``folder`` the mode a plain ``open(..., "w")`` would: transformers 5 writes
    model.safetensors 0600, so a server or container running as another user could not read the export."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~umask)


def replace_folder(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` to ``target``, its files as readable as the umask allows; an old ``target`` is
    removed only once the new one is in place."""
    readable_as_umask_allows(tmp)
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


def command_parser(
    function: Callable, prog: str, flags: tuple[str, ...] = (), skip: tuple[str, ...] = ()
) -> ArgumentParser:
    """A command's parser: ``function``'s signature (its docstring is the help), parse errors raised rather than
    printed with the whole usage (``report_errors`` prints them as one line), and the boolean ``flags`` as bare
    switches (``--overwrite``; ``--overwrite=false`` and ``--no_overwrite`` still work, where jsonargparse would
    want ``--overwrite true``). Arguments in ``skip`` are left for the caller to add."""
    description = (function.__doc__ or "").split("\n\n")[0]
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_function_arguments(function, as_group=False, skip={*flags, *skip})
    helps = arg_docs(function)
    for flag in flags:
        parser.add_argument(f"--{flag}", action=ActionYesNo, nargs="?", default=False, help=helps.get(flag))
    return parser
