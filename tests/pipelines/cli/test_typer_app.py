"""The one typer app: every command registered on it, in the order of ``deepwe --help``, with help."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()

COMMANDS = (
    "validate", "synth", "import", "train", "tune", "predict", "merge", "explain", "evaluate", "report",
    "dashboard", "demo", "audit", "cache", "export",
)  # fmt: skip


@pytest.mark.parametrize("command", ["validate", "synth", "demo", "import", "train", "predict", "export"])
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_help_lists_every_command_group_in_order():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    listed = re.findall(r"^│ (\w+)\s{2,}", result.output, flags=re.MULTILINE)
    assert tuple(name for name in listed if name in COMMANDS) == COMMANDS
