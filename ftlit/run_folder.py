"""A run folder belongs to one run: a fresh fit refuses a folder that holds another run's checkpoints, and a lock
keeps a second live process out while a fit writes there."""

from __future__ import annotations

import os
from pathlib import Path

from ftlit.errors import ConfigError

try:  # POSIX; elsewhere the lock is skipped (the checkpoint check still holds)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".ftlit.lock"
# Ranks a launcher (torchrun, SLURM, Lightning's own) gives to every process but the first.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def check_folder(path: str | os.PathLike, field: str) -> Path:
    """``path`` can be used as a folder: not empty, not a file, not under a file, and writable where it exists."""
    if not str(path).strip():
        raise ConfigError(field, "is empty: give a folder")
    folder = Path(path).expanduser()
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        where = "" if existing == folder else f", so '{folder}' cannot be a folder"
        raise ConfigError(field, f"'{existing}' is a file{where}: give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(field, f"'{existing}' is not writable: give a folder you can write to")
    return folder


def is_launching_process() -> bool:
    """Whether this is the first process of a run (rank 0 of node 0), which alone takes the lock."""
    return all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES)


def checkpoints(dirpath: str | os.PathLike) -> list[Path]:
    """The checkpoint files in ``dirpath``."""
    folder = Path(dirpath)
    return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []


def check_fresh_fit(dirpath: str, field: str, overwrite: bool) -> None:
    """Refuse a new fit into a checkpoint folder that holds another run's checkpoints, unless ``overwrite``.

    Without this, Lightning writes ``last-v1.ckpt`` beside the old run's files, ``--ckpt_path best`` reads the old
    run's best, and a stop of the new run overwrites the old run's ``last.ckpt``.
    """
    found = checkpoints(dirpath)
    if found and not overwrite:
        names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise ConfigError(
            field,
            f"'{dirpath}' already holds a run's checkpoints ({names}): resume it with --ckpt_path last, "
            "give a new folder, or pass --overwrite true to delete them and start again",
        )


class RunLock:
    """An exclusive lock on a run folder for as long as a fit runs (``<folder>/.ftlit.lock``, holding the pid).

    ``flock`` is released by the kernel when the process dies, kill -9 included: a stale lock file never blocks.
    """

    def __init__(self, folder: str | os.PathLike, field: str = "trainer.default_root_dir") -> None:
        self.folder = Path(folder)
        self.field = field
        self._file = None

    def acquire(self) -> None:
        if fcntl is None or self._file is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        file = open(self.folder / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the run's lifetime
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            file.close()
            raise ConfigError(
                self.field,
                f"another ftlit process (pid {holder}) is running in '{self.folder}': wait for it to end or give "
                "another folder",
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def clean_stray_files(dirpath: str | os.PathLike) -> None:
    """Remove the temporary files a kill during a checkpoint save left behind (``.last.ckpt.tmp<pid>``).

    Called with the run's lock held, so no live process is writing them.
    """
    folder = Path(dirpath)
    if not folder.is_dir():
        return
    for stray in sorted(folder.glob(".*.ckpt.tmp*")):
        stray.unlink(missing_ok=True)
        _info(f"ftlit: removed {stray}, left by a run killed while saving a checkpoint")


def delete_checkpoints(dirpath: str | os.PathLike) -> None:
    """Delete a finished run's checkpoints before a fit that was told to ``--overwrite`` it."""
    found = checkpoints(dirpath)
    for path in found:
        path.unlink()
    if found:
        _info(f"ftlit: --overwrite: deleted {len(found)} checkpoint(s) of the previous run in {dirpath}")


def _info(message: str) -> None:
    # Imported here: `ftlit plot` and `ftlit report` use this module and need not load Lightning to start.
    from lightning.pytorch.utilities import rank_zero_info

    rank_zero_info(message)
