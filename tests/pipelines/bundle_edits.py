"""Copies of a model bundle with an edited config, re-hashed so that only the config's content can
be refused (as a bundle edited by someone who also rewrote its manifest)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.bundles.bundle_io import sha256_file


def rehash(folder: Path) -> None:
    """Rewrite the manifest's sha256 of every listed file to match the files as they are now."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {name: sha256_file(folder / name) for name in manifest["files"]}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def bundle_with_config(bundle: Path, target: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """Copy ``bundle`` to ``target``, apply ``edit`` to its ``config.json`` and re-hash; returns ``target``."""
    shutil.copytree(bundle, target)
    config = json.loads((target / "config.json").read_text())
    edit(config)
    (target / "config.json").write_text(json.dumps(config))
    rehash(target)
    return target


def huge_hidden_dim(config: dict[str, Any]) -> None:
    """A fusion width of a billion: a bundle that would exhaust memory if it were built."""
    config["fusion"]["hidden_dim"] = 10**9
