"""Commands that bring data in: ``deepwe validate``, ``synth`` and ``import``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.rendering import (
    make_console,
    print_files,
    print_problems,
    print_summary,
)
from pipelines.cli.typer_app import EXIT_BAD_INPUT, EXIT_FAILED, app
from pipelines.cohorts.validate import ValidationReport, validate_cohort


@app.command()
def validate(
    spec: Annotated[Path, typer.Argument(help="The cohort spec (YAML) to check.", show_default=False)],
    max_shown: Annotated[int, typer.Option(help="Most problems to print (all are counted).")] = 200,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the full report (every problem) as JSON here."),
    ] = None,
    skip_file_headers: Annotated[
        bool, typer.Option(help="Check that files exist but do not read their headers (faster).")
    ] = False,
) -> None:
    """Check a cohort (spec, table and every referenced file) and list every problem found.

    Exits 0 with a summary when the cohort is valid, 2 with a table of problems (row, column, value,
    what was expected) when it is not.
    """
    report = validate_cohort(spec, check_files=not skip_file_headers)
    if json_out is not None:
        _write_report_json(report, json_out)
    if not report.ok:
        print_problems(report, max_shown)
        print_files(report, stderr=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    print_summary(report)
    print_files(report)


def _write_report_json(report: ValidationReport, path: Path) -> None:
    payload = {
        "spec": str(report.spec_path),
        "ok": report.ok,
        "problems": [p.model_dump() for p in report.problems],
        "summary": report.summary.as_dict() if report.summary else None,
        "files": report.files.as_dict(),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write the cohort into.")] = Path("runs/synth"),
    n: Annotated[int, typer.Option(help="Number of patients.", min=10)] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same cohort.")] = 0,
    missing_rate: Annotated[
        float,
        typer.Option(help="Chance that each modality is missing for a patient.", min=0.0, max=0.95),
    ] = 0.2,
    signal_scale: Annotated[
        float,
        typer.Option(
            help="Multiply every modality's signal (2 = an easy outcome, for smoke tests).", min=0.01
        ),
    ] = 1.0,
) -> None:
    """Write a synthetic multimodal cohort in real file formats (DICOM, WAV, WFDB, CSV, text).

    Writes cohort.yaml, cohort.csv and ground_truth.json (which modalities and features carry
    signal, and each patient's latent state) into OUT.
    """
    from pipelines.sources.synth import generate_cohort

    started = time.perf_counter()
    with make_console(stderr=True).status(f"writing {n} synthetic patients to {out} ..."):
        result = generate_cohort(out, n=n, seed=seed, missing_rate=missing_rate, signal_scale=signal_scale)
    make_console().print(
        f"wrote {result.n} patients (outcome prevalence {result.prevalence:.1%}) to {result.spec_path} "
        f"in {time.perf_counter() - started:.1f} s"
    )


@app.command("import")
def import_(
    name: Annotated[
        str,
        typer.Argument(
            help="physionet2012, cinc2017, medmnist, iu-xray, mimic-iv, fhir or omop.", show_default=False
        ),
    ],
    src: Annotated[
        str,
        typer.Argument(
            help="The dataset's folder (or .npz / .csv file); omop also takes a database URL "
            "(postgresql://user@host/cdm, sqlite:///cdm.db).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder to write cohort.yaml and its table into.")],
    task: Annotated[
        str | None,
        typer.Option(
            help="cinc2017: 'af' (AF vs rest) or 'four' (N/A/O/~); mimic-iv, fhir, omop: a task YAML "
            "(index time, window, outcome, code -> modality; see docs/importers.md) instead of the built-in one."
        ),
    ] = None,
    limit_per_split: Annotated[
        int | None, typer.Option(help="medmnist: write at most this many images per split.")
    ] = None,
    cxr: Annotated[
        Path | None,
        typer.Option(help="mimic-iv: a MIMIC-CXR-JPG folder; the latest in-window X-ray becomes an image."),
    ] = None,
    schema: Annotated[
        str | None, typer.Option(help="omop from a database URL: the CDM's schema, when not the default.")
    ] = None,
    check: Annotated[bool, typer.Option(help="Validate the written cohort (file headers not read).")] = True,
) -> None:
    """Convert a public dataset into a cohort (spec + table) that `deepwe validate` accepts.

    physionet2012 reads a folder laid out as set-*/NNNNNN.txt + Outcomes-*.txt (any set, or several);
    cinc2017 a folder of WFDB .hea/.mat records with REFERENCE.csv; medmnist an .npz file (images are
    written as PNG files); iu-xray indiana_reports.csv (notes are written as .txt files); mimic-iv a
    MIMIC-IV folder (hosp/, icu/, note/); fhir a folder of FHIR R4 Bundles (.json or .ndjson); omop an
    OMOP CDM 5.x folder of CSV tables, or the URL of a database holding them.
    """
    from pipelines.sources.importers import import_dataset
    from pipelines.sources.importers.database import is_database_url, shown_url

    options = {
        key: value
        for key, value in {
            "task": task,
            "limit_per_split": limit_per_split,
            "cxr": cxr,
            "schema": schema,
        }.items()
        if value is not None
    }
    source = src if is_database_url(src) else Path(src)
    try:
        with make_console(stderr=True).status(f"importing {name} from {shown_url(src)} ..."):
            result = import_dataset(name, source, out, **options)
    except ValueError as error:
        make_console(stderr=True).print(f"[red]cannot import:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    console = make_console()
    console.print(f"wrote {result.rows} rows to {result.spec_path}")
    console.print("outcome: " + ", ".join(f"{k or '(blank)'}: {v}" for k, v in result.outcome_counts.items()))
    for reason, count in result.skipped.items():
        console.print(f"skipped {count}: {reason}")
    for note in result.notes:
        console.print(f"note: {note}")
    if check:
        report = validate_cohort(result.spec_path, check_files=False)
        if not report.ok:
            print_problems(report, 50)
            raise typer.Exit(EXIT_FAILED)
        console.print("[green]the cohort validates[/]")
