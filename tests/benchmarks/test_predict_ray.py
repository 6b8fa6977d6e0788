"""The process-tree memory measure of the engine benchmark counts children, not only the parent."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.predict_ray import _tree_rss_mib, configurations


def test_tree_memory_counts_a_child_process():
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; block = bytearray(300 * 2**20); time.sleep(30)"]
    )
    try:
        deadline = time.monotonic() + 20
        while _tree_rss_mib(child.pid) < 300 and time.monotonic() < deadline:
            time.sleep(0.1)
        alone = _tree_rss_mib(child.pid)
        assert alone >= 300
        with_parent = _tree_rss_mib(os.getpid())
        assert with_parent >= alone + 20  # this test process's own memory comes on top
    finally:
        child.kill()
        child.wait()


def test_the_runs_compared_are_local_local_with_workers_and_ray():
    runs = configurations(2, 0.5)
    assert list(runs) == ["local", "local --workers 2", "ray"]
    assert runs["ray"] == ["--engine", "ray", "--workers", "2", "--cpus-per-worker", "0.5"]
