"""One writer per output: an exclusive lock on the ``<out>.partial`` folder of a prediction run.

Two runs writing the same ``--out`` would otherwise take each other's finished chunks for their own.
The lock is a POSIX record lock (``fcntl.lockf``) on ``owner.pid`` in the folder, which also holds
the holder's pid so that a refused run can say who holds it. A record lock belongs to the process:
it is released when the process ends, however it ends (a ``kill -9`` leaves no stale lock), and,
unlike ``flock``, it is not shared with the DataLoader workers the process forks, so workers that
outlive a killed run for a few seconds do not keep its output locked. Record locks do not exclude
a second holder in the same process, so this process's own holds are kept in a set as well.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OWNER_FILE = "owner.pid"

_held: set[Path] = set()
_held_guard = threading.Lock()


class OutputBusy(RuntimeError):
    """Another process is writing the same output."""


def partial_folder(out: Path) -> Path:
    """Where a run writing ``out`` keeps its finished chunks."""
    return out.with_name(out.name + ".partial")


@contextmanager
def locked_partial(out: Path) -> Iterator[Path]:
    """Create (or reuse) ``<out>.partial/`` and hold an exclusive lock on it for the block.

    Raises:
        OutputBusy: another process (or this one) holds the lock; the message names the output and
            the holder's pid.
    """
    partial = partial_folder(out)
    key = partial.absolute()
    with _held_guard:
        if key in _held:
            raise _busy(out, str(os.getpid()))
        _held.add(key)
    try:
        fd = _lock_owner_file(out, partial)
        try:
            os.ftruncate(fd, 0)  # written through the locked descriptor: closing another would unlock
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield partial
        finally:
            os.close(fd)
    finally:
        with _held_guard:
            _held.discard(key)


def _lock_owner_file(out: Path, partial: Path) -> int:
    """A descriptor of ``partial/owner.pid`` holding its record lock (the folder is created)."""
    while True:
        partial.mkdir(parents=True, exist_ok=True)
        fd = os.open(partial / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise _busy(out, holder if holder.isdigit() else "unknown") from None
        try:
            same = os.stat(partial / OWNER_FILE).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the run that held it finished and removed the folder: take the new one


def _busy(out: Path, pid: str) -> OutputBusy:
    return OutputBusy(
        f"another deepwe predict is writing {out} (pid {pid}); wait for it to finish or write to "
        "another --out"
    )


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
