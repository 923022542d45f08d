"""ftlit's error types and how a command reports them: bad input as one line naming the field (exit 2), a failed
run with its reason (exit 1), a stop on a signal with its own code, and a bug as one line plus a traceback file."""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """Bad user input: the message names the config field and how to fix it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss): the message says where it happened and what to try."""


class Stopped(Exception):  # noqa: N818 - a stop, not an error
    """A run stopped by SIGTERM/SIGINT after saving its checkpoint: the exit code is ``128 + signal``, as a shell
    reports a process killed by that signal, so a scheduler tells preemption from completion (0) and failure (1)."""

    def __init__(self, signum: int, message: str) -> None:
        self.code = 128 + signum
        super().__init__(message)


# Where a command's unexpected-error traceback goes: the run folder, once the command knows it.
_run_folder: str | None = None


def set_run_folder(folder: str | os.PathLike | None) -> None:
    """Tell the error reporter which folder the current command writes to (for the traceback file of a bug)."""
    global _run_folder
    _run_folder = None if folder is None else str(folder)


def config_error_in(err: BaseException | None) -> ConfigError | None:
    """The ConfigError behind ``err``, also when jsonargparse wrapped it (errors inside argument links)."""
    while err is not None and not isinstance(err, ConfigError):
        err = err.__cause__
    return err


def parser_error(message: str) -> str:
    """jsonargparse's nested, many-line error as one line: ``<key>: <problem>``."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    unknown = re.search(r"Option '([^']+)' is not accepted", message)
    if unknown:
        # Name the class: an option of another task's class (NER keys under a classification data module) reads
        # as a wrong pairing, not only as a typo.
        owner = re.search(r"given class_path '([^']+)'", message)
        of = f" of {owner.group(1)}" if owner else ""
        return f"{'.'.join([*keys, unknown.group(1)])}: no such option{of}: check the spelling (--help lists them)"
    missing = re.search(r"arguments are required: ([\w.]+)", message)
    if missing:
        return f"{missing.group(1)}: required: pass --{missing.group(1)} (see --help)"
    if keys:
        after = message.rsplit(f'Parser key "{keys[-1]}":', 1)[1]
        detail = next((line.strip() for line in after.splitlines() if line.strip()), "invalid value")
        return f"{'.'.join(keys)}: {_type_problem(detail, after)}"
    return next((line.strip() for line in message.splitlines() if line.strip()), message)


def _type_name(text: str) -> str:
    """A jsonargparse type as a user writes it: ``<class 'int'>`` -> ``int``, NoneType -> ``null``."""
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text.strip())
    literal = re.fullmatch(r"(?:typing\.)?Literal\[(.*)\]", text)
    if literal:
        return "one of " + ", ".join(item.strip() for item in _split_top_level(literal.group(1)))
    return "null" if text == "NoneType" else text


def _split_top_level(text: str) -> list[str]:
    """``a, dict[int, list[int]], b`` -> its three items (commas inside brackets stay)."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return [item for item in (*items, text[start:]) if item.strip()]


def _type_problem(detail: str, after: str) -> str:
    """A wrong-type message as the expected type and the given value, e.g. ``expected int or null, got 1.5``:
    jsonargparse's own says "Does not validate against any of the Union subtypes" for every optional key."""
    expected = re.match(r"Expected a (.+?)\. Got value: (.*)", detail)
    if expected:
        return f"expected {_type_name(expected.group(1))}, got {expected.group(2)}: fix the value (see --help)"
    subtypes = re.search(r"Subtypes: \[(.*)\]\s*$", after, re.MULTILINE)
    given = re.search(r"Given value: (.*)$", after, re.MULTILINE)
    if detail.startswith("Does not validate against any of the Union subtypes") and subtypes and given:
        names = " or ".join(_type_name(t) for t in _split_top_level(subtypes.group(1)))
        return f"expected {names}, got {given.group(1).strip()}: fix the value (see --help)"
    return detail


def _internal_error(err: BaseException) -> str:
    """Write ``err``'s traceback to a file in the run folder (or the temp folder) and return the file's path."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    for folder in (_run_folder, tempfile.gettempdir()):
        if folder is None:
            continue
        path = Path(folder) / f"ftlit-error-{stamp}-{os.getpid()}.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return str(path)
        except OSError:
            continue
    return "(no writable folder; rerun with FTLIT_TRACEBACK=1)"


def report_errors(run: Callable[[], T]) -> T:
    """Return ``run()``; bad input exits with one line naming the field (code 2), a failed run with its reason (1),
    a run stopped by a signal with ``128 + signal``, and an unexpected error (a bug) with one line and a traceback
    file (1). ``FTLIT_TRACEBACK=1`` lets the unexpected error through, traceback and all."""
    try:
        return run()
    except Stopped as stop:
        print(f"ftlit: {stop}", file=sys.stderr)
        sys.exit(stop.code)
    except TrainingError as err:
        print(f"ftlit: error: {err}", file=sys.stderr)
        sys.exit(1)
    except argparse.ArgumentError as err:
        print(f"ftlit: error: {parser_error(str(err))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("ftlit: interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except Exception as err:
        config_error = config_error_in(err)
        if config_error is not None:
            print(f"ftlit: error: {config_error}", file=sys.stderr)
            sys.exit(2)
        if os.environ.get("FTLIT_TRACEBACK") == "1":
            raise
        where = _internal_error(err)
        message = " ".join(str(err).split())[:300] or type(err).__name__
        print(
            f"ftlit: error: internal error: {type(err).__name__}: {message}; full traceback in {where}", file=sys.stderr
        )
        sys.exit(1)
