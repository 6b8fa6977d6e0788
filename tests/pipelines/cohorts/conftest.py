"""Fixtures of the cohort-stage tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_file


@pytest.fixture
def p12_file(tmp_path: Path) -> Path:
    """A copy of one PhysioNet 2012 record with one malformed line appended (skips without the data)."""
    target = tmp_path / "files" / "132539.txt"
    target.parent.mkdir()
    text = shared_file("physionet2012", "set-a", "132539.txt").read_text()
    target.write_text(text + "bad line\n")  # one skipped line travels with the entry
    return target
