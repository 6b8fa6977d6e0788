"""Result rows of the benchmark suite: ``{benchmark, method, metric, mean, sd, n, anchor}``.

Every part of :mod:`benchmarks.suite` returns a list of these. ``mean`` and ``sd`` summarise the
measurements of one method on one metric over seeds or folds (``sd`` is the sample sd, None for a
single measurement); ``anchor`` is the figure to read the mean against (a baseline's, a paper's).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any


def summary(values: Iterable[float]) -> tuple[float, float | None, int]:
    """(mean, sample sd or None for one value, n) of the finite ``values``.

    Raises:
        ValueError: no finite value (a metric undefined on every seed has no row).
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        raise ValueError("no finite measurement to summarise")
    sd = statistics.stdev(finite) if len(finite) > 1 else None
    return statistics.fmean(finite), sd, len(finite)


def result_row(
    benchmark: str,
    method: str,
    metric: str,
    values: Iterable[float] | float,
    *,
    anchor: float | None = None,
    n: int | None = None,
) -> dict[str, Any]:
    """One row: the mean and sd of ``values`` (one number is one measurement).

    Args:
        values: one measurement per seed or fold; NaN ones (a metric undefined on that fold) are
            left out and ``n`` counts the others.
        n: overrides the count (e.g. patients behind a single pooled figure).
    """
    mean, sd, count = summary([values] if isinstance(values, int | float) else values)
    return {
        "benchmark": benchmark,
        "method": method,
        "metric": metric,
        "mean": mean,
        "sd": sd,
        "n": count if n is None else n,
        "anchor": anchor,
    }
