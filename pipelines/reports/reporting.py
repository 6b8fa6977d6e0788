"""``deepwe report``: the model audit report, one self-contained HTML file (and optionally a PDF).

The numbers come from :mod:`pipelines.evaluation.evaluation` over a prediction run of the cohort, and from one
pass of the model that re-runs only the fusion core per coalition of modalities
(:func:`modality_effects`: modality ablation, exact Shapley values per patient, global weights);
the per-patient explanations and faithfulness figures from :mod:`pipelines.explanations.explaining`. Rendering
is :mod:`explain.report_html` and :mod:`explain.figures`. The report never names a patient: examples are
"Example A, B, C", and note text stays out of it.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deepwe_mm import SELECTED_ABOVE
from explain import figures, highlight
from explain.faithfulness_measures import precision_at_k, rank_agreement
from explain.report_html import Figure, RawHtml, Report, Section, Table, write_html, write_pdf
from explain.shapley import exact_shapley
from pipelines.api import evaluate, predict_table
from pipelines.bundles.bundle_io import code_version
from pipelines.bundles.loading import Bundle
from pipelines.cohorts.cohort_table import Cohort, split_unit
from pipelines.cohorts.dataset import label_index
from pipelines.evaluation.evaluation import Evaluation, format_interval
from pipelines.evaluation.metrics import auroc
from pipelines.explanations.explaining import PatientExplanation, explain_patient, reference_base_rate
from pipelines.inference.batching import prediction_loader, token_modalities

log = logging.getLogger(__name__)

LIMITATIONS = """\
Attributions explain this model, not the disease: a feature the model relies on may be a proxy, and \
a clinician should check an explanation against the chart before acting on it.

Integrated Gradients depends on its baseline (documented per modality in each explanation); the \
Shapley value of a modality measures what the model does when the modality is masked, a situation \
that modality dropout trains for but that is not identical to a patient who never had the test.

Discrimination and calibration are measured on the evaluated split of this cohort only. Subgroups \
and missing-modality patterns with fewer than 10 patients or one outcome class are not scored; \
small groups have wide intervals. Performance in another hospital, period or population is unknown \
until it is measured there.

Temperature scaling fixes overall over- or under-confidence, not miscalibration that differs \
between subgroups; check the calibration slope and the subgroup table before using a threshold.\
"""


@dataclass
class ModalityEffects:
    """Per-patient modality effects from coalitions of modalities (N patients, M modalities).

    Attributes:
        modalities: the M modality names.
        risk: (N,) calibrated risk with every modality the patient has.
        without: modality -> (N,) risk with that modality masked (the risk with nothing left is
            the reference base rate).
        shapley: (N, M) exact Shapley values of the risk; 0 for modalities a patient lacks.
        modality_weights: (N, M) the model's modality weights.
        feature_weights: (modality, token) -> mean weight over patients where it was observed.
        labels: (N,) class indices (-1 unlabelled).
        selections: modality -> per patient that has it, (tokens selected, tokens observed):
            selected = weight above :data:`deepwe_mm.SELECTED_ABOVE`.
    """

    modalities: list[str]
    risk: np.ndarray
    without: dict[str, np.ndarray]
    shapley: np.ndarray
    modality_weights: np.ndarray
    feature_weights: dict[tuple[str, str], float]
    labels: np.ndarray
    selections: dict[str, list[tuple[frozenset[str], frozenset[str]]]] = field(default_factory=dict)


def modality_effects(
    bundle: Bundle, cohort: Cohort, positions: Sequence[int], *, batch_size: int = 64
) -> ModalityEffects:
    """Encode each batch once, then run the fusion core once per coalition of modalities (2^M)."""
    model, target = bundle.model, 1 if len(bundle.classes) == 2 else 0
    names = list(bundle.spec.modalities)
    base = reference_base_rate(bundle, target)
    hidden = set(token_modalities(bundle))  # word-piece names are note text
    # The report does not need the inputs' sha256: skip re-reading every file for it.
    loader, collate = prediction_loader(bundle, cohort, positions, batch_size=batch_size, hash_inputs=False)
    to_index = label_index(cohort.spec, bundle.classes)
    labels = [to_index(record.outcome) for record in loader.dataset.records]
    parts: dict[str, list] = defaultdict(list)
    weight_sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    selections: dict[str, list[tuple[frozenset[str], frozenset[str]]]] = defaultdict(list)
    with torch.no_grad():
        for samples, _, _ in loader:
            batch = collate(samples).to(bundle.device)
            values, masks, present = model.tokens(batch)
            output = model.core(values, masks, present)
            usable = output.modality_present  # (B, M)

            def value(subsets, values=values, masks=masks, usable=usable) -> list[np.ndarray]:
                # A row's value under S is its value under S restricted to its present modalities:
                # computed once (subsets come smallest first), copied otherwise, so that a modality
                # the patient lacks changes nothing, exactly.
                has = usable.cpu().numpy()  # (B, M)
                index = {m: k for k, m in enumerate(names)}
                known: dict[frozenset, np.ndarray] = {}
                for subset in subsets:
                    inside = np.zeros(has.shape, dtype=bool)
                    inside[:, [index[m] for m in subset]] = True
                    own = ~(inside & ~has).any(1)  # rows holding every modality of the subset
                    risk = np.full(has.shape[0], base)
                    rows = own & bool(subset)
                    if rows.any():
                        chosen = torch.as_tensor(rows, device=bundle.device)
                        flags = {
                            m: torch.as_tensor(inside[rows, k], device=bundle.device)
                            for m, k in index.items()
                        }
                        logits = model.core(
                            {m: v[chosen] for m, v in values.items()},
                            {m: v[chosen] for m, v in masks.items()},
                            flags,
                        ).logits.float()
                        risk[rows] = torch.softmax(logits / bundle.temperature, 1)[:, target].cpu().numpy()
                    for row in np.flatnonzero(~own):
                        reduced = frozenset(m for m in subset if has[row, index[m]])
                        risk[row] = known[reduced][row]
                    known[subset] = risk
                return [known[subset] for subset in subsets]

            shapley, coalition = exact_shapley(names, value)
            full = coalition[frozenset(names)]
            parts["risk"].append(full)
            parts["shapley"].append(np.stack([shapley[m] for m in names], 1))
            parts["weights"].append(output.modality_weights.float().cpu().numpy())
            parts["labels"].append(np.asarray([labels[s.index] for s in samples]))
            for m in names:
                parts[f"without:{m}"].append(coalition[frozenset(names) - {m}])
                if m in hidden:
                    continue
                weights = output.feature_weights[m].float().cpu().numpy()
                observed = output.token_masks[m].cpu().numpy()
                for row, tokens in enumerate(batch.inputs[m].names):
                    seen, chosen = set(), set()
                    for t, token in enumerate(tokens[: weights.shape[1]]):
                        if observed[row, t]:
                            weight_sums[(m, token)][0] += float(weights[row, t])
                            weight_sums[(m, token)][1] += 1
                            seen.add(token)
                            if weights[row, t] > SELECTED_ABOVE:
                                chosen.add(token)
                    if seen:
                        selections[m].append((frozenset(chosen), frozenset(seen)))
    return ModalityEffects(
        modalities=names,
        risk=np.concatenate(parts["risk"]),
        without={m: np.concatenate(parts[f"without:{m}"]) for m in names},
        shapley=np.concatenate(parts["shapley"]),
        modality_weights=np.concatenate(parts["weights"]),
        feature_weights={key: total / count for key, (total, count) in weight_sums.items()},
        labels=np.concatenate(parts["labels"]),
        selections=dict(selections),
    )


@dataclass
class ReportInputs:
    """What the report is built from (kept for tests and for the dashboard's audit page)."""

    bundle: Bundle
    cohort: Cohort
    predictions: pd.DataFrame
    evaluation: Evaluation
    effects: ModalityEffects
    positions: list[int]
    examples: list[PatientExplanation]
    faithfulness: list[PatientExplanation]
    randomisation: float | None


def gather(
    bundle: Bundle,
    cohort: Cohort,
    *,
    predictions: pd.DataFrame | None = None,
    split: str | None = "test",
    n_boot: int = 1000,
    examples: int = 3,
    faithfulness_patients: int = 8,
    steps: int = 32,
    progress: Callable[[str], None] = lambda message: None,
) -> ReportInputs:
    """Predict (unless ``predictions`` are given), evaluate, and explain a few patients."""
    if predictions is None:
        progress("predicting")
        predictions = predict_table(bundle, cohort)
    progress("evaluating")
    evaluation = evaluate(bundle, cohort, predictions=predictions, split=split, n_boot=n_boot)
    ok = predictions[predictions["status"] == "ok"]
    chosen_split = evaluation.split
    positions = [
        int(row) - 1 for row in ok["row"] if chosen_split is None or cohort.split_of(int(row)) == chosen_split
    ]
    progress("modality effects")
    effects = modality_effects(bundle, cohort, positions)
    ids = ok.set_index("row")["patient_id"].astype(str)
    by_risk = ok[ok["row"].isin([p + 1 for p in positions])].sort_values("risk", kind="stable")
    picked: list[str] = []
    if len(by_risk):
        threshold = bundle.threshold if bundle.threshold is not None else 0.5
        near = (by_risk["risk"] - threshold).abs().idxmin()
        for index in (by_risk.index[-1], by_risk.index[0], near):
            pid = str(by_risk.at[index, "patient_id"])
            if pid not in picked:
                picked.append(pid)
    progress("example explanations")
    explained = [
        explain_patient(bundle, cohort, pid, steps=steps, faithfulness=True) for pid in picked[:examples]
    ]
    progress("faithfulness")
    others = [ids[p + 1] for p in positions if ids[p + 1] not in picked][
        : max(0, faithfulness_patients - len(explained))
    ]
    faithful = explained + [
        explain_patient(bundle, cohort, pid, steps=steps, faithfulness=True) for pid in others
    ]
    randomisation = (
        randomisation_check(
            bundle, cohort, picked[0], steps=steps, trained=explained[0] if explained else None
        )
        if picked
        else None
    )
    return ReportInputs(
        bundle, cohort, predictions, evaluation, effects, positions, explained, faithful, randomisation
    )


def randomisation_check(
    bundle: Bundle, cohort: Cohort, patient_id: str, *, steps: int, trained: PatientExplanation | None = None
) -> float:
    """Rank correlation of token attributions between the model and the same model with every
    trained weight tensor's entries randomly permuted (their scale kept, what was learnt destroyed;
    the model-randomisation test of Adebayo et al., NeurIPS 2018). Near 0 means the attributions
    depend on what the model learnt; near 1 that they mostly echo the input. The weights are put
    back afterwards. ``trained``: the patient's explanation by the trained model, when already made."""
    if trained is None:
        trained = explain_patient(bundle, cohort, patient_id, steps=steps)
    model = bundle.model
    original = {name: value.detach().clone() for name, value in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    try:
        with torch.no_grad():
            for parameter in model.parameters():
                flat = parameter.view(-1)
                flat.copy_(flat[torch.randperm(flat.numel(), generator=generator).to(flat.device)])
        shuffled = explain_patient(bundle, cohort, patient_id, steps=steps)
    finally:
        model.load_state_dict(original)
    first = torch.cat([trained.modalities[m].token_attribution for m in trained.modalities])
    second = torch.cat([shuffled.modalities[m].token_attribution for m in trained.modalities])
    return rank_agreement(first, second)


# --- sections -------------------------------------------------------------------------------------


def _f(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _group_rows(groups) -> list[list]:
    return [
        [
            g.group,
            g.value,
            g.n,
            g.positives,
            format_interval(g.auroc),
            format_interval(g.auprc),
            g.reason or "",
        ]
        for g in groups
    ]


def _bins(calibration) -> list[dict[str, float]]:
    return [
        {"mean_risk": b.mean_risk, "observed": b.observed_rate, "count": b.count} for b in calibration.bins
    ]


def intended_use(inputs: ReportInputs) -> Section:
    bundle = inputs.bundle
    manifest = bundle.contents.manifest
    facts = Table(
        ["item", "value"],
        [
            ["cohort (spec name)", bundle.spec.name],
            [
                "outcome",
                f"{bundle.spec.outcome.column} ({bundle.spec.outcome.task}), classes {', '.join(bundle.classes)}",
            ],
            ["model bundle sha256", bundle.sha256],
            ["code version at training", manifest.code_version],
            ["calibration", bundle.contents.calibration.get("method", "–")],
            ["temperature", bundle.temperature],
            ["positive-logit shift (in the weights)", bundle.logit_shift],
            ["decision threshold", bundle.threshold],
            ["threshold rule", (bundle.contents.calibration.get("threshold") or {}).get("rule", "–")],
        ],
    )
    return Section(
        "intended-use",
        "Intended use and model card",
        [facts, bundle.contents.model_card],
        ["1", "2", "3c", "15", "27a"],
    )


def data_section(inputs: ReportInputs) -> Section:
    cohort, effects, evaluation = inputs.cohort, inputs.effects, inputs.evaluation
    outcome = cohort.spec.outcome.column
    splits = pd.Series([cohort.split_of(r + 1) or "(none)" for r in range(len(cohort.table))])
    balance = pd.crosstab(splits, cohort.table[outcome].astype(str).fillna("(missing)"))
    rows = [[split, *[int(v) for v in balance.loc[split]]] for split in balance.index]
    present = (
        np.asarray(
            [
                [bool(json.loads(p)[m]) if isinstance(p, str) else bool(p[m]) for m in effects.modalities]
                for p in inputs.predictions.set_index("row").loc[
                    [q + 1 for q in inputs.positions], "modality_present"
                ]
            ]
        )
        if inputs.positions
        else np.zeros((0, len(effects.modalities)), dtype=bool)
    )
    blocks: list = [
        f"{len(cohort.table)} rows in the cohort; {evaluation.n} evaluated "
        f"(split: {evaluation.split or 'all labelled rows'}; split unit: {split_unit(cohort.spec)}); excluded: "
        + (", ".join(f"{k} {v}" for k, v in evaluation.excluded.items() if v) or "none")
        + ".",
        Table(["split", *balance.columns.astype(str)], rows, caption=f"Outcome ({outcome}) by split"),
    ]
    if len(present):
        blocks.append(
            Figure(
                "Missing-modality patterns",
                figures.missingness_matrix(present, effects.modalities),
                "Rows: patterns of present modalities among evaluated patients; columns: modalities.",
            )
        )
        blocks.append(
            Table(
                ["modality", "available"],
                [[m, f"{present[:, k].mean():.1%}"] for k, m in enumerate(effects.modalities)],
            )
        )
    return Section("data", "Data", blocks, ["5a", "6a", "8a", "9a", "11", "20a", "20b"])


def discrimination(inputs: ReportInputs) -> Section:
    evaluation = inputs.evaluation
    blocks: list = [
        Table(
            ["metric", f"estimate (95% bootstrap interval, {evaluation.n_boot} resamples)"],
            [
                ["AUROC", format_interval(evaluation.auroc)],
                ["AUPRC", format_interval(evaluation.auprc)],
                ["patients", evaluation.n],
                ["positives", evaluation.positives],
            ],
        ),
    ]
    labels, risk = _labelled(inputs)
    if len(labels):
        blocks.append(Figure("ROC and precision-recall curves", figures.roc_pr_curves(labels, risk)))
    columns = ["group", "value", "n", "positives", "AUROC (95% CI)", "AUPRC (95% CI)", "note"]
    blocks.append(Table(columns, _group_rows(evaluation.subgroups), caption="Per subgroup of the spec"))
    blocks.append(
        Table(columns, _group_rows(evaluation.modality_patterns), caption="Per missing-modality pattern")
    )
    blocks += list(evaluation.notes)
    return Section("discrimination", "Discrimination", blocks, ["12e", "14", "23a", "23b"])


def _labelled(inputs: ReportInputs) -> tuple[np.ndarray, np.ndarray]:
    effects = inputs.effects
    chosen = effects.labels >= 0
    return effects.labels[chosen], effects.risk[chosen]


def calibration_section(inputs: ReportInputs) -> Section:
    evaluation = inputs.evaluation
    after, before = evaluation.calibration.get("after"), evaluation.calibration.get("before")
    if after is None:
        return Section(
            "calibration", "Calibration", ["Calibration is reported for binary outcomes only."], ["12e"]
        )
    rows = [
        [name, c.ece, c.brier, c.slope, c.intercept]
        for name, c in (
            ("before temperature scaling", before),
            ("after (the risks the model reports)", after),
        )
    ]
    return Section(
        "calibration",
        "Calibration",
        [
            Figure(
                "Reliability diagram",
                figures.reliability_diagram(_bins(before), _bins(after)),
                "Observed outcome rate against mean predicted risk in 10 equal-width bins.",
            ),
            Table(
                ["risk", "ECE", "Brier", "calibration slope", "calibration intercept"],
                rows,
                caption="Ideal: ECE 0, slope 1, intercept 0.",
            ),
        ],
        ["12e", "12f", "23a"],
    )


def decision_section(inputs: ReportInputs) -> Section:
    evaluation = inputs.evaluation
    curve, threshold = evaluation.decision_curve, evaluation.threshold
    if curve is None or threshold is None:
        return Section("decision", "Decision curve and threshold", ["Binary outcomes only."], ["12e"])
    matrix = Table(
        ["", "outcome positive", "outcome negative"],
        [
            ["predicted positive", threshold.tp, threshold.fp],
            ["predicted negative", threshold.fn, threshold.tn],
        ],
        caption=f"Confusion matrix at the threshold {threshold.threshold:.3f} ({threshold.source})",
    )
    rates = Table(
        ["sensitivity", "specificity", "PPV", "NPV"],
        [[threshold.sensitivity, threshold.specificity, threshold.ppv, threshold.npv]],
    )
    picture = figures.decision_curve(
        np.asarray(curve.thresholds), np.asarray(curve.model), np.asarray(curve.treat_all)
    )
    return Section(
        "decision",
        "Decision curve and threshold",
        [Figure("Net benefit against treat-all and treat-none", picture), matrix, rates],
        ["12e", "15", "23a"],
    )


def ablation_section(inputs: ReportInputs) -> Section:
    effects = inputs.effects
    labels, risk = _labelled(inputs)
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
        ],
        ["12g", "26"],
    )


def selected_shares(effects: ModalityEffects) -> dict[tuple[str, str], float]:
    """(modality, token) -> share of the patients where it was observed that selected it."""
    chosen: dict[tuple[str, str], int] = defaultdict(int)
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for m, patients in effects.selections.items():
        for selected, observed in patients:
            for token in observed:
                seen[(m, token)] += 1
                chosen[(m, token)] += token in selected
    return {key: chosen[key] / count for key, count in seen.items()}


def selection_against_truth(
    patients: Sequence[tuple[frozenset[str], frozenset[str]]], informative: set[str], judged: set[str]
) -> tuple[float, float]:
    """Mean per-patient TPR and FDR of the selected tokens against the informative ones.

    Only tokens in ``judged`` (informative or noise in the ground truth) count; a patient's TPR is
    over the informative tokens it has observed (patients without any are skipped), its FDR is 0
    when it selects nothing.
    """
    tprs, fdrs = [], []
    for selected, observed in patients:
        chosen, relevant = selected & judged, observed & informative
        if relevant:
            tprs.append(len(chosen & relevant) / len(relevant))
        fdrs.append(len(chosen - informative) / len(chosen) if chosen else 0.0)
    return (float(np.mean(tprs)) if tprs else math.nan), (float(np.mean(fdrs)) if fdrs else math.nan)


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


def build_report(inputs: ReportInputs) -> Report:
    """The :class:`Report` of every section, in reading order."""
    spec = inputs.bundle.spec
    sections = [
        intended_use(inputs),
        data_section(inputs),
        discrimination(inputs),
        calibration_section(inputs),
        decision_section(inputs),
        ablation_section(inputs),
        weights_section(inputs),
        faithfulness_section(inputs),
        examples_section(inputs),
        Section("limitations", "Limitations", [LIMITATIONS], ["26", "27b"]),
    ]
    return Report(
        title=f"Model audit report: {spec.outcome.column} on cohort {spec.name}",
        subtitle=f"DeepWe-MM model {inputs.bundle.sha256[:12]}, evaluated on {inputs.cohort.spec_path.name}",
        sections=sections,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        code_version=code_version(),
    )


def write_report(
    report: Report, out: str | Path, *, pdf: bool = False
) -> tuple[Path, Path | None, int | None]:
    """Write the HTML (atomically) and, with ``pdf``, a PDF beside it. Returns (html, pdf, pages)."""
    out = write_html(report, out)
    if not pdf:
        return out, None, None
    pdf_path = out.with_suffix(".pdf")
    return out, pdf_path, write_pdf(out.read_text(encoding="utf-8"), pdf_path)
