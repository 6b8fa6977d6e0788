"""Tabular encoder: one token per EHR variable.

A numeric variable's token is ``PLE_v(value) + variable_v + flag``, a piecewise-linear numerical
embedding over training-quantile bins of the standardised value
(:class:`~encoders.numeric_embedding.PiecewiseLinearEmbedding`, which also clips extreme values at
the training quantiles); a categorical variable's token is
``table_v[code] + variable_v + flag``, with its own embedding rows per variable (code 0 missing,
1 unknown category, 2.. vocabulary, as :mod:`encoders.readers.tabular_files` codes them). ``flag`` is a
learned embedding of "observed" or "missing".

Missing variables are masked out (``mask`` False): the fusion core gives them weight 0, so a patient's
prediction uses only what was measured. Their token values still exist (variable embedding plus the
"missing" flag) so a downstream component that wants informative missingness can read them, but with
the core ignoring masked tokens the "missing" rows of the flag and category tables are not trained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from encoders._registry import register_encoder
from encoders.base import ModalityEncoder
from encoders.numeric_embedding import DEFAULT_BINS, EMBEDDING_INIT_STD, PiecewiseLinearEmbedding
from encoders.tokens import EncoderBatch, Tokens

MISSING_CODE = 0
UNKNOWN_CODE = 1
_RESERVED_CODES = 2  # codes 0 (missing) and 1 (unknown) come before the vocabulary


@dataclass(frozen=True)
class TabularEncoderConfig:
    """Settings of :class:`TabularEncoder`.

    Attributes:
        numeric: names of the numeric variables, in token order.
        categorical: names of the categorical variables, after the numeric ones in token order.
        categories: per categorical variable, the size of its vocabulary (codes 2..size+1).
        out_dim: token width D.
        missingness_token: add one last token, ``"missing pattern"``, embedding which variables
            are missing. Unobserved variables are masked out (weight 0), so without it the fusion
            core could not learn from missingness, which is often informative (tests ordered
            because the patient was sick).
        bins: K, quantile bins of each numeric variable's numerical embedding.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    categories: tuple[int, ...]
    out_dim: int = 128
    missingness_token: bool = True
    bins: int = DEFAULT_BINS

    def __post_init__(self) -> None:
        # YAML and JSON hand over lists; keep the frozen config hashable and immutable.
        for name in ("numeric", "categorical", "categories"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        names = (*self.numeric, *self.categorical)
        if not names:
            raise ValueError("tabular encoder needs at least one numeric or categorical variable")
        if len(set(names)) != len(names):
            raise ValueError(f"tabular encoder variable names must be unique, got {names}")
        if len(self.categories) != len(self.categorical):
            raise ValueError(
                f"tabular encoder needs one vocabulary size per categorical variable: "
                f"{len(self.categorical)} variables but categories={self.categories}"
            )
        if any(size < 0 for size in self.categories):
            raise ValueError(f"tabular vocabulary sizes must be >= 0, got {self.categories}")
        if self.out_dim < 1 or self.bins < 1:
            raise ValueError(
                f"tabular encoder needs out_dim and bins >= 1, got {self.out_dim} and {self.bins}"
            )

    @property
    def names(self) -> tuple[str, ...]:
        """Numeric then categorical names: the token order."""
        return (*self.numeric, *self.categorical)


class TabularEncoder(ModalityEncoder):
    """One token per variable; missing variables are masked out.

    Args:
        config: the variables and the token width.
    """

    kind: ClassVar[str] = "tabular"
    fixed_token_count: ClassVar[bool] = True

    category_offsets: Tensor | None  # (V,) first code of each categorical variable
    category_table: nn.Embedding | None

    def __init__(self, config: TabularEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.out_dim = config.out_dim
        n_num, dim = len(config.numeric), config.out_dim
        # Parameters only for the parts that exist: an empty weight would never see a gradient.
        self.numeric_embedding = PiecewiseLinearEmbedding(n_num, config.bins, dim) if n_num else None
        if config.categorical:
            sizes = torch.tensor([size + _RESERVED_CODES for size in config.categories])
            self.register_buffer("category_offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
            self.category_table = nn.Embedding(int(sizes.sum()), dim)
        else:
            self.category_offsets = None
            self.category_table = None
        # Value-independent parts start small, so the value dominates each token (see
        # numeric_embedding.EMBEDDING_INIT_STD).
        self.variable = nn.Parameter(torch.randn(len(config.names), dim) * EMBEDDING_INIT_STD)
        self.flag = nn.Embedding(2, dim)  # row 0 observed, row 1 missing
        nn.init.normal_(self.flag.weight, std=EMBEDDING_INIT_STD)
        self.pattern = nn.Linear(len(config.names), dim) if config.missingness_token else None
        self.norm = nn.LayerNorm(dim)

    @property
    def token_names(self) -> list[str]:
        """Variable names, then ``"missing pattern"`` when that token is on."""
        return [*self.config.names, *(["missing pattern"] if self.pattern is not None else [])]

    def example_samples(self, n: int, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
        """``n`` reader-shaped rows for this config, each with at least one observed variable."""
        n_num, sizes = len(self.config.numeric), np.array(self.config.categories, dtype=np.int64)
        rows = []
        for k in range(n):
            missing = rng.random(n_num) < 0.3
            numeric = np.where(missing, 0.0, rng.standard_normal(n_num)).astype(np.float32)
            codes = rng.integers(0, sizes + _RESERVED_CODES) if sizes.size else sizes.copy()
            if n_num:
                missing[k % n_num] = False
                numeric[k % n_num] = rng.standard_normal()
            else:
                codes[k % sizes.size] = UNKNOWN_CODE
            rows.append({"numeric": numeric, "numeric_missing": missing, "categorical": codes})
        return rows

    def collate(self, samples: Sequence[Mapping[str, Any] | None]) -> EncoderBatch:
        """Stack per-patient rows; ``None`` (no tabular data) becomes an all-missing row.

        Args:
            samples: per patient, ``{"numeric": (V_num,) float32, "numeric_missing": (V_num,) bool,
                "categorical": (V_cat,) int64}`` as :class:`encoders.readers.tabular_files.TabularArrays`
                rows, or None.

        Returns:
            tensors ``numeric`` (B, V_num) float32 (0 where missing), ``numeric_missing``
            (B, V_num) bool and ``categorical`` (B, V_cat) int64.

        Raises:
            ValueError: a row has the wrong shape, a non-finite observed value or a code outside
                its variable's vocabulary.
        """
        n_num, n_cat = len(self.config.numeric), len(self.config.categorical)
        numeric = np.zeros((len(samples), n_num), dtype=np.float32)
        missing = np.ones((len(samples), n_num), dtype=bool)
        codes = np.full((len(samples), n_cat), MISSING_CODE, dtype=np.int64)
        # Checked and copied row by row with numpy: a tensor per row costs more than the row.
        for row, sample in enumerate(samples):
            if sample is None:
                continue
            missing[row] = _field(sample, "numeric_missing", row, n_num).astype(bool)
            values = _field(sample, "numeric", row, n_num).astype(np.float32)
            if not np.isfinite(values[~missing[row]]).all():
                raise ValueError(f"tabular sample {row}: an observed numeric value is not finite")
            numeric[row] = np.where(missing[row], np.float32(0.0), values)
            codes[row] = _field(sample, "categorical", row, n_cat).astype(np.int64)
        self._check_codes(torch.from_numpy(codes))
        present = torch.tensor([sample is not None for sample in samples], dtype=torch.bool)
        return EncoderBatch(
            tensors={
                "numeric": torch.from_numpy(numeric),
                "numeric_missing": torch.from_numpy(missing),
                "categorical": torch.from_numpy(codes),
            },
            present=present,
            names=[self.token_names for _ in samples],
        )

    def scalar_features(self, batch: EncoderBatch) -> Tensor:
        """(B, V_num + V_cat): the numeric values, then the category codes; NaN where missing."""
        numeric = batch.tensors["numeric"].masked_fill(batch.tensors["numeric_missing"], float("nan"))
        codes = batch.tensors["categorical"]
        categories = codes.float().masked_fill(codes == MISSING_CODE, float("nan"))
        return torch.cat([numeric, categories], dim=1)

    def forward(self, batch: EncoderBatch) -> Tokens:
        """Tokens ``values`` (B, V, D) with V = V_num + V_cat (+1 for the missing pattern); ``mask``
        True for observed variables and for the pattern token of a present patient."""
        numeric = batch.tensors["numeric"]
        codes = batch.tensors["categorical"]
        parts, missing = [], []
        if self.numeric_embedding is not None:
            parts.append(self.numeric_embedding(numeric))
            missing.append(batch.tensors["numeric_missing"])
        if self.category_table is not None and self.category_offsets is not None:
            parts.append(self.category_table(codes + self.category_offsets))
            missing.append(codes == MISSING_CODE)
        unobserved = torch.cat(missing, dim=1)
        tokens = torch.cat(parts, dim=1) + self.variable + self.flag(unobserved.long())
        mask = ~unobserved & batch.present[:, None]
        if self.pattern is not None:
            tokens = torch.cat([tokens, self.pattern(unobserved.float())[:, None]], dim=1)
            mask = torch.cat([mask, batch.present[:, None]], dim=1)
        return Tokens(values=self.norm(tokens), mask=mask, names=batch.names)

    def _check_codes(self, codes: Tensor) -> None:
        if codes.numel() == 0:
            return
        limits = torch.tensor(self.config.categories) + _RESERVED_CODES
        bad = ((codes < 0) | (codes >= limits)).any(dim=0)
        if bad.any():
            variable = self.config.categorical[int(bad.nonzero()[0])]
            size = self.config.categories[int(bad.nonzero()[0])]
            raise ValueError(
                f"tabular variable {variable!r}: expected codes 0 (missing), 1 (unknown) or "
                f"2..{size + 1} (its vocabulary of {size}); was the encoder built with the "
                "vocabularies of this preprocessor?"
            )


def _field(sample: Mapping[str, Any], key: str, row: int, width: int) -> np.ndarray:
    """One entry of a tabular row as a (width,) array, or a ValueError naming what was expected."""
    if key not in sample:
        raise ValueError(f"tabular sample {row}: expected the key {key!r}, got {sorted(sample)}")
    value = np.asarray(sample[key])
    if tuple(value.shape) != (width,):
        raise ValueError(
            f"tabular sample {row}: expected {key!r} of shape ({width},), got {tuple(value.shape)}"
        )
    return value


_TINY = TabularEncoderConfig(
    numeric=("age", "lactate", "creatinine"),
    categorical=("sex", "icu_type"),
    categories=(2, 5),
    out_dim=13,
    bins=5,
)


@register_encoder("tabular")
def tabular(**config: Any) -> TabularEncoder:
    """The tabular encoder; ``numeric``, ``categorical`` and ``categories`` come from the cohort."""
    return TabularEncoder(TabularEncoderConfig(**config))


@register_encoder("tabular-tiny")
def tabular_tiny(**config: Any) -> TabularEncoder:
    """A tiny tabular encoder with odd sizes, for tests."""
    return TabularEncoder(replace(_TINY, **config))
