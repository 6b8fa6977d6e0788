"""Integrated Gradients wrappers, exact Shapley values and faithfulness measures on small known models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from explain.attribution import (
    attribute,
    gradient_x_input,
    integrated_gradients,
    layer_integrated_gradients,
)
from explain.faithfulness_measures import (
    deletion_insertion,
    infidelity_score,
    keep_masks,
    precision_at_k,
    rank_agreement,
    sensitivity_score,
)
from explain.shapley import coalitions, exact_shapley


class Smooth(nn.Module):
    """A small non-linear scalar model: (K, 7) -> (K,)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(7, 5)
        self.second = nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x))).squeeze(-1)


def test_integrated_gradients_completeness_on_a_smooth_model():
    model = Smooth().eval()
    x = torch.randn(1, 7)
    result = integrated_gradients(model, x, torch.zeros(1, 7), steps=64)
    assert result.values.shape == (7,)
    assert result.relative_delta < 1e-3
    assert result.values.sum().item() == pytest.approx(result.difference, abs=1e-3)


def test_integrated_gradients_of_a_linear_model_is_gradient_times_input():
    weights = torch.tensor([2.0, -1.0, 0.5])
    x = torch.tensor([[1.0, 3.0, -2.0]])
    result = integrated_gradients(lambda v: v @ weights, x, torch.zeros(1, 3), steps=8)
    assert torch.allclose(result.values, weights * x[0], atol=1e-5)
    assert abs(result.delta) < 1e-5


def test_layer_integrated_gradients_attributes_the_layer_output():
    model = Smooth().eval()
    x = torch.randn(1, 7)
    result = layer_integrated_gradients(model, model.first, x, torch.zeros(1, 7), steps=64)
    assert result.values.shape == (5,)
    assert result.relative_delta < 1e-2


def test_integrated_gradients_explains_one_patient_at_a_time():
    with pytest.raises(ValueError, match="one patient"):
        integrated_gradients(Smooth(), torch.randn(2, 7), torch.zeros(2, 7))


def test_gradient_x_input_of_a_quadratic_is_its_analytic_value():
    a, b = torch.tensor([1.0, -2.0, 0.5, 3.0]), torch.tensor([0.3, 1.0, -1.0, 0.0])
    x, x0 = torch.tensor([[0.7, -1.2, 2.0, 0.4]]), torch.tensor([[0.1, 0.5, -0.3, 0.2]])

    def f(v: torch.Tensor) -> torch.Tensor:
        return (a * v**2).sum(-1) + v @ b

    result = gradient_x_input(f, x, x0)
    expected = (2 * a * x[0] + b) * (x[0] - x0[0])
    assert torch.allclose(result.values, expected, atol=1e-6)
    assert result.method == "gradient_x_input" and result.steps == 1
    assert result.difference == pytest.approx(float(f(x)[0] - f(x0)[0]), abs=1e-6)
    # Not complete for a quadratic: the gap is sum(a * (x - x0)^2), which the result reports.
    assert result.delta == pytest.approx(float((a * (x[0] - x0[0]) ** 2).sum()), abs=1e-5)


def test_layer_gradient_x_input_is_the_gradient_at_the_layer_times_its_activation_change():
    model = Smooth().eval()

    def f(v: torch.Tensor) -> torch.Tensor:  # score = |first(v)|^2: d score / d h = 2 h
        return (model.first(v) ** 2).sum(-1)

    x, x0 = torch.randn(1, 7), torch.randn(1, 7)
    result = gradient_x_input(f, x, x0, layer=model.first)
    with torch.no_grad():
        h, h0 = model.first(x)[0], model.first(x0)[0]
    assert result.values.shape == (5,)
    assert torch.allclose(result.values, 2 * h * (h - h0), atol=1e-5)
    assert result.method == "layer_gradient_x_input"
    assert not any(p.grad is not None for p in model.parameters())  # nothing accumulated


def test_attribute_runs_either_method_on_the_same_baseline():
    weights = torch.tensor([2.0, -1.0, 0.5])
    x, x0 = torch.tensor([[1.0, 3.0, -2.0]]), torch.tensor([[0.5, 0.0, 1.0]])
    ig = attribute(lambda v: v @ weights, x, x0, steps=8)
    gxi = attribute(lambda v: v @ weights, x, x0, method="gradient_x_input")
    assert ig.method == "integrated_gradients"
    assert torch.allclose(ig.values, gxi.values, atol=1e-5)  # equal for a linear score
    assert gxi.difference == pytest.approx(ig.difference)
    with pytest.raises(ValueError, match="unknown attribution method 'occlusion'"):
        attribute(lambda v: v @ weights, x, x0, method="occlusion")


def test_exact_shapley_of_an_additive_game_is_each_players_own_value():
    own = {"labs": 0.3, "notes": -0.1, "cxr": 0.05}
    values, table = exact_shapley(list(own), lambda subsets: [sum(own[p] for p in s) for s in subsets])
    assert values == pytest.approx(own)
    assert len(table) == 8


def test_exact_shapley_efficiency_and_symmetry_with_interactions():
    def game(subsets):  # labs and notes only count together; cxr adds 0.2 alone
        return [0.1 + 0.5 * ({"labs", "notes"} <= s) + 0.2 * ("cxr" in s) for s in subsets]

    values, table = exact_shapley(["labs", "notes", "cxr"], game)
    assert sum(values.values()) == pytest.approx(
        table[frozenset(["labs", "notes", "cxr"])] - table[frozenset()]
    )
    assert values["labs"] == pytest.approx(values["notes"]) == pytest.approx(0.25)
    assert values["cxr"] == pytest.approx(0.2)


def test_shapley_refuses_duplicates_and_too_many_players():
    with pytest.raises(ValueError, match="distinct"):
        exact_shapley(["a", "a"], lambda s: [0.0] * len(s))
    with pytest.raises(ValueError, match="2\\^13"):
        exact_shapley([str(i) for i in range(13)], lambda s: [0.0] * len(s))
    assert coalitions(["a", "b"])[0] == frozenset() and coalitions(["a", "b"])[-1] == {"a", "b"}


def test_keep_masks_delete_and_insert_in_order():
    masks = keep_masks([2, 0, 1, 3], 4, np.array([0.0, 0.5, 1.0]), insertion=False)
    assert masks.tolist() == [[True] * 4, [False, True, False, True], [False] * 4]
    masks = keep_masks([2, 0, 1, 3], 4, np.array([0.0, 0.5, 1.0]), insertion=True)
    assert masks.tolist() == [[False] * 4, [True, False, True, False], [True] * 4]


def test_deletion_by_true_attribution_beats_random_orders():
    weights = torch.tensor([3.0, -1.0, 0.2, 2.0, 0.0, -0.5, 1.0, 0.1])

    def scorer(keep: torch.Tensor) -> torch.Tensor:  # a linear score; removed units go to 0
        return keep.float() @ weights

    curves = deletion_insertion(scorer, weights, steps=8, random_orders=20)
    assert curves.aucs["deletion"] < curves.aucs["random_deletion"]
    assert curves.aucs["insertion"] > curves.aucs["random_insertion"]
    assert curves.deletion[0] == pytest.approx(weights.sum().item())


def test_rank_agreement_and_precision_at_k():
    assert rank_agreement([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_agreement([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(rank_agreement([1, 1, 1], [1, 2, 3]))
    assert precision_at_k(["lactate", "bmi", "age"], {"lactate", "age"}, 2) == 0.5


def test_infidelity_is_zero_when_attributions_predict_every_perturbation():
    weights = torch.tensor([1.0, -2.0, 0.5])
    x = torch.tensor([[0.3, 1.0, -1.0]])
    # For a linear score, perturbation . weights is exactly the score change: infidelity 0.
    assert infidelity_score(lambda v: v @ weights, x, weights[None]) == pytest.approx(0.0, abs=1e-6)
    assert infidelity_score(lambda v: v @ weights, x, torch.zeros(1, 3)) > 0.01


def test_sensitivity_of_a_constant_explanation_is_zero():
    x = torch.randn(1, 4)
    assert sensitivity_score(lambda v: torch.ones_like(v), x) == pytest.approx(0.0)
    assert sensitivity_score(lambda v: v * 10, x) > 0.0
