"""Model bundles on disk: a folder of safetensors and JSON with a manifest of sha256 hashes.

Never a pickle: weights and the reference cohort are safetensors, everything else is JSON or
Markdown, and loading refuses any file the manifest does not list, any listed file that is missing,
any hash that does not match and any format version it does not know.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from data_schemas import BundleManifest, CohortSpec
from data_schemas.bundle import BUNDLE_FILES, BUNDLE_FORMAT_VERSION
from pipelines.bundles.bundle_checks import HeaderError, check_config_sizes, tensor_shapes
from pipelines.common.json_values import json_text

MANIFEST = "manifest.json"
_LIBRARIES = ("torch", "transformers", "timm", "monai", "numpy", "pandas", "pydantic", "safetensors")


class BundleError(ValueError):
    """A bundle that cannot be trusted or read; the message says which file and why."""


@dataclass(frozen=True)
class BundleContents:
    """Everything a bundle holds, verified.

    Attributes:
        weights: parameter name -> tensor (the whole model's state dict).
        reference: reference-cohort tensors (``embeddings`` (R, H), ``labels`` (R,), ...).
        reference_ids: R pseudonymous ids of the reference patients.
    """

    path: Path
    manifest: BundleManifest
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    preprocessing: dict[str, Any]
    reference: dict[str, torch.Tensor]
    reference_ids: list[str]
    calibration: dict[str, Any]
    metrics: dict[str, Any]
    model_card: str

    @property
    def sha256(self) -> str:
        """The bundle's identity: the sha256 of its manifest file."""
        return sha256_file(self.path / MANIFEST)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    """The package version, with the git commit when running from a checkout."""
    version = metadata.version("deepwe-mm")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}" if commit else version


def library_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in _LIBRARIES}


def training_fingerprint(spec: CohortSpec, table: Path | bytes) -> str:
    """sha256 of the spec (canonical JSON) and the bytes of the training table (its file, or the
    bytes of a table held in memory)."""
    digest = hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode())
    digest.update(table if isinstance(table, bytes) else table.read_bytes())
    return digest.hexdigest()


def write_bundle(
    folder: str | Path,
    *,
    spec: CohortSpec,
    data_fingerprint: str,
    config: dict[str, Any],
    weights: dict[str, torch.Tensor],
    preprocessing: dict[str, Any],
    reference: dict[str, torch.Tensor],
    reference_ids: list[str],
    calibration: dict[str, Any],
    metrics: dict[str, Any],
    model_card: str,
) -> Path:
    """Write a bundle atomically: into a sibling temporary folder, then renamed into place.

    An existing bundle at ``folder`` is replaced only once the new one is complete.
    """
    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "config.json").write_text(json_text(config), encoding="utf-8")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(staging / "weights.safetensors")
    )
    (staging / "preprocessing.json").write_text(json_text(preprocessing), encoding="utf-8")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in reference.items()},
        str(staging / "reference.safetensors"),
        metadata={"ids": json.dumps(reference_ids)},
    )
    (staging / "calibration.json").write_text(json_text(calibration), encoding="utf-8")
    (staging / "metrics.json").write_text(json_text(metrics), encoding="utf-8")
    (staging / "model_card.md").write_text(model_card, encoding="utf-8")
    manifest = BundleManifest(
        format_version=BUNDLE_FORMAT_VERSION,
        code_version=code_version(),
        library_versions=library_versions(),
        created_at=datetime.now(UTC),
        files={name: sha256_file(staging / name) for name in BUNDLE_FILES},
        cohort_spec=spec,
        training_data_fingerprint=data_fingerprint,
    )
    (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    if folder.exists():
        retired = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        folder.rename(retired)
        staging.rename(folder)
        shutil.rmtree(retired)
    else:
        staging.rename(folder)
    return folder


def read_bundle(folder: str | Path) -> BundleContents:
    """Read and verify a bundle.

    Raises:
        BundleError: the folder is not a bundle, a file is unlisted, missing or altered, or the
            format version is unknown.
    """
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise BundleError(f"{folder}: not a model bundle (no {MANIFEST})")
    try:
        manifest = BundleManifest.model_validate_json((folder / MANIFEST).read_text(encoding="utf-8"))
    except ValueError as error:
        raise BundleError(f"{folder / MANIFEST}: not a valid bundle manifest ({error})") from None
    if manifest.format_version != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{folder}: bundle format version {manifest.format_version}; this release reads version "
            f"{BUNDLE_FORMAT_VERSION}"
            + (
                " (older bundles predate the fusion core's stochastic gates and additive modality "
                "evidence: train the model again with this release)"
                if manifest.format_version < BUNDLE_FORMAT_VERSION
                else ""
            )
        )
    present = {p.name for p in folder.iterdir()} - {MANIFEST}
    unlisted = sorted(present - set(manifest.files))
    if unlisted:
        raise BundleError(f"{folder}: files not listed in the manifest: {unlisted}; refusing to load")
    if set(manifest.files) != set(BUNDLE_FILES):
        raise BundleError(f"{folder}: manifest lists {sorted(manifest.files)}, expected {list(BUNDLE_FILES)}")
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.is_file() or path.is_symlink():
            raise BundleError(f"{path}: listed in the manifest but missing (or not a regular file)")
        if sha256_file(path) != expected:
            raise BundleError(f"{path}: sha256 does not match the manifest; the file was altered")
    shapes = {}
    for name in ("weights.safetensors", "reference.safetensors"):
        try:  # the header first: a malformed one is refused in one line, before the loader sees it
            shapes |= {f"{name}:{key}": shape for key, shape in tensor_shapes(folder / name).items()}
        except HeaderError as error:
            raise BundleError(str(error)) from None
    config = _read_json(folder / "config.json")
    if not isinstance(config, dict):
        raise BundleError(f"{folder / 'config.json'}: expected a JSON object")
    try:
        check_config_sizes(
            {k: config.get(k) for k in ("encoders", "fusion", "trees")}, shapes, str(folder / "config.json")
        )
    except ValueError as error:
        raise BundleError(str(error)) from None
    reference = load_file(str(folder / "reference.safetensors"))
    with safe_open(str(folder / "reference.safetensors"), framework="pt") as handle:
        ids = json.loads((handle.metadata() or {}).get("ids", "[]"))
    return BundleContents(
        path=folder,
        manifest=manifest,
        config=config,
        weights=load_file(str(folder / "weights.safetensors")),
        preprocessing=_read_json(folder / "preprocessing.json"),
        reference=reference,
        reference_ids=ids,
        calibration=_read_json(folder / "calibration.json"),
        metrics=_read_json(folder / "metrics.json"),
        model_card=(folder / "model_card.md").read_text(encoding="utf-8"),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise BundleError(f"{path}: invalid JSON at line {error.lineno}") from None
