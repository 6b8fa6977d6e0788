"""The invariants of DESIGN.md: missing is weight 0 and inert, batch mates never matter at eval."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch

from deepwe_mm import DeepWe, DeepWeLoss, DeepWeOutput
from tests.deepwe_mm import BATCH, TINY, make_batch, take


def _eval_model(config=TINY, reference_rows: int = 23) -> DeepWe:
    model = DeepWe(config).eval()
    model.set_reference(
        torch.randn(reference_rows, config.hidden_dim), ids=[f"p{i}" for i in range(reference_rows)]
    )
    return model


def _assert_identical(a: DeepWeOutput, b: DeepWeOutput) -> None:
    for field in fields(DeepWeOutput):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, dict):
            assert all(torch.equal(x[m], y[m]) for m in x), field.name
        elif isinstance(x, torch.Tensor):
            assert torch.equal(x, y), field.name
        else:
            assert x == y, field.name


@pytest.mark.parametrize("gate", ["stochastic", "sigmoid", "sparsemax"])
def test_missing_modality_weighs_zero_and_nan_in_its_slot_changes_nothing(gate: str) -> None:
    config = replace(TINY, gate=gate)
    model = _eval_model(config)
    values, masks, present = make_batch(config)
    absent = ~present["notes"]
    assert absent.any() and present["notes"].any()
    values["notes"][absent] = 0.0
    with torch.no_grad():
        zeros = model(values, masks, present)
        values["notes"][absent] = float("nan")
        values["notes"][absent, 0, 0] = float("inf")
        poisoned = model(values, masks, present)
    _assert_identical(zeros, poisoned)
    notes = config.modalities.index("notes")
    assert (poisoned.modality_weights[absent, notes] == 0).all()
    assert (poisoned.feature_weights["notes"][absent] == 0).all()
    assert (poisoned.modality_weights[~absent, notes] > 0).all()
    assert torch.isfinite(poisoned.logits).all()


def test_masked_token_weighs_zero_and_nan_in_it_changes_nothing() -> None:
    model = _eval_model()
    values, masks, present = make_batch()
    hidden = ~masks["labs"]
    assert hidden[3, 1] and present["labs"][3]
    values["labs"][hidden] = 0.0
    with torch.no_grad():
        zeros = model(values, masks, present)
        values["labs"][hidden] = float("nan")
        poisoned = model(values, masks, present)
    _assert_identical(zeros, poisoned)
    assert (poisoned.feature_weights["labs"][hidden] == 0).all()
    observed = masks["labs"] & present["labs"][:, None]
    assert (
        (poisoned.feature_weights["labs"][observed] > 0) & (poisoned.feature_weights["labs"][observed] < 1)
    ).all()


def test_nan_in_missing_slots_leaves_training_gradients_finite() -> None:
    model = DeepWe(TINY).train()
    values, masks, present = make_batch()
    values["notes"][~present["notes"]] = float("nan")
    values["labs"][~masks["labs"]] = float("inf")
    DeepWeLoss(TINY)(model(values, masks, present), torch.arange(BATCH) % 3).total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("pool", ["reference", "memory"])
def test_eval_output_is_the_same_alone_and_in_any_batch(pool: str) -> None:
    if pool == "reference":
        model = _eval_model()
    else:
        model = DeepWe(TINY).train()
        with torch.no_grad():
            for seed in range(3):
                model(*make_batch(seed=seed + 10))
        model.eval()
    data = make_batch()
    alone = model(*take(data, [4]))
    in_batch = model(*data)
    shuffled = model(*take(data, [7, 0, 4, 4, 12, 2]))
    for together, row in ((in_batch, 4), (shuffled, 2), (shuffled, 3)):
        assert torch.allclose(alone.logits[0], together.logits[row], atol=1e-6)
        assert torch.allclose(alone.fused[0], together.fused[row], atol=1e-6)
        assert torch.allclose(alone.modality_weights[0], together.modality_weights[row], atol=1e-6)
        for m in TINY.modalities:
            assert torch.allclose(alone.feature_weights[m][0], together.feature_weights[m][row], atol=1e-6)
        assert torch.equal(alone.neighbours[0], together.neighbours[row])
        assert torch.allclose(alone.neighbour_weights[0], together.neighbour_weights[row], atol=1e-6)


def test_modality_weights_sum_to_one_over_present_modalities() -> None:
    model = _eval_model()
    values, masks, present = make_batch()
    output = model(values, masks, present)
    taking_part = torch.stack([present[m] for m in TINY.modalities], 1)
    assert torch.equal(output.modality_present, taking_part)
    assert torch.allclose(output.modality_weights.sum(1), torch.ones(BATCH), atol=1e-6)
    assert (output.modality_weights[~taking_part] == 0).all()
    assert (output.modality_weights[taking_part] > 0).all()
    assert torch.equal(output.modality_weights[2], torch.tensor([1.0, 0.0, 0.0]))  # labs only


def test_outputs_have_the_documented_shapes() -> None:
    output = _eval_model()(*make_batch())
    assert output.logits.shape == (BATCH, 3) and output.fused.shape == (BATCH, 36)
    assert output.modality_weights.shape == (BATCH, 3) and output.modalities == TINY.modalities
    assert {m: w.shape for m, w in output.feature_weights.items()} == {
        "labs": (BATCH, 5),
        "notes": (BATCH, 3),
        "vitals": (BATCH, 9),
    }
    assert output.neighbours.shape == output.neighbour_weights.shape == (BATCH, 5)
    assert output.neighbours.dtype == torch.long and int(output.neighbours.max()) < 23
    assert torch.allclose(output.neighbour_weights.sum(1), torch.ones(BATCH), atol=1e-6)
    assert torch.allclose(output.probabilities().sum(1), torch.ones(BATCH), atol=1e-6)


def test_a_patient_without_any_modality_is_refused() -> None:
    values, masks, present = make_batch()
    for m in TINY.modalities:
        present[m][5] = False
    with pytest.raises(ValueError, match=r"batch rows \[5\] have no modality present"):
        DeepWe(TINY)(values, masks, present)


def test_a_present_modality_without_observed_tokens_counts_as_absent() -> None:
    model = _eval_model()
    values, masks, present = make_batch()
    present["vitals"][0] = present["labs"][0] = True
    masks["vitals"][0] = False
    output = model(values, masks, present)
    assert output.modality_weights[0, 2] == 0 and not output.modality_present[0, 2]
    masks["labs"][2] = False  # row 2 has only labs
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        model(values, masks, present)


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda v, k, p: v.pop("notes"), r"values must hold exactly.*missing \['notes'\]"),
        (lambda v, k, p: p.update(extra=p["labs"]), r"present must hold exactly.*unknown \['extra'\]"),
        (lambda v, k, p: v.update(labs=v["labs"][..., :12]), r"values\['labs'\] must be float \(B, T, 13\)"),
        (lambda v, k, p: k.update(labs=k["labs"].float()), r"masks\['labs'\] must be bool"),
        (lambda v, k, p: p.update(labs=p["labs"][:5]), r"present\['labs'\] must be bool \(13,\)"),
    ],
)
def test_malformed_inputs_are_refused_with_the_modality_named(break_it, message: str) -> None:
    values, masks, present = make_batch()
    break_it(values, masks, present)
    with pytest.raises(ValueError, match=message):
        DeepWe(TINY)(values, masks, present)


def test_logits_add_each_modalitys_evidence_and_an_absent_one_adds_its_missing_bias() -> None:
    model = _eval_model()
    with torch.no_grad():
        model.missing_logits.normal_()
    values, masks, present = make_batch()
    with torch.no_grad():
        output = model(values, masks, present)
        interaction = model.head(
            model.graph(output.fused, model.reference_embeddings, None, model.reference_outcomes)[0]
        )
    torch.testing.assert_close(output.logits, interaction + output.modality_logits.sum(1))
    notes = TINY.modalities.index("notes")
    absent = ~output.modality_present[:, notes]
    assert absent.any()
    expected = model.missing_logits[notes].expand(int(absent.sum()), -1)
    torch.testing.assert_close(output.modality_logits[absent, notes], expected)
