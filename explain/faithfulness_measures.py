"""Does an attribution say what the model does? Deletion/insertion, infidelity, sensitivity, agreement.

- Deletion and insertion curves (Petsiuk et al., BMVC 2018, "RISE"): remove the units of an input
  (a lab value, a word, an image region, a second of sound) in the order an attribution ranks them,
  or add them to an all-baseline input in that order, and follow the model's score. A faithful
  ranking makes the deletion curve fall faster (lower AUC) and the insertion curve rise faster
  (higher AUC) than a random order does.
- Infidelity and max-sensitivity (Yeh et al., NeurIPS 2019), as implemented by Captum.
- Rank agreement (Spearman) between two rankings of the same units: the model's own feature weights
  against attributions, or attributions of the trained model against those of a model with
  randomised weights (the sanity check of Adebayo et al., NeurIPS 2018: they must differ).

Units and what "removing" one means are the caller's: it passes a scorer that maps keep-masks over
units to scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from captum.metrics import infidelity, sensitivity_max
from scipy.stats import spearmanr
from torch import Tensor

Scorer = Callable[[Tensor], Tensor]
"""(K, U) bool keep-masks over the units -> (K,) model scores with the dropped units at baseline."""


@dataclass(frozen=True)
class Curves:
    """Deletion and insertion curves of one ranking, and of random orders for comparison.

    Attributes:
        fractions: (S,) fraction of units removed (deletion) or added (insertion), 0 to 1.
        deletion: (S,) score after removing the top fraction of units in the attribution's order.
        insertion: (S,) score with only the top fraction of units kept.
        random_deletion: (S,) the same, averaged over random orders.
        random_insertion: (S,) likewise.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    random_deletion: np.ndarray
    random_insertion: np.ndarray
    aucs: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        area = {
            name: float(np.trapezoid(getattr(self, name), self.fractions))
            for name in ("deletion", "insertion", "random_deletion", "random_insertion")
        }
        object.__setattr__(self, "aucs", area)


def keep_masks(
    order: Sequence[int] | Tensor, n_units: int, fractions: np.ndarray, *, insertion: bool
) -> Tensor:
    """(S, U) keep-masks: deletion drops the first ``f * U`` units of ``order``; insertion keeps only them."""
    order = torch.as_tensor(order, dtype=torch.long)
    masks = torch.full((len(fractions), n_units), not insertion, dtype=torch.bool)
    for row, fraction in enumerate(fractions):
        chosen = order[: round(float(fraction) * n_units)]
        masks[row, chosen] = insertion
    return masks


def deletion_insertion(
    scorer: Scorer,
    attribution: Tensor,
    *,
    steps: int = 10,
    random_orders: int = 5,
    seed: int = 0,
) -> Curves:
    """Curves for the ranking of units by ``attribution`` (largest first) and for random orders.

    Args:
        scorer: keep-masks (K, U) -> scores (K,).
        attribution: (U,) one signed value per unit; units pushing the score up rank first.
        steps: points on each curve beyond the origin.
        random_orders: random permutations to average.
    """
    n_units = int(attribution.numel())
    fractions = np.linspace(0.0, 1.0, steps + 1)
    order = torch.argsort(attribution.flatten().float(), descending=True, stable=True)
    generator = torch.Generator().manual_seed(seed)
    randoms = [torch.randperm(n_units, generator=generator) for _ in range(random_orders)]

    def run(ranking: Tensor, insertion: bool) -> np.ndarray:
        with torch.no_grad():
            return scorer(keep_masks(ranking, n_units, fractions, insertion=insertion)).float().cpu().numpy()

    return Curves(
        fractions=fractions,
        deletion=run(order, False),
        insertion=run(order, True),
        random_deletion=np.mean([run(r, False) for r in randoms], axis=0),
        random_insertion=np.mean([run(r, True) for r in randoms], axis=0),
    )


def rank_agreement(first: Sequence[float] | Tensor, second: Sequence[float] | Tensor) -> float:
    """Spearman's rank correlation of two scorings of the same units (NaN for fewer than 3 units
    or a constant scoring)."""
    a = np.asarray(torch.as_tensor(first, dtype=torch.float64).flatten())
    b = np.asarray(torch.as_tensor(second, dtype=torch.float64).flatten())
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def precision_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """The share of the first ``k`` names of ``ranked`` that are in ``relevant``."""
    top = list(ranked)[:k]
    return sum(name in relevant for name in top) / max(1, len(top))


def infidelity_score(
    forward: Callable[[Tensor], Tensor],
    inputs: Tensor,
    attribution: Tensor,
    *,
    noise: float = 0.1,
    samples: int = 16,
) -> float:
    """Captum's infidelity: the expected squared error between ``perturbation . attribution`` and
    the score change under Gaussian perturbations of standard deviation ``noise``.

    Args:
        forward: (K, ...) -> (K,) scores.
        inputs: (1, ...) the patient's input.
        attribution: (1, ...) its attribution.
    """

    def perturb(values: Tensor) -> tuple[Tensor, Tensor]:
        shift = torch.randn_like(values) * noise
        return shift, values - shift

    with torch.no_grad():
        value = infidelity(forward, perturb, inputs, attribution, n_perturb_samples=samples)
    return float(value.reshape(-1)[0])


def sensitivity_score(
    explain: Callable[[Tensor], Tensor],
    inputs: Tensor,
    *,
    radius: float = 0.02,
    samples: int = 8,
) -> float:
    """Captum's max-sensitivity: the largest change of the attribution (Frobenius norm) when the
    input moves by at most ``radius`` (uniform noise), over ``samples`` draws.

    Args:
        explain: (K, ...) inputs -> (K, ...) attributions.
        inputs: (1, ...) the patient's input.
    """

    def one_input(given: Tensor | tuple[Tensor, ...]) -> tuple[Tensor]:  # Captum works on tuples
        return (explain(given[0] if isinstance(given, tuple) else given),)

    value = sensitivity_max(one_input, inputs, perturb_radius=radius, n_perturb_samples=samples)
    return float(value.reshape(-1)[0])
