"""Commands that judge a model on a cohort: ``deepwe explain``, ``evaluate`` and ``report``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.rendering import (
    make_console,
)
from pipelines.cli.typer_app import app, handled_errors


@app.command()
def explain(
    model: Annotated[Path, typer.Argument(help="The model bundle folder.", show_default=False)],
    spec: Annotated[
        Path, typer.Argument(help="The cohort spec (YAML) holding the patient.", show_default=False)
    ],
    patient: Annotated[str, typer.Option(help="The patient id (the spec's id column).", show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for explanation.json and the pictures.")] = Path(
        "explanation"
    ),
    steps: Annotated[int, typer.Option(help="Integrated Gradients steps.", min=2)] = 32,
    faithfulness: Annotated[
        bool, typer.Option(help="Also compute deletion/insertion curves against random orders.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Explain one patient's prediction: attributions, modality Shapley values, the model's weights.

    Attributions per modality and per token (Integrated Gradients with their completeness error),
    exact Shapley values of the present modalities, and the model's own weights next to them.

    Writes explanation.json and pictures into --out: contributions.png (Shapley values and modality
    weights), one picture per present modality (tabular bars, image saliency overlay, sensor plot
    with attribution shading, spectrogram with attribution, note with highlighted words as HTML).
    Every Integrated Gradients result carries its completeness error.
    """
    from pipelines.bundles.loading import load_bundle
    from pipelines.common.devices import pick_device
    from pipelines.explanations.explaining import UnknownPatient, explain_patient
    from pipelines.explanations.explanation_files import write_explanation
    from pipelines.inference.batching import compatible_cohort

    console = make_console()
    with handled_errors(spec, "explain", bad_input=(UnknownPatient,)):
        bundle = load_bundle(model, device=pick_device(device))
        cohort = compatible_cohort(bundle, spec)
        started = time.perf_counter()
        explanation = explain_patient(bundle, cohort, patient, steps=steps, faithfulness=faithfulness)
        seconds = time.perf_counter() - started
        files = write_explanation(explanation, bundle, out)
    record = explanation.prediction
    shown = f"risk {record.risk:.3f}" if record.risk is not None else f"label {record.label}"
    console.print(
        f"{shown} ({explanation.score_name} {explanation.score:+.3f}); explained in {seconds:.1f} s"
    )
    table = Table("modality", "Shapley (risk)", "weight", "IG completeness error", "weights vs attributions")
    for name, value in explanation.shapley.items():
        item = explanation.modalities.get(name)
        table.add_row(
            name,
            f"{value:+.4f}",
            f"{record.modality_weights.get(name, 0.0):.3f}",
            "absent" if item is None else f"{item.delta:+.2e} ({item.relative_delta:.1%})",
            "" if item is None or item.agreement != item.agreement else f"rho {item.agreement:+.2f}",
        )
    console.print(table)
    console.print(
        f"Shapley values sum to {sum(explanation.shapley.values()):+.4f} = risk - base rate "
        f"{explanation.base_value:.3f}; {len(files)} files in {out}"
    )


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="The model bundle folder.", show_default=False)],
    spec: Annotated[Path, typer.Argument(help="The cohort spec (YAML) with outcomes.", show_default=False)],
    predictions: Annotated[
        Path | None, typer.Option(help="Output of deepwe predict for this cohort (else predicted now).")
    ] = None,
    split: Annotated[str, typer.Option(help="train, val, test or all.")] = "test",
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.", min=10)] = 1000,
    out: Annotated[Path | None, typer.Option(help="Write every figure as JSON here.")] = None,
) -> None:
    """Metrics with bootstrap intervals, calibration, decision curve and threshold of a labelled cohort.

    AUROC and AUPRC with 95% bootstrap intervals overall, per subgroup of the spec and per
    missing-modality pattern; calibration before and after temperature scaling (ECE, Brier, slope,
    intercept); decision curve; the threshold's confusion matrix.
    """
    from pipelines import api
    from pipelines.bundles.loading import load_bundle
    from pipelines.evaluation.evaluation import format_interval
    from pipelines.inference.batching import compatible_cohort
    from pipelines.inference.output_table import read_predictions

    console = make_console()
    with handled_errors(spec, "evaluate"):
        bundle = load_bundle(model)
        cohort = compatible_cohort(bundle, spec)
        table = None
        if predictions is not None:
            table = read_predictions(predictions)
            stale = table.loc[table["status"] == "ok", "model_sha256"].ne(bundle.sha256)
            if stale.any():
                raise ValueError(f"{predictions}: {int(stale.sum())} rows were predicted by another model")
        result = api.evaluate(
            bundle,
            api.compatible(bundle, cohort),
            predictions=table,
            split=None if split == "all" else split,
            n_boot=n_boot,
        )
    console.print(
        f"{result.n} patients ({result.split or 'all labelled rows'}): AUROC {format_interval(result.auroc)}, "
        f"AUPRC {format_interval(result.auprc)}"
    )
    for name, calibration in result.calibration.items():
        console.print(
            f"calibration {name}: ECE {calibration.ece:.3f}, Brier {calibration.brier:.3f}, "
            f"slope {calibration.slope:.2f}, intercept {calibration.intercept:+.2f}"
        )
    if result.threshold is not None:
        t = result.threshold
        console.print(
            f"threshold {t.threshold:.3f}: sensitivity {t.sensitivity:.3f}, specificity {t.specificity:.3f}"
        )
    for note in result.notes:
        console.print(f"note: {note}")
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        console.print(f"written to {out}")


@app.command()
def report(
    model: Annotated[Path, typer.Argument(help="The model bundle folder.", show_default=False)],
    spec: Annotated[Path, typer.Argument(help="The cohort spec (YAML) with outcomes.", show_default=False)],
    out: Annotated[Path, typer.Option(help="The HTML report to write.")] = Path("report.html"),
    pdf: Annotated[bool, typer.Option(help="Also write the same report as PDF beside it.")] = False,
    predictions: Annotated[
        Path | None, typer.Option(help="Output of deepwe predict for this cohort (else predicted now).")
    ] = None,
    split: Annotated[str, typer.Option(help="train, val, test or all.")] = "test",
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.", min=10)] = 1000,
    faithfulness_patients: Annotated[
        int, typer.Option(help="Patients explained for the faithfulness figures.", min=1)
    ] = 8,
    steps: Annotated[int, typer.Option(help="Integrated Gradients steps per explanation.", min=2)] = 32,
) -> None:
    """The model audit report: one self-contained HTML file (inline images, no network fetches).

    Sections: intended use and model card; data (size, outcome balance, missingness); discrimination
    with bootstrap intervals overall, per subgroup and per missing-modality pattern; calibration
    before and after temperature scaling; decision curve and threshold; modality ablation and
    Shapley contributions; global weights; faithfulness; three pseudonymous examples; limitations;
    and a table mapping sections to TRIPOD+AI items.
    """
    from pipelines.bundles.loading import load_bundle
    from pipelines.inference.batching import compatible_cohort
    from pipelines.inference.output_table import read_predictions
    from pipelines.reports.audit_report import build_report, write_report
    from pipelines.reports.report_inputs import gather

    console = make_console()
    started = time.perf_counter()
    with handled_errors(spec, "report"):
        bundle = load_bundle(model)
        cohort = compatible_cohort(bundle, spec)
        given = read_predictions(predictions) if predictions is not None else None
        inputs = gather(
            bundle,
            cohort,
            predictions=given,
            split=None if split == "all" else split,
            n_boot=n_boot,
            faithfulness_patients=faithfulness_patients,
            steps=steps,
            progress=lambda step: console.print(f"… {step}"),
        )
        html_path, pdf_path, pages = write_report(build_report(inputs), out, pdf=pdf)
    console.print(
        f"report for {inputs.evaluation.n} patients -> {html_path}"
        + (f" and {pdf_path} ({pages} pages)" if pdf_path else "")
        + f" in {time.perf_counter() - started:.0f} s"
    )
