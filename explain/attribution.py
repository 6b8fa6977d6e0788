"""Integrated Gradients for one patient, with its completeness error (Captum).

Integrated Gradients (Sundararajan et al., ICML 2017) attributes ``f(x) - f(x')`` to the elements
of an input ``x`` by integrating the gradient along the straight line from a baseline ``x'``. Its
*completeness* property says the attributions sum to that difference; the gap left by the
Riemann/Gauss-Legendre approximation is the *convergence delta*, reported with every result so that
a reader can tell a faithful attribution from a numerically broken one.

Gradient x input is the first-order alternative the faithfulness benchmark compares IG with: the
gradient of the score at the patient's input times ``x - x'`` against the same baseline, one
backward pass instead of ``steps`` forward-backward passes (equal to IG for a linear score).

Everything here works on tensors and forward functions; which tensor of which encoder is attributed,
and against which baseline, is decided by the caller (:mod:`pipelines.explanations.attribution_targets`), which knows the
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

INTEGRATED_GRADIENTS = "integrated_gradients"
GRADIENT_X_INPUT = "gradient_x_input"
METHODS = (INTEGRATED_GRADIENTS, GRADIENT_X_INPUT)
"""The methods :func:`attribute` runs."""


@dataclass(frozen=True)
class Attribution:
    """The attribution of one input of one patient.

    Attributes:
        values: attributions with the input's shape without the batch dimension (for a layer
            attribution: the layer's output or input shape).
        delta: completeness error, ``sum(values) - (f(x) - f(baseline))``.
        difference: ``f(x) - f(baseline)``, the amount the attributions explain.
        method: ``"integrated_gradients"``, ``"layer_integrated_gradients"``, ``"gradient_x_input"``
            or ``"layer_gradient_x_input"``.
        steps: the number of integration steps (1 for gradient x input).
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


def gradient_x_input(
    forward: Forward,
    inputs: Tensor,
    baseline: Tensor,
    *,
    layer: nn.Module | None = None,
) -> Attribution:
    """Gradient x input: ``d forward / d x`` at ``inputs``, times ``inputs - baseline``.

    With ``layer``, the same at the output of ``layer``: the gradient of the score at the layer's
    activation for ``inputs`` times (that activation minus the layer's activation for ``baseline``),
    the space :func:`layer_integrated_gradients` attributes in.

    Args:
        forward: maps a (K, ...) batch of this input to (K,) scores.
        inputs: (1, ...) the patient's input.
        baseline: (1, ...) the reference input, same shape.
        layer: attribute at this module's output instead of at the input.

    Returns:
        The :class:`Attribution` with ``values`` of shape ``inputs.shape[1:]`` (or the layer's
        activation shape); ``delta`` is ``sum(values) - (f(x) - f(baseline))``, which gradient x
        input does not promise to make small.
    """
    _check_pair(inputs, baseline)
    if layer is None:
        point = inputs.detach().float().requires_grad_()
        (gradient,) = torch.autograd.grad(forward(point).sum(), point)
        values = gradient * (inputs.float() - baseline.float())
        method = "gradient_x_input"
    else:
        activation, score = _layer_activation(forward, layer, inputs, track=True)
        (gradient,) = torch.autograd.grad(score.sum(), activation)
        with torch.no_grad():
            reference, _ = _layer_activation(forward, layer, baseline, track=False)
        values = gradient * (activation.detach() - reference)
        method = "layer_gradient_x_input"
    return _result(values.detach(), None, forward, inputs, baseline, method, 1)


def attribute(
    forward: Forward,
    inputs: Tensor,
    baseline: Tensor,
    *,
    method: str = INTEGRATED_GRADIENTS,
    steps: int = 32,
    layer: nn.Module | None = None,
) -> Attribution:
    """One verb for every method: ``method`` of :data:`METHODS` at the input, or at ``layer``'s output.

    Args:
        forward, inputs, baseline: as for :func:`integrated_gradients`.
        steps: integration steps (Integrated Gradients only).

    Raises:
        ValueError: an unknown method.
    """
    if method == INTEGRATED_GRADIENTS:
        if layer is None:
            return integrated_gradients(forward, inputs, baseline, steps=steps)
        return layer_integrated_gradients(forward, layer, inputs, baseline, steps=steps)
    if method == GRADIENT_X_INPUT:
        return gradient_x_input(forward, inputs, baseline, layer=layer)
    raise ValueError(f"unknown attribution method {method!r}; expected one of {', '.join(METHODS)}")


def _layer_activation(
    forward: Forward, layer: nn.Module, inputs: Tensor, *, track: bool
) -> tuple[Tensor, Tensor]:
    """(``layer``'s output for ``inputs``, the scores); with ``track`` the output is a leaf that the
    scores can be differentiated against (it replaces the layer's output in the forward pass)."""
    captured: list[Tensor] = []

    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(track)
        captured.append(leaf)
        return leaf

    handle = layer.register_forward_hook(hook)
    try:
        score = forward(inputs)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(f"the layer ran {len(captured)} times in one forward pass; expected once")
    return captured[0], score


def _check_pair(inputs: Tensor, baseline: Tensor) -> None:
    if inputs.shape[0] != 1 or baseline.shape != inputs.shape:
        raise ValueError(
            f"explain one patient at a time: inputs (1, ...) and a baseline of the same shape; got "
            f"{tuple(inputs.shape)} and {tuple(baseline.shape)}"
        )


def _result(
    values: Tensor | tuple[Tensor, ...],
    delta: Tensor | None,
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
    # No delta from the method (gradient x input): the completeness gap itself.
    gap = float(values.sum()) - difference if delta is None else float(delta.reshape(-1)[0])
    return Attribution(
        values=values[0].detach().float().cpu(),
        delta=gap,
        difference=difference,
        method=method,
        steps=steps,
    )
