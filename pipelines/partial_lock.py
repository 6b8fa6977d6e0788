"""One writer per output: an exclusive lock on the ``<out>.partial`` folder of a prediction run.

Two runs writing the same ``--out`` would otherwise take each other's finished chunks for their own.
The lock is ``fcntl.flock`` on the folder itself, so it is released when the process ends, however
it ends (a ``kill -9`` leaves no stale lock). The holder's pid is written to ``owner.pid`` in the
folder so that a refused run can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OWNER_FILE = "owner.pid"


class OutputBusy(RuntimeError):
    """Another process is writing the same output."""


def partial_folder(out: Path) -> Path:
    """Where a run writing ``out`` keeps its finished chunks."""
    return out.with_name(out.name + ".partial")


@contextmanager
def locked_partial(out: Path) -> Iterator[Path]:
    """Create (or reuse) ``<out>.partial/`` and hold an exclusive lock on it for the block.

    Raises:
        OutputBusy: another process holds the lock; the message names the output and its pid.
    """
    partial = partial_folder(out)
    while True:
        partial.mkdir(parents=True, exist_ok=True)
        fd = os.open(partial, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusy(
                f"another deepwe predict is writing {out} (pid {_owner(partial)}); wait for it to "
                "finish or write to another --out"
            ) from None
        try:
            same = os.stat(partial).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the run that held it finished and removed the folder: take the new one
    try:
        (partial / OWNER_FILE).write_text(f"{os.getpid()}\n")
        yield partial
    finally:
        os.close(fd)


def clear(partial: Path) -> None:
    """Remove everything in a locked partial folder except its owner file."""
    for entry in partial.iterdir():
        if entry.name == OWNER_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def remove(partial: Path) -> None:
    """Remove a locked partial folder (call before leaving :func:`locked_partial`)."""
    shutil.rmtree(partial, ignore_errors=True)


def _owner(partial: Path) -> str:
    try:
        text = (partial / OWNER_FILE).read_text().strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
