"""How many processes read files and how many threads run torch, from the cores this process has.

Measured with ``deepwe predict`` on PhysioNet 2012 set A (warm decoded-file cache) on a 2-core
machine shared with other work: no reading worker (torch on both cores) 190-204 patients/s, one
reading worker with torch on one thread 524-531, two reading workers with torch on one thread
479-486. Torch on two threads beside busy file reading made the small model several times slower
(the threads wait on each other), and a second reader only competed with the model for a core. So
every core but one reads (none on a single core, where the main process reads), and torch keeps
the cores the readers leave (at least one thread).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers(cores: int | None = None) -> int:
    """DataLoader worker processes reading files: one per core but the one the model runs on (none
    on a single core: there the main process reads, and a worker would only add copying)."""
    cores = available_cores() if cores is None else cores
    return max(0, cores - 1)


def torch_threads(workers: int, cores: int | None = None) -> int:
    """Threads for torch in the main process beside ``workers`` reading processes (at least one)."""
    cores = available_cores() if cores is None else cores
    return max(1, cores - workers)


_PR_SET_PDEATHSIG = 1


def _die_with(parent: int, worker_id: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def die_with_parent() -> Callable[[int], None]:
    """A DataLoader ``worker_init_fn`` under which reading workers die with this process (Linux).

    A worker blocked handing a batch to a parent that was killed (``kill -9``) would otherwise wait
    for ever, holding its memory; PyTorch's own check of the parent only runs between batches.
    """
    return functools.partial(_die_with, os.getpid())
