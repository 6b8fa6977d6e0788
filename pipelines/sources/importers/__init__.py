"""``deepwe import``: public datasets converted into cohorts (a spec and its table) in one call.

Every importer takes the source (a folder or a file), the output folder and keyword options, writes
``cohort.yaml`` and its table into the output folder, prints nothing, and returns an
:class:`ImportResult` with what it wrote and what it skipped.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from pipelines.cohorts.spec_io import did_you_mean
from pipelines.sources.importers._common import ImportResult
from pipelines.sources.importers.cinc2017 import import_cinc2017
from pipelines.sources.importers.fhir import import_fhir
from pipelines.sources.importers.iu_xray import import_iu_xray
from pipelines.sources.importers.medmnist import import_medmnist
from pipelines.sources.importers.mimic_iv import import_mimic_iv
from pipelines.sources.importers.omop import import_omop
from pipelines.sources.importers.physionet2012 import import_physionet2012

__all__ = ["IMPORTERS", "ImportResult", "import_dataset", "importer_options", "run_import"]

IMPORTERS: dict[str, Callable[..., ImportResult]] = {
    "physionet2012": import_physionet2012,
    "cinc2017": import_cinc2017,
    "medmnist": import_medmnist,
    "iu-xray": import_iu_xray,
    "mimic-iv": import_mimic_iv,
    "fhir": import_fhir,
    "omop": import_omop,
}


def _importer(name: str) -> Callable[..., ImportResult]:
    if name not in IMPORTERS:
        raise ValueError(
            f"unknown importer {name!r}; available: {', '.join(IMPORTERS)}"
            f"{did_you_mean(name, list(IMPORTERS))}"
        )
    return IMPORTERS[name]


def importer_options(name: str) -> dict[str, object]:
    """The keyword options of importer ``name`` with their defaults."""
    parameters = inspect.signature(_importer(name)).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def import_dataset(name: str, src: str | Path, out: str | Path, **options: object) -> ImportResult:
    """Run importer ``name`` on ``src``, writing the cohort into ``out``.

    Raises:
        ValueError: an unknown importer or option (with the closest name), or a source that is not
            laid out as the importer expects.
    """
    importer = _importer(name)
    known = importer_options(name)
    for option in options:
        if option not in known:
            raise ValueError(
                f"importer {name!r} has no option {option!r}; it takes "
                f"{', '.join(known) or 'none'}{did_you_mean(option, list(known))}"
            )
    return importer(src, out, **options)


def run_import(name: str, src: str | Path, out: str | Path, **options: object) -> Path:
    """:func:`import_dataset`, returning only the path of the cohort spec it wrote."""
    return import_dataset(name, src, out, **options).spec_path
