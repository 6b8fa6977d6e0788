"""Helpers for tests that start servers in their own process group."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the process group of ``process`` (started with ``start_new_session=True``), then
    SIGKILL it if it has not ended within ``timeout`` seconds."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
