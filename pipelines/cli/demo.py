"""``deepwe demo``: synthetic cohort -> validate -> train -> predict -> audit report, printed step by step."""

from __future__ import annotations

import time
from pathlib import Path

from pipelines.cli.rendering import make_console, print_problems, print_summary, print_training
from pipelines.cohorts.validate import validate_cohort

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def run_demo(out: Path, *, n: int, seed: int, device: str) -> bool:
    """Run the demo into ``out``; False when the synthetic cohort does not validate (problems printed)."""
    from pipelines.sources.synth import generate_cohort
    from pipelines.training.train import train as run_training
    from pipelines.training.train_config import TrainConfig

    console = make_console()
    console.rule("1. synthetic cohort")
    started = time.perf_counter()
    result = generate_cohort(out / "cohort", n=n, seed=seed)
    console.print(f"wrote {result.n} patients to {result.spec_path} in {time.perf_counter() - started:.1f} s")
    console.rule("2. validate")
    report = validate_cohort(result.spec_path)
    if not report.ok:
        print_problems(report, 50)
        return False
    print_summary(report)
    console.rule("3. train")
    config = TrainConfig.from_yaml(DEMO_CONFIG) if DEMO_CONFIG.is_file() else TrainConfig(epochs=6)
    trained = run_training(result.spec_path, out / "model", config, device=device)
    print_training(trained)
    console.rule("4. predict")
    from pipelines.bundles.loading import load_bundle
    from pipelines.inference.predict import predict_cohort

    predictions = out / "predictions.parquet"
    summary = predict_cohort(load_bundle(trained.bundle), result.spec_path, predictions)
    console.print(
        f"{summary.rows} rows -> {predictions}: {summary.ok} ok, {summary.errors} error "
        f"({summary.rows_per_second:.1f} patients/s)"
    )
    console.rule("5. report")
    from pipelines.inference.batching import compatible_cohort
    from pipelines.inference.output_table import read_predictions
    from pipelines.reports.audit_report import build_report, write_report
    from pipelines.reports.report_inputs import gather

    bundle = load_bundle(trained.bundle)
    inputs = gather(
        bundle,
        compatible_cohort(bundle, result.spec_path),
        predictions=read_predictions(predictions),
        n_boot=200,
        faithfulness_patients=4,
        progress=lambda step: console.print(f"… {step}"),
    )
    html_path, _, _ = write_report(build_report(inputs), out / "report.html")
    console.print(f"audit report for {inputs.evaluation.n} test patients -> {html_path}")
    console.print(
        f"\ndemo finished in {time.perf_counter() - started:.0f} s; model bundle in {trained.bundle}; next: "
        f"deepwe dashboard {trained.bundle} {result.spec_path} --predictions {predictions}"
    )
    return True
