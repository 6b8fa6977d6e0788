"""What the ``deepwe`` commands print: rich tables and summaries of validation, training and prediction."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipelines.cohorts.validate import ValidationReport


def make_console(stderr: bool = False) -> Console:
    """A console for the current streams; wide when the output is a file or a pipe, not a terminal,
    where a message also stays on one line (log readers grep for it)."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return Console(file=stream, highlight=False, width=None if tty else 160, soft_wrap=not tty)


def print_problems(report: ValidationReport, max_shown: int) -> None:
    """A table of problems on stderr: file, row or line, column, value, expected."""
    table = Table(title=f"{len(report.problems)} problem(s) in {report.spec_path}", show_lines=False)
    for header in ("file", "row", "column", "value", "expected"):
        table.add_column(header, overflow="fold")
    base = report.spec_path.parent
    for problem in report.problems[:max_shown]:
        where = "" if problem.row is None else str(problem.row)
        if problem.line is not None:
            where = f"line {problem.line}"
        table.add_row(
            relative_path(problem.file, base),
            where,
            problem.column or "",
            problem.value or "",
            problem.expected,
        )
    make_console(stderr=True).print(table)
    if len(report.problems) > max_shown:
        make_console(stderr=True).print(
            f"... and {len(report.problems) - max_shown} more (use --max-shown or --json)"
        )


def print_summary(report: ValidationReport) -> None:
    summary = report.summary
    if summary is None:
        raise ValueError("print_summary needs the report of a valid cohort")
    console = make_console()
    console.print(f"[bold green]valid[/] cohort {report.spec_path}: {summary.rows} rows")
    if summary.outcome_counts:
        balance = ", ".join(
            f"{label}: {count} ({count / summary.rows:.1%})"
            for label, count in summary.outcome_counts.items()
        )
        console.print(f"outcome: {balance}; unlabelled: {summary.unlabelled}")
    console.print("split: " + ", ".join(f"{k}: {v}" for k, v in summary.split_counts.items()))
    console.print(f"split unit: {summary.split_unit}")
    if summary.group_sizes:
        console.print("split groups: " + ", ".join(f"{k}: {v}" for k, v in summary.group_sizes.items()))
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    table = Table(title="availability per modality")
    table.add_column("modality")
    table.add_column("present", justify="right")
    table.add_column("%", justify="right")
    for name, count in summary.availability.items():
        table.add_row(name, str(count), f"{count / summary.rows:.1%}")
    console.print(table)
    patterns = Table(title="most common modality patterns")
    patterns.add_column("present modalities")
    patterns.add_column("rows", justify="right")
    for pattern, count in summary.patterns:
        patterns.add_row(pattern, str(count))
    console.print(patterns)


def print_files(report: ValidationReport, *, stderr: bool = False) -> None:
    """How many files were checked and how, and the lines their readers skipped, per reason."""
    files = report.files
    console = make_console(stderr=stderr)
    how = "headers read" if files.headers else "existence only, headers not read"
    console.print(f"files checked: {files.checked} ({how}; {files.read} sensor files read whole)")
    for name, reasons in sorted(files.skipped.items()):
        rows = files.rows_with_skipped.get(name, 0)
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            console.print(f"  {count:6d}  skipped in {name!r} files ({rows} rows affected): {reason}")


def print_training(result, reads=None) -> None:
    """The training summary; ``reads``: the decoded-cache hits and misses of this training."""
    console = make_console()
    metrics = result.metrics
    members = len(metrics.get("members", [])) or 1
    console.print(
        f"trained {result.epochs_run} epochs"
        + (f" over {members} ensemble members" if members > 1 else f" (best {metrics['best_epoch']})")
        + f" in {result.seconds:.0f} s; bundle: {result.bundle}"
    )
    from pipelines.bundles.model_card import data_notes, open_gates_note, selection_note, tree_evidence_note

    preprocessing = json.loads((Path(result.bundle) / "preprocessing.json").read_text(encoding="utf-8"))
    for note in data_notes(preprocessing):
        console.print(note.replace("`", ""), markup=False, highlight=False)
    if reads is not None and reads.hit_rate is not None:
        console.print(
            f"decoded files: {reads.hits + reads.misses} reads, {reads.hits} from the cache "
            f"({reads.hit_rate:.0%} hit rate)"
            + (f" ({reads.corrupt} damaged entries decoded again)" if reads.corrupt else "")
        )
    for note in (selection_note(metrics), open_gates_note(metrics), tree_evidence_note(metrics)):
        if note:
            console.print(note.replace("`", ""), markup=False, highlight=False)
    for name, weight in metrics.get("shut_modalities", {}).items():
        console.print(
            f"warning: every feature gate of {name!r} is shut on the validation split (mean weight "
            f"{weight:.3f}), so the model ignores that modality. Train again with sparsity_ramp: 5 "
            "(brings the sparsity term in over 5 epochs), a smaller fusion lambda_sparsity, or fusion "
            "lambda_encoder: 0.3 with gate_leak: 0.1 (its encoder keeps learning behind the shut "
            "gates, and the gates can reopen).",
            markup=False,
            highlight=False,
        )
    for split in ("val", "test"):
        if split in metrics:
            console.print(f"{split}: {split_summary(metrics[split])}")


def split_summary(scores: dict) -> str:
    """``auroc 0.812 (95% CI 0.74–0.88), auprc ..., brier ..., ece ... (n=120)`` of one split's
    metrics; the interval where training computed one (the test split of a binary outcome)."""
    shown = []
    for name in ("auroc", "auprc", "brier", "ece"):
        if name not in scores:
            continue
        text = f"{name} {scores[name]:.3f}"
        low, high = scores.get(f"{name}_ci95") or (None, None)
        if low is not None and high is not None:
            text += f" (95% CI {low:.2f}–{high:.2f})"
        shown.append(text)
    return ", ".join(shown) + f" (n={scores['n']})"


def print_degraded(summary) -> None:
    """Rows predicted without a modality whose file failed, and lines skipped in files, per reason."""
    console = make_console()
    for name, reasons in sorted(summary.without.items()):
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            console.print(f"  {count:6d}  rows predicted without {name!r}: {reason}")
    for name, reasons in sorted(summary.skipped_lines.items()):
        rows = summary.rows_with_skipped.get(name, 0)
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            console.print(f"  {count:6d}  skipped in {name!r} files ({rows} rows affected): {reason}")
    for variable, count in sorted(summary.ignored.items()):
        console.print(f"  {count:6d}  rows with a value in {variable!r}, ignored: training never observed it")


def relative_path(file: str, base: Path) -> str:
    try:
        return str(Path(file).relative_to(base))
    except ValueError:
        return file
