"""``deepwe train`` on a machine another process keeps busy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.common.parallelism import available_cores
from tests.pipelines.conftest import REPO

runner = CliRunner()


def test_train_gives_up_a_thread_to_a_busy_process_and_says_so(synth_cohort, tmp_path):
    if available_cores() < 2 or not os.path.exists("/proc/stat"):
        pytest.skip("needs two cores and /proc/stat")
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    config.update(epochs=1, patience=1, text_cache=str(tmp_path / "text-cache"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    torch.set_num_threads(2)  # the autouse fixture restores the count afterwards
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        arguments = ["train", str(synth_cohort / "cohort.yaml"), "--out", str(tmp_path / "model")]
        result = runner.invoke(
            app, [*arguments, "--config", str(tmp_path / "config.yaml"), "--device", "cpu"]
        )
    finally:
        busy.kill()
        busy.wait()
    assert result.exit_code == 0, result.output
    assert "torch on 1 of 2 threads: other processes keep" in result.output
    assert torch.get_num_threads() == 2  # given back after training
