"""The default split of cores between file-reading workers and torch threads."""

from __future__ import annotations

import os

import pytest

from pipelines.common.parallelism import available_cores, default_workers, torch_threads


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
