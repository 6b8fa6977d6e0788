"""The report's sections on the model and its performance: intended use, data, discrimination,
calibration, decision curve and threshold."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from explain import figures
from explain.report_html import Figure, Section, Table
from pipelines.cohorts.cohort_table import split_unit
from pipelines.evaluation.evaluation import format_interval
from pipelines.reports.report_inputs import ReportInputs, labelled_risk


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
    labels, risk = labelled_risk(inputs)
    if len(labels):
        blocks.append(Figure("ROC and precision-recall curves", figures.roc_pr_curves(labels, risk)))
    columns = ["group", "value", "n", "positives", "AUROC (95% CI)", "AUPRC (95% CI)", "note"]
    blocks.append(Table(columns, _group_rows(evaluation.subgroups), caption="Per subgroup of the spec"))
    blocks.append(
        Table(columns, _group_rows(evaluation.modality_patterns), caption="Per missing-modality pattern")
    )
    blocks += list(evaluation.notes)
    return Section("discrimination", "Discrimination", blocks, ["12e", "14", "23a", "23b"])


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
