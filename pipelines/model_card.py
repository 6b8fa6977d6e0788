"""The bundle's ``model_card.md``: intended use, data, metrics and limitations, in plain Markdown."""

from __future__ import annotations

from typing import Any

from data_schemas import CohortSpec
from pipelines.cohort import split_unit


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
        "",
        f"Training: {metrics['epochs_run']} epochs (best {metrics['best_epoch']}), batch {config.batch_size}, "
        f"learning rate {config.lr}, seed {config.seed}.",
        "",
    ]
    return "\n".join(lines)
