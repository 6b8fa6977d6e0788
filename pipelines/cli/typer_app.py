"""The one typer app of the ``deepwe`` command line: its exit codes, how known errors become them,
the options that hold for every command, and the entry point. The ``*_commands`` modules register
their commands on it; :mod:`pipelines.cli` imports them. Commands are thin: the work happens in the
functions they call.

Exit codes: 0 ok, 1 failed, 2 bad input.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.rendering import (
    make_console,
    print_problems,
)
from pipelines.cohorts.validate import ValidationReport

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

app = typer.Typer(
    name="deepwe",
    help="DeepWe-MM: multi-modal clinical outcome prediction with weighted-embedding fusion.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@contextmanager
def handled_errors(
    spec: Path,
    verb: str,
    *,
    bad_input: tuple[type[Exception], ...] = (),
    failed: tuple[type[Exception], ...] = (),
) -> Iterator[None]:
    """Known errors become a message and an exit code: 2 for bad input (a spec problem table, or one
    line saying what cannot be done and why), 1 for a run that stopped (``failed``)."""
    from pipelines.bundles.bundle_io import BundleError
    from pipelines.cohorts.spec_io import SpecError

    try:
        yield
    except SpecError as error:
        print_problems(ValidationReport(spec_path=spec.resolve(), problems=error.problems), 200)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (BundleError, ValueError, FileNotFoundError, *bad_input) as error:
        make_console(stderr=True).print(f"[red]cannot {verb}:[/] {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except failed as error:
        make_console(stderr=True).print(f"[red]aborted:[/] {error}")
        raise typer.Exit(EXIT_FAILED) from None


@app.callback()
def _everywhere(
    cache_dir: Annotated[
        str | None,
        typer.Option(
            help="Folder of the decoded-file cache shared by every command ('off' to read every file "
            "afresh). Default: $DEEPWE_CACHE_DIR, else ~/.cache/deepwe.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Options that hold for every command (give them before the command's name)."""
    if cache_dir is not None:
        os.environ["DEEPWE_CACHE_DIR"] = cache_dir  # DataLoader workers and child processes see it too


def main() -> None:
    """Entry point of the ``deepwe`` console script."""
    try:
        app()
    except KeyboardInterrupt:
        make_console(stderr=True).print("interrupted")
        sys.exit(130)
