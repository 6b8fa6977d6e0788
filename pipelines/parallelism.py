"""How many processes read files and how many threads run torch, from the cores this process has.

Measured on a 2-core machine shared with other work (benchmarks/speed.py): torch on two threads
beside busy file readers made small models several times slower (the threads wait on each other),
while reading in DataLoader workers kept the model's one thread busy. So every core but none reads
on a single core, and torch keeps one thread per core the readers leave free (at least one).
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers(cores: int | None = None) -> int:
    """DataLoader worker processes reading files: one per core, none on a single core (there the
    main process reads, and a worker would only add copying)."""
    cores = available_cores() if cores is None else cores
    return cores if cores >= 2 else 0


def torch_threads(workers: int, cores: int | None = None) -> int:
    """Threads for torch in the main process beside ``workers`` reading processes (at least one)."""
    cores = available_cores() if cores is None else cores
    return max(1, cores - workers)
