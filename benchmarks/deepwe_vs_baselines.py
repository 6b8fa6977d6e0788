"""Superseded by the suite parts (``quality_p12``, ``quality_synth``); what they share is in
:mod:`benchmarks.baselines`. Only the gradient-boosting settings stay importable from here, for
``benchmarks.predict``; this module goes once that imports :mod:`benchmarks.baselines`.
"""

from benchmarks.baselines import GB_PARAMS

__all__ = ["GB_PARAMS"]
