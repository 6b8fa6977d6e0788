"""MedMNIST v2 (2D, single-label): the images of an ``.npz`` file as PNGs, with the official split.

The file holds ``{split}_images`` (uint8, ``(N, H, W)`` or ``(N, H, W, 3)``) and ``{split}_labels``
(``(N,)`` or ``(N, 1)``) for ``split`` in train, val, test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.sources.importers._common import ImportResult, require_file, write_cohort

SPLITS = ("train", "val", "test")
LAYOUT = "a MedMNIST .npz file with train/val/test _images and _labels arrays"


def import_medmnist(src: str | Path, out: str | Path, *, limit_per_split: int | None = None) -> ImportResult:
    """Write ``out/images/{split}-{index}.png`` for every image and a cohort of them.

    Args:
        src: the ``.npz`` file (``pneumoniamnist.npz``, ``breastmnist.npz``, ...).
        out: the output folder (created).
        limit_per_split: write only the first this many images of each split (a quick subset).

    Table columns: ``image_id`` (``{split}-{index}``, the index into the split's arrays),
    ``label`` (the outcome: binary when the file has two classes, else multiclass), ``split`` and
    ``image_path``.

    Raises:
        ValueError: ``src`` is not such a file, or its arrays have other shapes or types.
    """
    src = require_file(Path(src), LAYOUT)
    if limit_per_split is not None and limit_per_split < 1:
        raise ValueError(f"limit_per_split must be at least 1 (or None for all), got {limit_per_split}")
    arrays = _read_npz(src)
    classes = sorted({int(c) for _, labels in arrays.values() for c in np.unique(labels)})
    if len(classes) < 2:
        raise ValueError(f"{src}: expected labels of at least two classes, found {classes}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, notes = [], []
    for split, (images, labels) in arrays.items():
        count = len(images) if limit_per_split is None else min(limit_per_split, len(images))
        if count < len(images):
            notes.append(f"{split}: wrote the first {count} of {len(images)} images")
        for index in range(count):
            image_id = f"{split}-{index:05d}"
            path = f"images/{image_id}.png"
            Image.fromarray(images[index]).save(out / path, format="PNG")
            rows.append(
                {"image_id": image_id, "label": str(labels[index]), "split": split, "image_path": path}
            )
    binary = len(classes) == 2
    spec = {
        "name": src.stem,
        "description": (
            f"MedMNIST v2 {src.stem} ({src.name}), official train/val/test split. CC BY 4.0, "
            "Yang et al., Scientific Data 2023."
        ),
        "id": "image_id",
        "outcome": {
            "column": "label",
            "task": "binary" if binary else "multiclass",
            "classes": classes,
            **({"positive": classes[1]} if binary else {}),
        },
        "split": {"column": "split"},
        "modalities": {"image": {"kind": "image", "column": "image_path"}},
    }
    columns = ["image_id", "label", "split", "image_path"]
    return write_cohort(out, spec, columns, rows, notes=notes)


def _read_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (images ``(N, H, W[, 3])`` uint8, labels ``(N,)`` int64).

    Raises:
        ValueError: a missing key, or arrays of another dtype or shape.
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: expected {LAYOUT} ({type(error).__name__})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected {LAYOUT}, but it holds a single array")
    with archive:
        missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in archive]
        if missing:
            raise ValueError(f"{path}: expected {LAYOUT}; missing {', '.join(missing)}")
        arrays = {}
        for split in SPLITS:
            images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
            if images.dtype != np.uint8 or not (
                images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)
            ):
                raise ValueError(
                    f"{path}: expected {split}_images as uint8 (N, H, W) or (N, H, W, 3), "
                    f"got {images.dtype} {images.shape}"
                )
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim != 1 or len(labels) != len(images) or labels.dtype.kind not in "iu":
                raise ValueError(
                    f"{path}: expected {split}_labels as integers of shape ({len(images)},) or "
                    f"({len(images)}, 1) (single-label), got {labels.dtype} {labels.shape}"
                )
            arrays[split] = (images, labels.astype(np.int64))
    return arrays
