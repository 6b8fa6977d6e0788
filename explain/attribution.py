"""Integrated Gradients for one patient, with its completeness error (Captum).

Integrated Gradients (Sundararajan et al., ICML 2017) attributes ``f(x) - f(x')`` to the elements
of an input ``x`` by integrating the gradient along the straight line from a baseline ``x'``. Its
*completeness* property says the attributions sum to that difference; the gap left by the
Riemann/Gauss-Legendre approximation is the *convergence delta*, reported with every result so that
a reader can tell a faithful attribution from a numerically broken one.

Everything here works on tensors and forward functions; which tensor of which encoder is attributed,
and against which baseline, is decided by the caller (:mod:`pipelines.explaining`), which knows the
encoders. The model must be in eval mode and in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from torch import Tensor, nn

Forward = Callable[[Tensor], Tensor]
"""(K, ...) inputs -> (K,) scalar scores, one per row; rows are independent patients' copies."""


@dataclass(frozen=True)
class Attribution:
    """The attribution of one input of one patient.

    Attributes:
        values: attributions with the input's shape without the batch dimension (for a layer
            attribution: the layer's output or input shape).
        delta: completeness error, ``sum(values) - (f(x) - f(baseline))``.
        difference: ``f(x) - f(baseline)``, the amount the attributions explain.
        method: ``"integrated_gradients"`` or ``"layer_integrated_gradients"``.
        steps: the number of integration steps.
    """

    values: Tensor
    delta: float
    difference: float
    method: str
    steps: int

    @property
    def relative_delta(self) -> float:
        """``|delta| / |difference|`` (``|delta|`` when the difference is below 1e-6)."""
        scale = abs(self.difference)
        return abs(self.delta) / scale if scale > 1e-6 else abs(self.delta)


def integrated_gradients(
    forward: Forward,
    inputs: Tensor,
    baseline: Tensor,
    *,
    steps: int = 32,
    internal_batch_size: int | None = None,
) -> Attribution:
    """Integrated Gradients of ``forward`` at ``inputs`` against ``baseline``.

    Args:
        forward: maps a (K, ...) batch of this input to (K,) scores.
        inputs: (1, ...) the patient's input.
        baseline: (1, ...) the reference input, same shape.
        steps: integration steps (Gauss-Legendre).
        internal_batch_size: rows per forward pass inside the integration (None = all steps at once).

    Returns:
        The :class:`Attribution` with ``values`` of shape ``inputs.shape[1:]``.
    """
    _check_pair(inputs, baseline)
    method = IntegratedGradients(forward)
    values, delta = method.attribute(
        inputs.float(),
        baselines=baseline.float(),
        n_steps=steps,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    return _result(values, delta, forward, inputs, baseline, "integrated_gradients", steps)


def layer_integrated_gradients(
    forward: Forward,
    layer: nn.Module,
    inputs: Tensor,
    baseline: Tensor,
    *,
    steps: int = 32,
    attribute_to_layer_input: bool = False,
    internal_batch_size: int | None = None,
) -> Attribution:
    """Integrated Gradients at the output (or input) of ``layer``, from the input ``baseline``.

    The path runs between the layer's activations for ``baseline`` and for ``inputs``: used where
    the meaningful units live inside the model (the mel frames of a sound, the token embeddings of a
    note) rather than in the raw input.

    Returns:
        The :class:`Attribution` with ``values`` of the layer's activation shape without the batch.
    """
    _check_pair(inputs, baseline)
    method = LayerIntegratedGradients(forward, layer)
    values, delta = method.attribute(
        inputs,
        baselines=baseline,
        n_steps=steps,
        attribute_to_layer_input=attribute_to_layer_input,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    return _result(values, delta, forward, inputs, baseline, "layer_integrated_gradients", steps)


def _check_pair(inputs: Tensor, baseline: Tensor) -> None:
    if inputs.shape[0] != 1 or baseline.shape != inputs.shape:
        raise ValueError(
            f"explain one patient at a time: inputs (1, ...) and a baseline of the same shape; got "
            f"{tuple(inputs.shape)} and {tuple(baseline.shape)}"
        )


def _result(
    values: Tensor | tuple[Tensor, ...],
    delta: Tensor,
    forward: Forward,
    inputs: Tensor,
    baseline: Tensor,
    method: str,
    steps: int,
) -> Attribution:
    if isinstance(values, tuple):  # a layer with several inputs: attribute its first
        values = values[0]
    with torch.no_grad():
        difference = float(forward(inputs)[0] - forward(baseline)[0])
    return Attribution(
        values=values[0].detach().float().cpu(),
        delta=float(delta.reshape(-1)[0]),
        difference=difference,
        method=method,
        steps=steps,
    )
