"""Shards of a prediction run: ``--shard i/n`` picks rows by position, and ``deepwe merge`` joins the
shards' outputs in input order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.inference.output_table import neutralised, read_predictions


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count


def merge_shards(paths: Sequence[str | Path], out: str | Path) -> int:
    """Join shard outputs into one file in input order; refuses overlaps and gaps. Returns the row count."""
    frames = [read_predictions(p) for p in paths]
    merged = pd.concat(frames, ignore_index=True).sort_values("row", kind="stable")
    rows = merged["row"].to_numpy()
    if len(set(rows.tolist())) != len(rows):
        raise ValueError("the shard outputs overlap: some rows appear twice")
    expected = np.arange(1, len(rows) + 1)
    if not np.array_equal(rows, expected):
        missing = sorted(set(expected.tolist()) - set(rows.tolist()))[:10]
        raise ValueError(f"the shard outputs leave gaps: rows {missing} are missing (is a shard absent?)")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if out.suffix.lower() == ".parquet":
        merged.to_parquet(tmp, index=False)
    else:
        neutralised(merged).to_csv(tmp, index=False)
    os.replace(tmp, out)
    return len(merged)
