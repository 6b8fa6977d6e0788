"""How long ``deepwe validate --skip-file-headers`` takes, and how much memory, at 50k and 500k rows.

The cohort is a small synthetic one (``pipelines.sources.synth.generate_cohort``, 40 patients with their
files) whose table rows are repeated under new patient ids up to the row count, so every file cell
points at a real file and the table has the shape of a large registry extract. Each size is
validated in a fresh process, which reports its own wall time and peak resident memory
(``getrusage(RUSAGE_SELF).ru_maxrss``).

    python -m benchmarks.validate_scale [--rows 50000 500000] [--work runs/bench/validate_scale]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

TEMPLATE_PATIENTS = 40


def build_cohort(folder: Path, rows: int, *, seed: int = 0) -> Path:
    """A cohort of ``rows`` rows in ``folder`` (the template's files, its rows repeated); returns the spec."""
    from pipelines.sources.synth import generate_cohort

    spec = folder / "cohort.yaml"
    table_path = folder / "cohort.csv"
    if not spec.is_file():
        generate_cohort(folder, n=TEMPLATE_PATIENTS, seed=seed, missing_rate=0.2)
        pd.read_csv(table_path, dtype=str, keep_default_na=False).to_csv(folder / "template.csv", index=False)
    template = pd.read_csv(folder / "template.csv", dtype=str, keep_default_na=False)
    repeats = -(-rows // len(template))
    table = pd.concat([template] * repeats, ignore_index=True).iloc[:rows].copy()
    table["patient_id"] = [f"P{i:07d}" for i in range(rows)]
    table.to_csv(table_path, index=False)
    return spec


def _measure(spec: Path) -> dict[str, float]:
    """Validate ``spec`` in a fresh process; its wall seconds, peak RSS (MB) and problem count."""
    child = (
        "import json, resource, sys, time\n"
        "from pipelines.cohorts.validate import validate_cohort\n"
        "t = time.perf_counter()\n"
        "report = validate_cohort(sys.argv[1], check_files=False)\n"
        "seconds = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps({'seconds': seconds, 'peak_rss_mb': rss, 'problems': len(report.problems),"
        " 'files_checked': report.files.checked}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, str(spec)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000, 500_000])
    parser.add_argument("--work", type=Path, default=Path("runs/bench/validate_scale"))
    args = parser.parse_args(argv)
    print("rows,seconds,peak_rss_mb,files_checked,problems")
    for rows in args.rows:
        spec = build_cohort(args.work, rows)
        result = _measure(spec)
        print(
            f"{rows},{result['seconds']:.1f},{result['peak_rss_mb']:.0f},"
            f"{result['files_checked']},{result['problems']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
