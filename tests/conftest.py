"""Shared fixtures: a seeded, offline, deterministic test run."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DEEPWE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed_everything():
    """Seed every generator and restore torch's global state after the test."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(scope="session", autouse=True)
def _session_decoded_cache(tmp_path_factory):
    """Session fixtures (trained bundles) decode into a test folder, never the user's cache."""
    before = os.environ.get("DEEPWE_CACHE_DIR")
    os.environ["DEEPWE_CACHE_DIR"] = str(tmp_path_factory.mktemp("session-decoded-cache"))
    yield
    if before is None:
        os.environ.pop("DEEPWE_CACHE_DIR", None)
    else:
        os.environ["DEEPWE_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def _own_decoded_cache(tmp_path_factory, monkeypatch):
    """Each test decodes into a fresh cache folder of its own, never the user's cache."""
    monkeypatch.setenv("DEEPWE_CACHE_DIR", str(tmp_path_factory.mktemp("decoded-cache")))


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; skips the test when the real data is not beside the repository."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def shared_file(*parts: str) -> Path:
    """A file under ``../shared/data``, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data file {path} is absent")
    return path
