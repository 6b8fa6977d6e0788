"""How many processes read files and how many threads run torch, from the cores this process has.

Measured with ``deepwe predict`` on PhysioNet 2012 set A (warm decoded-file cache) on a 2-core
machine shared with other work: no reading worker (torch on both cores) 190-204 patients/s, one
reading worker with torch on one thread 524-531, two reading workers with torch on one thread
479-486. Torch on two threads beside busy file reading made the small model several times slower
(the threads wait on each other), and a second reader only competed with the model for a core. So
every core but one reads (none on a single core, where the main process reads), and torch keeps
the cores the readers leave (at least one thread).

Training on such a machine (``deepwe train`` on PhysioNet 2012 set A, 3 epochs, the demo
configuration, 2 cores) took 25 s on two torch threads and 30 s on one when the machine was quiet;
with one core kept busy by another process, one thread still took 30 s and two threads more than
300 s. So ``deepwe train`` keeps torch to the cores other processes leave free
(:func:`threads_follow_free_cores`), checked before training and after every epoch.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROC_STAT = Path("/proc/stat")
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (after the cpuN label)
SLACK_CORES = 0.3
"""Another process's load below this share of a core leaves torch the core."""


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


def busy_ticks(stat_text: str, cpus: set[int]) -> int:
    """Clock ticks the CPUs ``cpus`` spent busy since boot, from the text of ``/proc/stat``."""
    total = 0
    for line in stat_text.splitlines():
        label, _, fields = line.partition(" ")
        if label.startswith("cpu") and label[3:].isdigit() and int(label[3:]) in cpus:
            values = fields.split()
            total += sum(int(values[i]) for i in BUSY_FIELDS if i < len(values))
    return total


def threads_beside(other_busy_cores: float, cores: int) -> int:
    """Torch threads for a process on ``cores`` cores of which other processes keep
    ``other_busy_cores`` busy: the cores they leave (at least one)."""
    return max(1, min(cores, cores - math.ceil(other_busy_cores - SLACK_CORES)))


@dataclass(frozen=True)
class _Reading:
    wall: float
    busy_ticks: int
    own_seconds: float


class FreeCoreThreads:
    """Sets torch's intra-op threads to the cores of this process's affinity mask that other
    processes leave free, measured from ``/proc/stat`` between two :meth:`update` calls (busy time
    of those cores minus this process's own CPU time), never above ``most``. Off Linux it leaves
    torch as it is.

    Args:
        most: the most threads to use (torch's own count when the block began, which follows
            ``OMP_NUM_THREADS`` when that is set).
    """

    def __init__(self, most: int) -> None:
        self.most = most
        self.others: float | None = None  # cores other processes kept busy, at the last update
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        self.ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._read()

    def _read(self) -> _Reading | None:
        try:
            import resource

            text = PROC_STAT.read_text()
        except (ImportError, OSError):
            return None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return _Reading(time.monotonic(), busy_ticks(text, self.cpus), usage.ru_utime + usage.ru_stime)

    def update(self) -> int | None:
        """Set torch's threads from the load since the last call; the count set, or None when the
        load cannot be read (torch left as it is)."""
        import torch

        now, last = self._read(), self._last
        if now is None or last is None or not self.cpus or now.wall - last.wall < 0.05:
            return None
        self._last = now
        busy = (now.busy_ticks - last.busy_ticks) / self.ticks_per_second
        others = max(0.0, busy - (now.own_seconds - last.own_seconds)) / (now.wall - last.wall)
        self.others = others
        threads = min(self.most, threads_beside(others, len(self.cpus)))
        if threads != torch.get_num_threads():
            log.info(
                "torch threads: %d (other processes keep %.1f of %d cores busy)",
                threads,
                others,
                len(self.cpus),
            )
            torch.set_num_threads(threads)
        return threads


_free_core_threads: FreeCoreThreads | None = None


@contextlib.contextmanager
def threads_follow_free_cores(probe_seconds: float = 0.3) -> Iterator[FreeCoreThreads]:
    """Within the block, torch runs on the cores other processes leave free (never on more threads
    than it had): measured over ``probe_seconds`` now and again at every :func:`rebalance_threads`
    (training calls it after each epoch). Torch's thread count is restored afterwards.

    Yields:
        The guard, whose ``others`` says how many cores other processes kept busy at the last check.
    """
    global _free_core_threads
    import torch

    before, outer = torch.get_num_threads(), _free_core_threads
    _free_core_threads = FreeCoreThreads(most=before)
    try:
        time.sleep(probe_seconds)
        _free_core_threads.update()
        yield _free_core_threads
    finally:
        _free_core_threads = outer
        torch.set_num_threads(before)


def rebalance_threads() -> None:
    """Inside :func:`threads_follow_free_cores`: follow the load since the last check; else nothing."""
    if _free_core_threads is not None:
        _free_core_threads.update()
