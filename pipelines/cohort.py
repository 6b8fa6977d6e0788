"""A cohort on disk: its spec, its table and where its files live."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from data_schemas import CohortSpec, PatientRecord, Problem
from data_schemas.cohort import canonical_label
from pipelines.spec_io import SpecError, read_spec

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
TABLE_SUFFIXES = (".csv", ".parquet")


def is_missing(value: object) -> bool:
    """A blank cell, ``NA``/``NaN``/``null``/``None`` (any case), or a float NaN."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_TOKENS


@dataclass(frozen=True)
class Cohort:
    """A validated spec with its table. Table cells are strings, numbers or None (missing)."""

    spec: CohortSpec
    spec_path: Path
    table: pd.DataFrame
    _real_folders: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def folder(self) -> Path:
        return self.spec_path.parent

    @cached_property
    def data_root(self) -> Path:
        """The folder file paths resolve under (``data_root`` of the spec, else the spec's folder).

        Resolved once per cohort: resolving it again for every cell made large cohorts slow.
        """
        root = Path(self.spec.data_root) if self.spec.data_root else Path(".")
        return (root if root.is_absolute() else self.folder / root).resolve()

    @property
    def table_path(self) -> Path:
        return self.folder / self.spec.table

    @cached_property
    def _root_text(self) -> str:
        return str(self.data_root)

    def resolve(self, cell: str) -> Path:
        """The absolute path of a file cell; raises ValueError when it escapes the data root."""
        return Path(self.resolve_text(cell))

    def resolve_text(self, cell: str) -> str:
        """:meth:`resolve` as a string (no ``Path`` objects: validate calls it for every cell).

        Raises:
            ValueError: the cell is an absolute path, or resolves (``..``, symlinks) outside the
                data root.
        """
        text = cell.strip()
        if os.path.isabs(text):
            raise ValueError("an absolute path; paths are relative to the cohort's data root")
        root = self._root_text
        folder, name = os.path.split(text)
        if name in ("", ".", ".."):
            real = os.path.realpath(os.path.join(root, text))
        else:
            # Folders repeat from row to row: resolve each once, then only the file name is checked.
            real_folder = self._real_folders.get(folder)
            if real_folder is None:
                real_folder = self._real_folders[folder] = os.path.realpath(os.path.join(root, folder))
            real = os.path.join(real_folder, name)
            if os.path.islink(real):
                real = os.path.realpath(real)
        if not (real == root or real.startswith(root.rstrip(os.sep) + os.sep)):
            raise ValueError(f"a path inside {root}; this one resolves outside it")
        return real

    def _path_cell(self, cell: object, row: int, column: str, refused: dict[int, str] | None) -> str | None:
        if is_missing(cell):
            return None
        try:
            return str(self.resolve(str(cell)))
        except ValueError as error:
            if refused is None:
                raise
            refused[row - 1] = f"row {row}, column {column!r}: path refused ({error})"
            return None

    @classmethod
    def from_frame(cls, spec: CohortSpec, frame: pd.DataFrame, data_root: str | Path) -> Cohort:
        """A cohort of the rows of ``frame`` (a notebook's or a served request's), read with ``spec``.

        File cells resolve under ``data_root``. Subgroups, outcome and split are dropped: the rows are
        only predicted on. Nothing is checked here (``predict.check_compatible`` does that).
        """
        root = Path(data_root).resolve()
        served = spec.model_copy(
            update={"data_root": str(root), "subgroups": [], "outcome": None, "split": None}
        )
        return cls(spec=served, spec_path=root / "<data frame>", table=table_cells(frame))

    def split_of(self, row: int) -> str | None:
        """The split of a 1-based row: from the split column, else a stable hash of its group (with
        ``split.group``) or of its id."""
        split = self.spec.split
        if split is not None and split.column is not None:
            value = self.table.at[row - 1, split.column]
            return None if is_missing(value) else str(value).strip().lower()
        if split is not None and split.group is not None:
            group = self.table.at[row - 1, split.group]
            if not is_missing(group):
                return assign_split(f"group:{str(group).strip()}", split)
        return assign_split(str(self.table.at[row - 1, self.spec.id]), split)

    def records(
        self,
        positions: Sequence[int] | None = None,
        *,
        refused: dict[int, str] | None = None,
    ) -> Iterator[PatientRecord]:
        """One :class:`PatientRecord` per table row (file paths resolved, None = missing).

        Args:
            positions: 0-based rows to build, in this order; every row when None.
            refused: when given, a path that escapes the data root does not raise: its modality is
                left missing and ``refused[position]`` says which row and column, and why.

        Raises:
            ValueError: a path escapes the data root (when ``refused`` is None).
        """
        spec = self.spec
        chosen = list(range(len(self.table)) if positions is None else positions)
        for position, row in zip(chosen, self.table.iloc[chosen].to_dict("records"), strict=True):
            index = position + 1
            tabular, paths, texts = {}, {}, {}
            for name, modality in spec.modalities.items():
                if modality.kind == "tabular":
                    tabular[name] = {c: None if is_missing(row[c]) else row[c] for c in modality.columns()}
                elif modality.kind == "text" and modality.inline:
                    texts[name] = None if is_missing(row[modality.column]) else str(row[modality.column])
                else:
                    paths[name] = self._path_cell(row[modality.column], index, modality.column, refused)
            outcome = None
            if spec.outcome is not None and not is_missing(row[spec.outcome.column]):
                outcome = canonical_label(row[spec.outcome.column])
            yield PatientRecord(
                row=index,
                patient_id=str(row[spec.id]).strip(),
                outcome=outcome,
                split=self.split_of(index),
                tabular=tabular,
                paths=paths,
                texts=texts,
                subgroups={c: None if is_missing(row[c]) else str(row[c]) for c in spec.subgroups},
            )


def split_unit(spec: CohortSpec) -> str:
    """In words, what the train/val/test split was drawn over (for reports and model cards)."""
    split = spec.split
    if split is not None and split.column is not None:
        return f"the spec's split column {split.column!r}"
    if split is not None and split.group is not None:
        return f"drawn per group {split.group!r} (all rows of a group in one split) from a seeded hash"
    return f"drawn per row id {spec.id!r} from a seeded hash"


def assign_split(patient_id: str, split: object | None) -> str:
    """A patient-level split drawn from a hash of (seed, patient id): stable under row reordering."""
    seed = getattr(split, "seed", 0)
    fractions = getattr(split, "fractions", None) or {"train": 0.7, "val": 0.15, "test": 0.15}
    digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for name in ("train", "val", "test"):
        cumulative += fractions.get(name, 0.0)
        if u < cumulative:
            return name
    return "test"


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV (every cell as text) or Parquet table; missing cells become None.

    Raises:
        ValueError: the file is absent, of another format, or unreadable; the message says which.
    """
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"a table ending in {' or '.join(TABLE_SUFFIXES)}")
    if not path.is_file():
        raise ValueError("an existing table file")
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        else:
            frame = pd.read_parquet(path)
    except (UnicodeDecodeError, pd.errors.ParserError, OSError, ValueError) as error:
        raise ValueError(f"a readable {path.suffix} table ({error.__class__.__name__})") from error
    if len(frame.columns) == 1 and ";" in str(frame.columns[0]):
        raise ValueError(
            "a comma-separated table; its header line has ';' between the names: save it with commas "
            "(in a spreadsheet: CSV UTF-8, comma-delimited)"
        )
    return table_cells(frame)


def table_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The cells of a table as a cohort holds them: text stripped, every missing token None."""
    frame = frame.astype(object)
    for column in frame.columns:
        frame[column] = _clean_cells(frame[column])
    return frame.reset_index(drop=True)


def _clean_cells(series: pd.Series) -> pd.Series:
    """Strings stripped and missing cells as None; a whole column at once when every cell is text."""
    if series.map(type).eq(str).all():
        stripped = series.str.strip()
        return stripped.astype(object).where(~stripped.str.lower().isin(MISSING_TOKENS), None)
    return series.map(lambda v: None if is_missing(v) else (v.strip() if isinstance(v, str) else v))


def load_cohort(spec_path: str | Path) -> Cohort:
    """Load a spec and its table without row-level checks (``validate_cohort`` does those).

    Raises:
        SpecError: the spec is invalid or the table cannot be read.
    """
    spec_path = Path(spec_path).resolve()
    spec, problems = read_spec(spec_path)
    if spec is None or problems:
        raise SpecError(problems)
    table_path = spec_path.parent / spec.table
    try:
        table = read_table(table_path)
    except ValueError as error:
        raise SpecError([Problem(file=str(table_path), column="table", expected=str(error))]) from error
    return Cohort(spec=spec, spec_path=spec_path, table=table)
