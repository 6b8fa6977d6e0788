"""Time and memory of ``deepwe import mimic-iv`` on the demo and on a synthetic scale-up of it.

The scale-up replicates the demo's tables ``--factor`` times (default 100) into ``--work`` (default
``/tmp/deepwe-mimic-scaled``, outside the repository), each copy with its own subject, admission and
stay ids, gzipped like the real files. Each import runs in a fresh process started by a small
parent, and reports its own peak resident memory (``getrusage(RUSAGE_SELF)``). The last lines
extrapolate linearly in ``labevents`` rows to the full MIMIC-IV (about 120 million lab rows).

    python -m benchmarks.import_scale [--factor 100] [--work /tmp/deepwe-mimic-scaled] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT.parent / "shared" / "data" / "mimic-iv-demo-2.2"
FULL_LABEVENTS = 120_000_000
# table -> the id columns that get an offset per copy (so copies are distinct patients and stays)
TABLES = {
    "hosp/patients": ("subject_id",),
    "hosp/admissions": ("subject_id", "hadm_id"),
    "hosp/labevents": ("subject_id", "hadm_id"),
    "hosp/d_labitems": (),
    "icu/icustays": ("subject_id", "hadm_id", "stay_id"),
    "icu/outputevents": ("subject_id", "hadm_id", "stay_id"),
    "icu/inputevents": ("subject_id", "hadm_id", "stay_id"),
    "icu/d_items": (),
}
OFFSET = 100_000_000

_IMPORT = """
import json, resource, sys, time
from pipelines.sources.importers.mimic_iv import import_mimic_iv
started = time.perf_counter()
result = import_mimic_iv(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu = usage.ru_utime + usage.ru_stime
print(json.dumps({"seconds": seconds, "cpu": cpu, "rows": result.rows, "peak_kib": usage.ru_maxrss}))
"""
_BUILD = """
import json, sys
from pathlib import Path
from benchmarks.import_scale import scale_up
scale_up(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
"""
_LAB_ROWS = """
import duckdb, json, sys
count = duckdb.connect().execute(f"SELECT count(*) FROM read_csv('{sys.argv[1]}/hosp/labevents.csv.gz')").fetchone()[0]
print(json.dumps(count))
"""


def scale_up(src: Path, work: Path, factor: int) -> Path:
    """Write the demo's tables ``factor`` times over into ``work`` (ids offset per copy)."""
    con = duckdb.connect()
    for table, ids in TABLES.items():
        target = work / f"{table}.csv.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        source = f"read_csv('{src / table}.csv.gz', header = true, all_varchar = true)"
        copies = factor if ids else 1
        replace = ", ".join(
            f"CASE WHEN {c} IS NULL OR {c} = '' THEN {c} ELSE CAST(CAST({c} AS BIGINT) + k * {OFFSET} AS VARCHAR) END AS {c}"
            for c in ids
        )
        select = f"SELECT * REPLACE ({replace})" if ids else "SELECT * EXCLUDE (k)"
        query = f"{select} FROM {source}, (SELECT range AS k FROM range({copies}))"
        if ids:
            query = f"SELECT * EXCLUDE (k) FROM ({query})"
        con.execute(f"COPY ({query}) TO '{target}' (HEADER, COMPRESSION gzip)")
    return work


def _child(code: str, *args: object) -> object:
    """Run ``code`` in a fresh Python process and return the JSON of its last output line.

    Every piece of work runs in a child, so this parent stays small: a forked child starts with a
    copy of its parent's resident pages, which would otherwise count in the child's peak RSS.
    """
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, text=True, cwd=ROOT
    )
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def measure(src: Path, out: Path) -> dict[str, float]:
    """Run one import in a fresh process: seconds, rows and peak RSS (MiB) of that process."""
    started = time.perf_counter()
    figures = _child(_IMPORT, src, out)
    wall = time.perf_counter() - started
    return {
        "import_seconds": round(figures["seconds"], 2),
        "cpu_seconds": round(figures["cpu"], 2),
        "process_seconds": round(wall, 2),
        "rows": figures["rows"],
        "peak_rss_mib": round(figures["peak_kib"] / 1024, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEMO, help="the MIMIC-IV demo folder")
    parser.add_argument("--factor", type=int, default=100, help="copies of the demo in the scale-up")
    parser.add_argument("--work", type=Path, default=Path("/tmp/deepwe-mimic-scaled"), help="scratch folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--memory-limit",
        default=None,
        help="DuckDB memory limit of the imports (DEEPWE_IMPORT_MEMORY), e.g. 500MB",
    )
    args = parser.parse_args(argv)
    if args.memory_limit:
        os.environ["DEEPWE_IMPORT_MEMORY"] = args.memory_limit
    if not (args.src / "hosp" / "labevents.csv.gz").is_file():
        parser.error(f"{args.src}: expected the MIMIC-IV demo folder (hosp/labevents.csv.gz)")
    scaled = args.work / f"x{args.factor}"
    started = time.perf_counter()
    if not (scaled / "icu" / "icustays.csv.gz").is_file():
        _child(_BUILD, args.src, scaled, args.factor)
    build = time.perf_counter() - started
    runs = {}
    for name, src in (("demo", args.src), (f"x{args.factor}", scaled)):
        figures = measure(src, args.work / f"cohort-{name}")
        figures["labevents_rows"] = _child(_LAB_ROWS, src)
        figures["lab_rows_per_second"] = round(figures["labevents_rows"] / figures["import_seconds"])
        runs[name] = figures
        print(
            f"{name}: {figures['rows']} ICU stays, {figures['labevents_rows']:,} labevents rows: "
            f"import {figures['import_seconds']} s ({figures['lab_rows_per_second']:,} lab rows/s), "
            f"CPU {figures['cpu_seconds']} s, process {figures['process_seconds']} s, "
            f"peak RSS {figures['peak_rss_mib']} MiB"
        )
    big = runs[f"x{args.factor}"]
    scale = FULL_LABEVENTS / big["labevents_rows"]
    extrapolation = {
        "full_labevents_rows": FULL_LABEVENTS,
        "minutes": round(big["import_seconds"] * scale / 60, 1),
        "cpu_minutes": round(big["cpu_seconds"] * scale / 60, 1),
        "duckdb_memory_limit": os.environ.get("DEEPWE_IMPORT_MEMORY", "2GB"),
    }
    print(f"scale-up written in {build:.1f} s to {scaled}")
    print(
        f"full MIMIC-IV (~{FULL_LABEVENTS:,} labevents rows, {scale:.1f}x the x{args.factor} run): "
        f"about {extrapolation['minutes']} min wall ({extrapolation['cpu_minutes']} CPU-min) if time grows "
        f"linearly in lab rows; DuckDB's working memory is capped at {extrapolation['duckdb_memory_limit']} "
        "and spills to disk beyond it, so peak RSS does not grow with the source"
    )
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "extrapolation": extrapolation}, indent=1) + "\n")


if __name__ == "__main__":
    main()
