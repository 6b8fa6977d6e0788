"""The default split of cores between file-reading workers and torch threads, and torch threads
that keep to the cores other processes leave free."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pipelines.common.parallelism import (
    available_cores,
    busy_ticks,
    default_workers,
    threads_beside,
    threads_follow_free_cores,
    torch_threads,
)


def test_a_single_core_reads_in_the_main_process_with_one_torch_thread():
    assert default_workers(1) == 0
    assert torch_threads(default_workers(1), 1) == 1


@pytest.mark.parametrize("cores", [2, 4, 16])
def test_every_core_but_the_model_s_reads_and_torch_keeps_one_thread(cores):
    assert default_workers(cores) == cores - 1
    assert torch_threads(default_workers(cores), cores) == 1
    assert torch_threads(0, cores) == cores


def test_available_cores_follows_the_affinity_mask():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity masks on this platform")
    assert available_cores() == len(os.sched_getaffinity(0))


def test_busy_ticks_add_up_the_busy_fields_of_the_cpus_asked_for():
    stat = (
        "cpu  100 1 20 900 7 0 3 0 0 0\n"
        "cpu0 10 1 2 400 5 0 1 4 0 0\n"  # busy: user, nice, system, irq, softirq, steal
        "cpu1 50 0 10 500 2 3 2 1 0 0\n"
        "intr 6726036 0 0\n"
    )
    assert busy_ticks(stat, {0}) == 10 + 1 + 2 + 0 + 1 + 4
    assert busy_ticks(stat, {1}) == 50 + 0 + 10 + 3 + 2 + 1
    assert busy_ticks(stat, {0, 1}) == 18 + 66
    assert busy_ticks(stat, {5}) == 0


@pytest.mark.parametrize(
    ("others", "cores", "threads"),
    [(0.0, 2, 2), (0.2, 2, 2), (0.9, 2, 1), (1.0, 2, 1), (3.0, 2, 1), (1.0, 16, 15), (2.5, 16, 13)],
)
def test_torch_gets_the_cores_other_processes_leave(others, cores, threads):
    assert threads_beside(others, cores) == threads


def test_a_busy_process_beside_training_takes_a_torch_thread_away_and_the_count_is_restored():
    cores = available_cores()
    if cores < 2 or not os.path.exists("/proc/stat"):
        pytest.skip("needs two cores and /proc/stat")
    torch.set_num_threads(cores)  # the autouse fixture restores the count afterwards
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with threads_follow_free_cores(probe_seconds=1.0):
            during = torch.get_num_threads()
    finally:
        busy.kill()
        busy.wait()
    assert during <= cores - 1
    assert torch.get_num_threads() == cores


def test_the_guard_never_uses_more_threads_than_torch_had():
    if not os.path.exists("/proc/stat"):
        pytest.skip("needs /proc/stat")
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 would; the autouse fixture restores the count
    with threads_follow_free_cores(probe_seconds=0.2):
        assert torch.get_num_threads() == 1
