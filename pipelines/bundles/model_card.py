"""The bundle's ``model_card.md``: intended use, data, metrics and limitations, in plain Markdown."""

from __future__ import annotations

from typing import Any

from data_schemas import CohortSpec
from pipelines.cohorts.cohort_table import split_unit


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_model_card(
    spec: CohortSpec, prepared: Any, metrics: dict[str, Any], calibration: dict[str, Any], config: Any
) -> str:
    """A model card in Markdown. It names the cohort and its columns, never a patient."""
    outcome = spec.outcome
    sizes = metrics["split_sizes"]
    lines = [
        f"# Model card: DeepWe-MM model for `{outcome.column}` on cohort `{spec.name}`",
        "",
        "## Intended use",
        "",
        f"Predicts `{outcome.column}` ({outcome.task}, classes {', '.join(prepared.classes)}) for patients "
        f"like those of cohort `{spec.name}`, as decision support for clinicians. It is not a diagnosis, "
        "it is not validated outside this cohort's population, and every prediction should be read with "
        "its explanation.",
        "",
        "## Data",
        "",
        f"- Modalities: {', '.join(f'{n} ({m.kind})' for n, m in spec.modalities.items())}",
        f"- Patients: train {sizes['train']}, validation {sizes['val']}, test {sizes['test']}; "
        f"{prepared.unlabelled} unlabelled rows not used",
        f"- Preprocessing fitted on the training split only; the split is {split_unit(spec)}",
        *data_notes(prepared.preprocessing),
        "",
        "## Performance",
        "",
        "| split | "
        + " | ".join(k for k in ("auroc", "auprc", "brier", "ece", "n") if k in metrics["val"])
        + " |",
        "|---|" + "---|" * len([k for k in ("auroc", "auprc", "brier", "ece", "n") if k in metrics["val"]]),
    ]
    for split in ("val_uncalibrated", "val", "test"):
        if split in metrics:
            keys = [k for k in ("auroc", "auprc", "brier", "ece", "n") if k in metrics[split]]
            lines.append(f"| {split} | " + " | ".join(_fmt(metrics[split][k]) for k in keys) + " |")
    interval = metrics.get("test", {}).get("auroc_ci95") or [None, None]
    if None not in interval:
        lines += [
            "",
            f"Test AUROC 95% bootstrap interval: {interval[0]:.3f}–{interval[1]:.3f} "
            f"({metrics['test']['n']} patients).",
        ]
    lines += [
        "",
        f"Calibration: temperature {calibration['temperature']:.3f} and positive-logit shift "
        f"{calibration.get('logit_shift', 0.0):+.3f} fitted on the validation split "
        "(the shift is folded into the output layer's bias).",
    ]
    if "threshold" in calibration:
        t = calibration["threshold"]
        lines.append(
            f"Decision threshold {t['value']:.3f} ({t['rule']}); validation sensitivity "
            f"{_fmt(t['val_sensitivity'])}, specificity {_fmt(t['val_specificity'])}."
        )
    lines += [
        "",
        "## Limitations",
        "",
        "- Test figures come from one split of one cohort; expect lower performance at other sites.",
        "- Missing modalities are handled by masking; patterns unseen in training may behave differently.",
        "- The reference cohort of the patient graph holds training patients' embeddings under "
        "pseudonymous ids; it is part of the model.",
        *(
            f"- `{name}`: every feature gate shut in training (mean weight {weight:.3f} on the "
            "validation split), so the model ignores this modality."
            for name, weight in metrics.get("shut_modalities", {}).items()
        ),
        *([f"- {note}"] if (note := selection_note(metrics)) else []),
        *([f"- {note}"] if (note := open_gates_note(metrics)) else []),
        "",
        f"Training: {metrics['epochs_run']} epochs (best {metrics['best_epoch']}), batch {config.batch_size}, "
        f"learning rate {config.lr}, seed {config.seed}"
        + (
            f"; an ensemble of {config.ensemble} models (seeds {config.seed}..{config.seed + config.ensemble - 1}) "
            "whose logits are averaged."
            if config.ensemble > 1
            else "."
        ),
        *([teacher_note(metrics)] if "teacher" in metrics else []),
        *([note] if (note := tree_evidence_note(metrics)) else []),
        "",
    ]
    return "\n".join(lines)


def teacher_note(metrics: dict[str, Any]) -> str:
    """One sentence on the gradient-boosting teacher the model learnt from (``metrics["teacher"]``)."""
    teacher = metrics["teacher"]
    score = teacher["cross_fitted_train_auroc"]
    return (
        "Besides the labels, the model learnt from a gradient-boosting teacher: trees on "
        f"{teacher['features']} numbers of the training patients (tabular values, series statistics and "
        "file summaries, as the cohort has them), "
        f"each patient's probabilities from trees fitted on the other {teacher['folds'] - 1} "
        f"of {teacher['folds']} folds"
        + (f" (cross-fitted training AUROC {_fmt(score)})" if score is not None else "")
        + ". The teacher reads neither the validation nor the test split"
        + ("; its trees stay in the model (tree evidence)." if "tree_evidence" in metrics else ".")
    )


def tree_evidence_note(metrics: dict[str, Any]) -> str | None:
    """One sentence on the trees in the model (``metrics["tree_evidence"]``), or None without them.
    Shown in the model card and after training."""
    trees = metrics.get("tree_evidence")
    if not trees:
        return None
    alone = trees["network_alone"]
    scores = "; the network alone: validation AUROC " + _fmt(alone["val"].get("auroc"))
    if "test" in alone:
        scores += ", test AUROC " + _fmt(alone["test"].get("auroc"))
    chosen = (
        f"Tree evidence: the teacher's {trees['trees']} trees ({trees['folds']} folds) are part of the "
        f"model; their averaged log-odds, weighted {trees['weight']:g}, are added to the network's logits "
        f"(the weight chosen on the validation split by calibrated log-loss: {trees['val_log_loss']:.4f}, "
        f"against {trees['val_log_loss_without']:.4f} without them{scores})."
    )
    if trees["weight"] == 0:
        return (
            f"Tree evidence: the teacher's trees did not lower the validation log-loss "
            f"({trees['val_log_loss_without']:.4f} without them), so their weight is 0 and the network "
            "alone predicts."
        )
    return chosen


def selection_note(metrics: dict[str, Any]) -> str | None:
    """One sentence on the selection epochs (training only the feature gates after the fit), or
    None without them. Shown in the model card and after training."""
    selection = metrics.get("selection")
    if not selection:
        return None
    epochs = selection["epochs"]
    if not selection["kept_epoch"]:
        return (
            f"Feature selection: {len(epochs) - 1} epochs trained the feature gates alone; none was kept "
            "(each cost more validation log-loss than allowed), so the weights are the fitted model's."
        )
    start, kept = epochs[0], epochs[selection["kept_epoch"]]
    return (
        f"Feature selection: {len(epochs) - 1} epochs trained the feature gates alone against the frozen "
        f"predictor; epoch {kept['epoch']} was kept (mean feature weight {start['mean_weight']:.2f} -> "
        f"{kept['mean_weight']:.2f}, validation log-loss {start['val_log_loss']:.4f} -> "
        f"{kept['val_log_loss']:.4f})."
    )


def open_gates_note(metrics: dict[str, Any]) -> str | None:
    """One sentence for the modalities whose feature weights are about 1 everywhere (every gate kept
    every feature on the validation split, or the model has no gates), or None. Their weights rank nothing, so the model
    card, the training summary, the report and the dashboard say so next to them."""
    opened = metrics.get("open_modalities") or {}
    if not opened:
        return None
    names = ", ".join(f"`{name}`" for name in opened)
    means = " and ".join(f"{weight:.3f}" for weight in opened.values())
    return (
        f"Feature weights of {names} are about 1 for every patient (mean {means} on the validation "
        "split): no feature was weighed down, so these weights do not rank the features. The "
        "attributions (Integrated Gradients, `deepwe explain`) show what moved a risk; the training "
        "setting `selection_epochs: 5` makes the gates choose."
    )


def data_notes(preprocessing: dict[str, Any]) -> list[str]:
    """Markdown bullets: inputs never observed in training (ignored) and implausible training values
    (clipped at the training quantiles), per modality. Shown in the model card and after training."""
    lines = []
    for name, dropped in preprocessing.get("never_observed", {}).items():
        if dropped:
            lines.append(f"- `{name}`: never observed in training, so ignored: {', '.join(dropped)}")
    for name, stats in preprocessing.get("sensor", {}).items():
        if stats.get("never_observed"):
            lines.append(
                f"- `{name}`: channels never observed in training, so ignored: {', '.join(stats['never_observed'])}"
            )
    for name, counts in preprocessing.get("implausible", {}).items():
        if counts:
            shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:10])
            lines.append(
                f"- `{name}`: {sum(counts.values())} training values far outside their variable's range "
                f"(more than 10 inter-quartile ranges; clipped at the training quantiles): {shown}"
                + (" ..." if len(counts) > 10 else "")
            )
    return lines
