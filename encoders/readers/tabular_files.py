"""Tabular EHR values: standardised numbers and coded categories, with missingness kept explicit.

:class:`TabularPreprocessor` follows the scikit-learn contract: the constructor only stores its
parameters, :meth:`~TabularPreprocessor.fit` learns from training rows only and returns ``self``,
and learned state ends in ``_``. Its state round-trips through
:meth:`~TabularPreprocessor.to_dict`, the JSON that goes into a bundle's ``preprocessing.json``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

FLOAT32_MAX = float(np.finfo(np.float32).max)
"""Largest magnitude a numeric cell may have: values are stored as float32 (about 3.4e38)."""
MISSING_CODE = 0
UNKNOWN_CODE = 1
_FIRST_VOCAB_CODE = 2
_FORMAT = 1


@dataclass(frozen=True)
class TabularArrays:
    """The tabular variables of ``N`` rows.

    Attributes:
        numeric: ``(N, V_num)`` float32, standardised with the training mean and std; 0.0 where
            missing.
        numeric_missing: ``(N, V_num)`` bool, True where the value is missing.
        categorical: ``(N, V_cat)`` int64 codes: 0 missing, 1 unknown category, 2.. vocabulary.
        names: the ``V_num`` numeric names, then the ``V_cat`` categorical names.
    """

    numeric: np.ndarray
    numeric_missing: np.ndarray
    categorical: np.ndarray
    names: tuple[str, ...]


def blank_mask(series: pd.Series) -> np.ndarray:
    """``(N,)`` bool: True where a cell is missing (NA, None, NaN, or a blank string)."""
    missing = series.isna().to_numpy(dtype=bool, copy=True)
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        blank = series.map(lambda v: isinstance(v, str) and not v.strip())
        missing |= blank.to_numpy(dtype=bool)
    return missing


def numeric_column(series: pd.Series) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Parse a column of numbers without guessing.

    Returns:
        ``values`` ``(N,)`` float64 with NaN where missing or unparsable, ``missing`` ``(N,)`` bool
        (blank cells), and the 0-based position of the first cell that is neither blank nor a finite
        number that fits float32 (``None`` when every cell is fine).
    """
    missing = blank_mask(series)
    if pd.api.types.is_bool_dtype(series):
        series = series.astype("float64")
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan, copy=True)
    bad = ~missing & ~(np.abs(values) <= FLOAT32_MAX)
    values[bad] = np.nan
    first_bad = int(np.argmax(bad)) if bad.any() else None
    return values, missing, first_bad


def category_key(value: Any) -> str:
    """The vocabulary key of a non-missing cell: ``1``, ``1.0`` and ``"1"`` are the same category.

    A column of integers picks up a float dtype as soon as one cell is missing, so integral floats
    are written as integers; text is stripped of surrounding spaces.
    """
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


class TabularPreprocessor:
    """Standardise numeric columns and code categorical ones, learning only from training rows.

    Args:
        numeric: names of the numeric columns, in token order.
        categorical: names of the categorical columns, in token order.
        min_category_count: categories seen fewer times than this in training are coded unknown.
    """

    def __init__(
        self, numeric: Sequence[str], categorical: Sequence[str], *, min_category_count: int = 1
    ) -> None:
        self.numeric = tuple(numeric)
        self.categorical = tuple(categorical)
        self.min_category_count = min_category_count

    @property
    def names(self) -> tuple[str, ...]:
        """Numeric names then categorical names: the token order of :class:`TabularArrays`."""
        return (*self.numeric, *self.categorical)

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "mean_")

    def fit(self, frame: pd.DataFrame) -> TabularPreprocessor:
        """Learn means, stds, ranges and vocabularies from training rows only.

        Raises:
            ValueError: a column is absent, there are no rows, or a numeric cell is not a number.
        """
        if self.min_category_count < 1:
            raise ValueError(f"min_category_count must be >= 1, got {self.min_category_count}")
        self._check_columns(frame)
        if len(frame) == 0:
            raise ValueError("cannot fit a TabularPreprocessor on a frame with no rows")
        n_num = len(self.numeric)
        mean, std = np.zeros(n_num), np.ones(n_num)
        low, high = np.full(n_num, np.nan), np.full(n_num, np.nan)
        for j, column in enumerate(self.numeric):
            values = self._numbers(frame, column)
            seen = values[~np.isnan(values)]
            if seen.size:
                mean[j], low[j], high[j] = seen.mean(), seen.min(), seen.max()
                spread = seen.std()
                std[j] = spread if spread > 0 else 1.0
        self.mean_, self.std_, self.min_, self.max_ = mean, std, low, high
        self.category_counts_: dict[str, dict[str, int]] = {}
        self.vocabularies_: dict[str, tuple[str, ...]] = {}
        for column in self.categorical:
            series = frame[column]
            keys = series[~blank_mask(series)].map(category_key)
            counts = Counter(keys)
            self.category_counts_[column] = dict(sorted(counts.items()))
            kept = (key for key, count in counts.items() if count >= self.min_category_count)
            self.vocabularies_[column] = tuple(sorted(kept))
        return self

    def transform(self, frame: pd.DataFrame) -> TabularArrays:
        """Apply the training statistics to ``frame`` (``N`` rows).

        Raises:
            RuntimeError: called before :meth:`fit`.
            ValueError: a column is absent, or a numeric cell is not a number (row 1-based).
        """
        if not self.is_fitted:
            raise RuntimeError(
                "this TabularPreprocessor is not fitted yet: call fit(training_frame) before "
                "transform, or build it with TabularPreprocessor.from_dict(saved_state)"
            )
        self._check_columns(frame)
        n = len(frame)
        numeric = np.zeros((n, len(self.numeric)), dtype=np.float32)
        missing = np.zeros((n, len(self.numeric)), dtype=bool)
        for j, column in enumerate(self.numeric):
            values = self._numbers(frame, column)
            missing[:, j] = np.isnan(values)
            scaled = (values - self.mean_[j]) / self.std_[j]
            numeric[:, j] = np.where(missing[:, j], 0.0, scaled)
        categorical = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, column in enumerate(self.categorical):
            series = frame[column]
            codes = {key: code for code, key in enumerate(self.vocabularies_[column], 2)}
            blank = blank_mask(series)
            categorical[:, j] = [
                MISSING_CODE if is_blank else codes.get(category_key(value), UNKNOWN_CODE)
                for value, is_blank in zip(series.tolist(), blank, strict=True)
            ]
        return TabularArrays(numeric, missing, categorical, self.names)

    def to_dict(self) -> dict[str, Any]:
        """Parameters and learned state as plain JSON types (``None`` for a column never seen)."""
        if not self.is_fitted:
            raise RuntimeError("cannot save a TabularPreprocessor that is not fitted yet")

        def number(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        return {
            "format": _FORMAT,
            "numeric": [
                {
                    "name": name,
                    "mean": float(self.mean_[j]),
                    "std": float(self.std_[j]),
                    "min": number(self.min_[j]),
                    "max": number(self.max_[j]),
                }
                for j, name in enumerate(self.numeric)
            ],
            "categorical": [
                {
                    "name": name,
                    "vocabulary": list(self.vocabularies_[name]),
                    "counts": dict(self.category_counts_[name]),
                }
                for name in self.categorical
            ],
            "min_category_count": self.min_category_count,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TabularPreprocessor:
        """Rebuild a fitted preprocessor from :meth:`to_dict` output."""
        if state.get("format") != _FORMAT:
            raise ValueError(
                f"tabular preprocessing state has format {state.get('format')!r}; expected {_FORMAT}"
            )
        numeric, categorical = state["numeric"], state["categorical"]
        made = cls(
            [item["name"] for item in numeric],
            [item["name"] for item in categorical],
            min_category_count=int(state["min_category_count"]),
        )

        def floats(key: str) -> np.ndarray:
            return np.array([np.nan if it[key] is None else it[key] for it in numeric], dtype=float)

        made.mean_, made.std_ = floats("mean"), floats("std")
        made.min_, made.max_ = floats("min"), floats("max")
        made.vocabularies_ = {it["name"]: tuple(it["vocabulary"]) for it in categorical}
        made.category_counts_ = {it["name"]: dict(it["counts"]) for it in categorical}
        return made

    def _check_columns(self, frame: pd.DataFrame) -> None:
        absent = [name for name in self.names if name not in frame.columns]
        if absent:
            raise ValueError(f"tabular columns {absent} are not in the table; it has {list(frame.columns)}")

    @staticmethod
    def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
        values, _, first_bad = numeric_column(frame[column])
        if first_bad is not None:
            kind = type(frame[column].iloc[first_bad]).__name__
            raise ValueError(
                f"row {first_bad + 1}, column {column!r}: expected a finite number or a blank, "
                f"got a value of type {kind}"
            )
        return values
