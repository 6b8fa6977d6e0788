"""A cohort: its spec, its table and where its files live (read from disk, or made from a DataFrame)."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from data_schemas import CohortSpec, PatientRecord, Problem
from data_schemas.cohort_spec import SPLIT_VALUES, SplitSpec, canonical_label
from pipelines.cohorts.spec_io import SpecError, read_spec

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
TABLE_SUFFIXES = (".csv", ".parquet")
FRAME_TABLE = "<data frame>"
"""The ``table`` of a cohort made from a DataFrame (it names no file)."""


def is_missing(value: object) -> bool:
    """A blank cell, ``NA``/``NaN``/``null``/``None`` (any case), or a float NaN."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_TOKENS


@dataclass(frozen=True)
class Cohort:
    """A validated spec with its table. Table cells are strings, numbers or None (missing).

    Attributes:
        spec_path: the spec file; for a cohort made from a DataFrame, a name in the folder that the
            spec's relative ``data_root`` resolves under.
        in_memory: True when the table is a DataFrame, not the file the spec names.
    """

    spec: CohortSpec
    spec_path: Path
    table: pd.DataFrame
    in_memory: bool = False
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

    def table_bytes(self) -> bytes:
        """The table's bytes: the file's, or the CSV text of a table held in memory."""
        if self.in_memory:
            return self.table.to_csv(index=False).encode("utf-8")
        return self.table_path.read_bytes()

    @property
    def ids(self) -> list[str]:
        """The patient id of every row, in table order."""
        return [str(value).strip() for value in self.table[self.spec.id]]

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        spec: CohortSpec | Mapping[str, object] | str | Path,
        *,
        root: str | Path | None = None,
    ) -> Cohort:
        """A cohort of the rows of ``frame``, read with ``spec``, held in memory (nothing is written).

        Args:
            frame: one row per patient with the columns the spec names (id, outcome, split, modality
                columns); blank cells are missing values or modalities.
            spec: a :class:`CohortSpec`, a mapping of the spec's keys (``table`` may be left out), or
                the path of a spec YAML file (only the spec is read; its table is not).
            root: the folder the spec lives in: the spec's ``data_root`` (when relative) and so every
                file cell resolve under it, and no file cell may escape the data root. Default: the
                spec file's folder when ``spec`` is a path, else the current directory.

        Raises:
            SpecError: the spec (a mapping or a file) is invalid; every problem is listed.
        """
        name = "<cohort spec>"
        if isinstance(spec, str | Path):
            spec_file = Path(spec).resolve()
            parsed, problems = read_spec(spec_file)
            if parsed is None or problems:
                raise SpecError(problems)
            spec, name = parsed, spec_file.name
            root = spec_file.parent if root is None else root
        elif not isinstance(spec, CohortSpec):
            spec = _spec_from_mapping(spec)
        folder = Path.cwd() if root is None else Path(root)
        return cls(
            spec=spec.model_copy(update={"table": FRAME_TABLE}),
            spec_path=folder.resolve() / name,
            table=table_cells(frame),
            in_memory=True,
        )

    @classmethod
    def for_prediction(cls, spec: CohortSpec, frame: pd.DataFrame, data_root: str | Path) -> Cohort:
        """A cohort of the rows of ``frame`` (a served request's), read with a model's ``spec``.

        File cells resolve under ``data_root``. Subgroups, outcome and split are dropped: the rows are
        only predicted on. Nothing is checked here (``predict.check_compatible`` does that).
        """
        root = Path(data_root).resolve()
        served = spec.model_copy(
            update={"data_root": str(root), "subgroups": [], "outcome": None, "split": None}
        )
        return cls(spec=served, spec_path=root / FRAME_TABLE, table=table_cells(frame), in_memory=True)

    def split(
        self,
        assignment: Sequence[str] | Mapping[str, str] | None = None,
        *,
        seed: int = 0,
        fractions: Mapping[str, float] | None = None,
        group: str | None = None,
        column: str = "split",
    ) -> Cohort:
        """The same rows with another train/val/test split, in memory (nothing is written).

        Args:
            assignment: ``train``/``val``/``test`` per row in table order (N values), or a mapping
                patient id -> split (rows it leaves out are in no split). None draws a patient-level
                split from a hash of (``seed``, id), or of the ``group`` column's value.
            fractions: of a drawn split (default 0.7/0.15/0.15).
            column: the table column an ``assignment`` is written to.

        Raises:
            ValueError: an assignment of the wrong length or with another value than train, val or
                test, or a ``column`` the spec already uses for something else.
        """
        if assignment is None:
            drawn = SplitSpec(seed=seed, group=group, **({"fractions": dict(fractions)} if fractions else {}))
            spec = self.spec.model_copy(update={"split": drawn})
            return Cohort(spec=spec, spec_path=self.spec_path, table=self.table, in_memory=self.in_memory)
        if isinstance(assignment, Mapping):
            values = [assignment.get(patient) for patient in self.ids]
        else:
            values = list(assignment)
            if len(values) != len(self.table):
                raise ValueError(f"a split per row: {len(self.table)} values, got {len(values)}")
        unknown = sorted({str(v) for v in values if v is not None and v not in SPLIT_VALUES})
        if unknown:
            raise ValueError(f"split values {unknown}; expected one of {list(SPLIT_VALUES)}")
        data = self.spec.model_dump() | {"split": {"column": column}}
        spec = CohortSpec.model_validate(data)
        table = self.table.assign(**{column: values})
        return Cohort(spec=spec, spec_path=self.spec_path, table=table, in_memory=True)

    def split_of(self, row: int) -> str | None:
        """The split of a 1-based row: from the split column, else a stable hash of its group (with
        ``split.group``) or of its id."""
        split = self.spec.split
        used = [c for c in (split.column, split.group) if c is not None] if split is not None else []
        return self._split_of_cells({c: self.table.at[row - 1, c] for c in [*used, self.spec.id]})

    def _split_of_cells(self, cells: Mapping[str, Any]) -> str | None:
        """:meth:`split_of` from a row's cells (a mapping column -> cell)."""
        split = self.spec.split
        if split is not None and split.column is not None:
            value = cells[split.column]
            return None if is_missing(value) else str(value).strip().lower()
        if split is not None and split.group is not None:
            group = cells[split.group]
            if not is_missing(group):
                return assign_split(f"group:{str(group).strip()}", split)
        return assign_split(str(cells[self.spec.id]), split)

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
                split=self._split_of_cells(row),
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


def _spec_from_mapping(data: Mapping[str, object]) -> CohortSpec:
    """A spec from a mapping of its keys (``table`` defaults to the DataFrame marker).

    Raises:
        SpecError: every problem of the mapping, located by key path.
    """
    from pydantic import ValidationError

    keys = {"table": FRAME_TABLE} | dict(data)
    try:
        return CohortSpec.model_validate(keys)
    except ValidationError as error:
        raise SpecError(
            [
                Problem(
                    file="<cohort spec>",
                    column=".".join(str(k) for k in e["loc"]) or None,
                    expected=e["msg"].removeprefix("Value error, "),
                )
                for e in error.errors()
            ]
        ) from None


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
