"""The report's sections on what the model relies on and how faithful its explanations are:
modality ablation and contributions, global feature weights, faithfulness, example explanations."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import torch

from deepwe_mm import SELECTED_ABOVE
from explain import figures, highlight
from explain.faithfulness_measures import precision_at_k
from explain.report_html import Figure, RawHtml, Section, Table
from pipelines.bundles.model_card import open_gates_note
from pipelines.evaluation.metrics import auroc
from pipelines.inference.batching import token_modalities
from pipelines.reports.modality_effects import selected_shares, selection_against_truth
from pipelines.reports.report_inputs import ReportInputs, labelled_risk


def ablation_section(inputs: ReportInputs) -> Section:
    effects = inputs.effects
    labels, risk = labelled_risk(inputs)
    chosen = effects.labels >= 0
    full = auroc(labels, risk)
    rows = [["(none removed)", full, 0.0]]
    for m in effects.modalities:
        value = auroc(labels, effects.without[m][chosen])
        rows.append([m, value, value - full])
    mean_abs = np.abs(effects.shapley).mean(0)
    picture = figures.bar_chart(
        effects.modalities,
        mean_abs.tolist(),
        title="Mean |Shapley value| per modality",
        xlabel="risk difference",
    )
    weights = figures.bar_chart(
        effects.modalities,
        effects.modality_weights.mean(0).tolist(),
        title="Mean modality weight",
        xlabel="attention weight",
    )
    return Section(
        "modalities",
        "Modality ablation and contributions",
        [
            Table(
                ["modality removed at inference", "AUROC", "change"],
                rows,
                caption="Each modality masked for every patient; a patient left with none gets the base rate.",
            ),
            Figure("Modality contributions (exact Shapley values over present modalities)", picture),
            Figure("Global modality weights", weights),
        ],
        ["12e", "23a"],
    )


def weights_section(inputs: ReportInputs) -> Section:
    weights = sorted(inputs.effects.feature_weights.items(), key=lambda kv: -kv[1])[:25]
    share = selected_shares(inputs.effects)
    rows = [[m, token, w, share.get((m, token))] for (m, token), w in weights]
    note = (
        "Word-piece tokens of notes are left out (they are note text)."
        if token_modalities(inputs.bundle)
        else ""
    )
    open_note = open_gates_note(inputs.bundle.metrics)
    return Section(
        "weights",
        "Global feature weights",
        [
            Table(
                ["modality", "token", "mean weight where observed", "selected (share of patients)"],
                rows,
                caption=f"A feature is selected for a patient when its weight exceeds {SELECTED_ABOVE}.",
            ),
            *([note] if note else []),
            *([open_note.replace("`", "")] if open_note else []),
        ],
        ["12g", "26"],
    )


def faithfulness_section(inputs: ReportInputs) -> Section:
    explained = [e for e in inputs.faithfulness if e.faithfulness is not None]
    blocks: list = []
    if explained:
        curves = [e.faithfulness for e in explained]
        fractions = curves[0].fractions
        mean = {
            name: np.mean([getattr(c, name) for c in curves], 0)
            for name in ("deletion", "random_deletion", "insertion", "random_insertion")
        }
        blocks.append(
            Figure(
                f"Deletion and insertion curves (mean of {len(curves)} patients)",
                figures.curves_plot(
                    fractions,
                    {
                        "deletion, IG order": mean["deletion"],
                        "deletion, random": mean["random_deletion"],
                        "insertion, IG order": mean["insertion"],
                        "insertion, random": mean["random_insertion"],
                    },
                    title="Score as tokens are removed / added",
                    xlabel="fraction of tokens",
                    ylabel="log-odds",
                ),
            )
        )
        aucs = {k: float(np.mean([c.aucs[k] for c in curves])) for k in curves[0].aucs}
        blocks.append(
            Table(
                ["curve", "mean AUC"],
                [[k, v] for k, v in aucs.items()],
                caption="A faithful ranking: deletion AUC below random, insertion AUC above.",
            )
        )
        errors = [abs(item.delta) for e in explained for item in e.modalities.values()]
        agreement = [
            item.agreement
            for e in explained
            for item in e.modalities.values()
            if not math.isnan(item.agreement)
        ]
        blocks.append(
            Table(
                ["check", "value"],
                [
                    ["IG completeness error |delta|, median", float(np.median(errors))],
                    ["IG completeness error |delta|, max", float(np.max(errors))],
                    [
                        "feature weights vs |attribution|, mean Spearman",
                        float(np.mean(agreement)) if agreement else None,
                    ],
                    ["attributions of the weight-permuted model vs trained, Spearman", inputs.randomisation],
                ],
                caption="Randomisation check: near 0 means the attributions depend on the learnt weights.",
            )
        )
    robust = defaultdict(lambda: ([], []))
    for explanation in explained:
        for item in explanation.modalities.values():
            if not math.isnan(item.infidelity):
                robust[item.kind][0].append(item.infidelity)
                robust[item.kind][1].append(item.sensitivity)
    if robust:
        blocks.append(
            Table(
                ["modality kind", "infidelity (mean)", "max-sensitivity (mean)", "patients"],
                [
                    [kind, float(np.mean(a)), float(np.mean(b)), len(a)]
                    for kind, (a, b) in sorted(robust.items())
                ],
                caption="Captum's infidelity and max-sensitivity of Integrated Gradients (Yeh et al., 2019): lower is better.",
            )
        )
    truth = ground_truth_precision(inputs)
    if truth is not None:
        blocks.append(truth)
    if not blocks:
        blocks.append("No patient could be explained.")
    return Section("faithfulness", "Faithfulness of the explanations", blocks, ["12g", "26"])


def ground_truth_precision(inputs: ReportInputs) -> Table | None:
    """Precision at k of the informative tabular features of a synthetic cohort (ground_truth.json)."""
    path = inputs.cohort.folder / "ground_truth.json"
    if not path.is_file():
        return None
    truth = json.loads(path.read_text())
    rows = []
    for name, facts in truth.get("modalities", {}).items():
        informative = set(facts.get("informative", []))
        weights = {
            t: w
            for (m, t), w in inputs.effects.feature_weights.items()
            if m == name and t in informative | set(facts.get("noise", []))
        }
        if not weights or not informative:
            continue
        k = len(informative)
        tpr, fdr = selection_against_truth(inputs.effects.selections.get(name, []), informative, set(weights))
        attributions: dict[str, list[float]] = defaultdict(list)
        for explanation in inputs.faithfulness:
            item = explanation.modalities.get(name)
            if item is not None:
                for token, value in zip(item.tokens, item.token_attribution.tolist(), strict=True):
                    attributions[token].append(abs(value))
        by_attribution = sorted(
            (t for t in attributions if t in weights), key=lambda t: -np.mean(attributions[t])
        )
        rows.append(
            [
                name,
                k,
                precision_at_k(sorted(weights, key=lambda t: -weights[t]), informative, k),
                precision_at_k(by_attribution, informative, k) if by_attribution else None,
                tpr,
                fdr,
            ]
        )
    if not rows:
        return None
    return Table(
        [
            "modality",
            "k (informative features)",
            "precision@k, feature weights",
            "precision@k, |IG|",
            "selection TPR",
            "selection FDR",
        ],
        rows,
        caption=(
            "Synthetic cohort: share of the top-k features that ground_truth.json marks informative, and "
            f"per patient, the true-positive and false-discovery rates of the selected features (weight > "
            f"{SELECTED_ABOVE}) against them."
        ),
    )


def examples_section(inputs: ReportInputs) -> Section:
    blocks: list = []
    for letter, explanation in zip("ABC", inputs.examples, strict=False):
        record = explanation.prediction
        names = list(explanation.shapley)
        blocks.append(
            f"Example {letter}: risk {record.risk:.3f}, label {record.label}."
            if record.risk is not None
            else f"Example {letter}: label {record.label}."
        )
        blocks.append(
            Figure(
                f"Example {letter}: modality contributions and weights",
                figures.bar_chart(
                    [f"{m} (Shapley)" for m in names] + [f"{m} (weight)" for m in names],
                    [explanation.shapley[m] for m in names]
                    + [record.modality_weights.get(m, 0.0) for m in names],
                    title="Shapley value (risk) and modality weight",
                    xlabel="value",
                ),
            )
        )
        rows = []
        for name, item in explanation.modalities.items():
            if item.kind == "text":
                words = item.extras.get("words", [])
                blocks.append(
                    f"Example {letter}: {name}, words highlighted by attribution (red: towards the outcome)."
                )
                blocks.append(
                    RawHtml(highlight.highlighted_note_html([w for w, _ in words], [a for _, a in words]))
                )
                continue
            order = torch.argsort(item.token_attribution.abs(), descending=True)[:3].tolist()
            rows += [
                [name, item.tokens[i], float(item.token_attribution[i]), float(item.feature_weights[i])]
                for i in order
            ]
        blocks.append(
            Table(
                ["modality", "token", "attribution (log-odds)", "feature weight"],
                rows,
                caption=f"Example {letter}: the three tokens with the largest attribution per modality",
            )
        )
    if not blocks:
        blocks.append("No example could be explained.")
    return Section(
        "examples", "Example explanations (pseudonymous; notes shown are patient text)", blocks, ["26"]
    )
