"""Commands that run and ship the application: ``deepwe dashboard``, ``demo``, the ``cache`` group and
``export`` (MLflow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.rendering import (
    make_console,
)
from pipelines.cli.typer_app import EXIT_BAD_INPUT, EXIT_FAILED, app

DASHBOARD_SETTINGS = {
    "server.headless": "true",
    "server.enableXsrfProtection": "true",
    "server.enableCORS": "true",
    "server.maxUploadSize": "50",
    "server.fileWatcherType": "none",
    "server.runOnSave": "false",
    "client.showErrorDetails": "none",
    "client.toolbarMode": "viewer",
    "client.showErrorLinks": "false",
    "runner.magicEnabled": "false",
    "browser.gatherUsageStats": "false",
}
"""The settings of .streamlit/config.toml as flags: Streamlit reads that file only from its working folder."""


def dashboard_command(model: Path, spec: Path, predictions: Path | None, port: int, host: str) -> list[str]:
    """The ``streamlit run`` command line of the dashboard (the script is found, never imported)."""
    import importlib.util

    found = importlib.util.find_spec("app")
    script = Path(found.origin).parent / "dashboard.py" if found and found.origin else None
    if script is None or not script.is_file():
        raise FileNotFoundError("the dashboard (app/dashboard.py of deepwe-mm) is not installed")
    command = [sys.executable, "-m", "streamlit", "run", str(script)]
    command += ["--server.port", str(port), "--server.address", host]
    for key, value in DASHBOARD_SETTINGS.items():
        command += [f"--{key}", value]
    command += ["--", "--model", str(model.resolve()), "--cohort", str(spec.resolve())]
    if predictions is not None:
        command += ["--predictions", str(predictions.resolve())]
    return command


@app.command()
def dashboard(
    model: Annotated[Path, typer.Argument(help="The model bundle folder.", show_default=False)],
    spec: Annotated[Path, typer.Argument(help="The cohort spec (YAML) to show.", show_default=False)],
    predictions: Annotated[
        Path | None,
        typer.Option(help="A `deepwe predict` output of this cohort; computed once per server when absent."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port to serve on.", min=1, max=65535)] = 8501,
    host: Annotated[
        str,
        typer.Option(
            help="Address to bind. 127.0.0.1 serves this machine only; put authentication in front "
            "before binding wider (docs/cli.md: Dashboard)."
        ),
    ] = "127.0.0.1",
) -> None:
    """The Streamlit clinician dashboard: cohort, patient explanations, model audit, batch prediction.

    Runs until stopped (Ctrl+C). The model and the cohort load once per server; each browser session
    keeps its own explanations.
    """
    problems = []
    if not (model / "manifest.json").is_file():
        problems.append(f"{model}: not a model bundle (no manifest.json)")
    if not spec.is_file():
        problems.append(f"{spec}: no such cohort spec")
    if predictions is not None and not predictions.is_file():
        problems.append(
            f"{predictions}: no such predictions file (run `deepwe predict` first, or leave out --predictions)"
        )
    for problem in problems:
        make_console(stderr=True).print(f"[red]cannot start the dashboard:[/] {problem}")
    if problems:
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        command = dashboard_command(model, spec, predictions, port, host)
    except FileNotFoundError as error:
        make_console(stderr=True).print(f"[red]cannot start the dashboard:[/] {error}")
        raise typer.Exit(EXIT_FAILED) from None
    make_console().print(f"dashboard: http://{host}:{port}  (Ctrl+C stops it)")
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":  # streamlit replaces this process: Ctrl+C and SIGTERM reach it directly
        os.execv(sys.executable, command)
    raise typer.Exit(subprocess.call(command))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("runs/demo"),
    n: Annotated[int, typer.Option(help="Number of synthetic patients.", min=10)] = 300,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """The embedded default: synthetic cohort -> validate -> train a model bundle -> predict -> report.

    Uses the small settings of configs/demo.yaml; a few minutes on 2 CPU cores.
    """
    from pipelines.cli.demo import run_demo

    if not run_demo(out, n=n, seed=seed, device=device):
        raise typer.Exit(EXIT_FAILED)


cache_app = typer.Typer(help="The decoded-file cache (see deepwe --cache-dir).", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _cache_or_say_off():
    """The decoded-file cache, or None after saying that it is off."""
    from pipelines.cohorts.decoded_cache import process_cache

    cache = process_cache()
    if cache is None:
        make_console().print("the decoded-file cache is off (--cache-dir off or DEEPWE_CACHE_DIR=off)")
    return cache


@cache_app.command("clear")
def cache_clear() -> None:
    """Delete every decoded file kept in the cache folder."""
    cache = _cache_or_say_off()
    if cache is not None:
        make_console().print(f"removed {cache.clear()} decoded files from {cache.folder}")


@cache_app.command("info")
def cache_info() -> None:
    """Where the cache is, how much it holds and its size bound."""
    cache = _cache_or_say_off()
    if cache is not None:
        megabytes = cache.size_bytes() / 1e6
        make_console().print(f"{cache.folder}: {megabytes:.1f} MB of at most {cache.max_bytes / 1e6:.0f} MB")


export_app = typer.Typer(help="Export a model bundle for other platforms.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("mlflow")
def export_mlflow_command(
    model: Annotated[Path, typer.Argument(help="The model bundle folder.", show_default=False)],
    out: Annotated[Path, typer.Option(help="The MLflow model folder to write (must not exist).")],
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Folder that file cells of served rows are relative to (default: the working folder "
            "of the process serving the model)."
        ),
    ] = None,
) -> None:
    """Write the bundle as an MLflow pyfunc model (models from code: no pickle; the bundle is an
    artifact verified on load). Serve it with `mlflow models serve -m OUT --env-manager local`.

    Input: a DataFrame of cohort rows (the model's id and modality columns); output: the prediction
    table of `deepwe predict`. Files that rows name must be readable where the model is served.
    """
    try:
        from pipelines.inference.mlflow_export import export_mlflow
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "mlflow":
            raise
        make_console(stderr=True).print(
            "[red]cannot export:[/] export mlflow needs MLflow: pip install 'deepwe-mm\\[mlflow]'"
        )
        raise typer.Exit(EXIT_BAD_INPUT) from None
    from pipelines.bundles.bundle_io import BundleError

    try:
        written = export_mlflow(model, out, data_root=data_root)
    except (BundleError, FileExistsError) as error:
        make_console(stderr=True).print(f"[red]cannot export:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    make_console().print(
        f"MLflow model -> {written} (serve: mlflow models serve -m {written} --env-manager local)"
    )
