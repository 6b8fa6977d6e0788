"""Keep decoded input files in memory across reads: an opt-in for runs that read the same files often.

Training re-reads every file each epoch, and a benchmark trains many models (folds, seeds,
ablations) on the same files. Inside :func:`keep_decoded_files` every file decoded through
:func:`remembered` is kept, keyed by what was read and how, so each file is parsed once per block::

    with keep_decoded_files():
        for fold in folds:
            train(fold.spec, fold.out, config)

Validation's check of each file's header is kept the same way. Within a block files are taken not
to change. Outside the block nothing is kept (the default: a cohort can be far larger than
memory). Kept values are shared, so callers must not modify them in place (the readers' consumers build new
arrays). Files that fail to read are not kept: they fail again, with the same error, every time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

_kept: dict[tuple[Hashable, str], Any] | None = None


@contextmanager
def keep_decoded_files() -> Iterator[dict[tuple[Hashable, str], Any]]:
    """Within the block, decoded files are kept in memory (nested blocks share the outer memory).

    Yields:
        The memory itself: ``(how, path) -> decoded value`` (for its size, or to clear it early).
    """
    global _kept
    outer = _kept
    _kept = {} if outer is None else outer
    try:
        yield _kept
    finally:
        _kept = outer


def remembered(how: Hashable, path: str, read: Callable[[str], T]) -> T:
    """``read(path)``, or the value kept from an earlier read of ``path`` the same ``how``."""
    if _kept is None:
        return read(path)
    key = (how, path)
    if key not in _kept:
        _kept[key] = read(path)
    return _kept[key]
