"""``deepwe report``: the model audit report, one self-contained HTML file (and optionally a PDF).

The numbers come from :mod:`pipelines.evaluation.evaluation` over a prediction run of the cohort, and from one
pass of the model that re-runs only the fusion core per coalition of modalities
(:mod:`pipelines.reports.modality_effects`); the per-patient explanations and faithfulness figures from
:mod:`pipelines.explanations.explaining`. :mod:`pipelines.reports.report_inputs` gathers them;
:mod:`pipelines.reports.performance_sections` and :mod:`pipelines.reports.explanation_sections` lay them
out. Rendering is :mod:`explain.report_html` and :mod:`explain.figures`. The report never names a
patient: examples are "Example A, B, C", and note text stays out of it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from explain.report_html import Report, Section, write_html, write_pdf
from pipelines.bundles.bundle_io import code_version
from pipelines.reports.explanation_sections import (
    ablation_section,
    examples_section,
    faithfulness_section,
    weights_section,
)
from pipelines.reports.performance_sections import (
    calibration_section,
    data_section,
    decision_section,
    discrimination,
    intended_use,
)
from pipelines.reports.report_inputs import ReportInputs

LIMITATIONS = """\
Attributions explain this model, not the disease: a feature the model relies on may be a proxy, and \
a clinician should check an explanation against the chart before acting on it.

Integrated Gradients depends on its baseline (documented per modality in each explanation); the \
Shapley value of a modality measures what the model does when the modality is masked, a situation \
that modality dropout trains for but that is not identical to a patient who never had the test.

Discrimination and calibration are measured on the evaluated split of this cohort only. Subgroups \
and missing-modality patterns with fewer than 10 patients or one outcome class are not scored; \
small groups have wide intervals. Performance in another hospital, period or population is unknown \
until it is measured there.

Temperature scaling fixes overall over- or under-confidence, not miscalibration that differs \
between subgroups; check the calibration slope and the subgroup table before using a threshold.\
"""


def build_report(inputs: ReportInputs) -> Report:
    """The :class:`Report` of every section, in reading order."""
    spec = inputs.bundle.spec
    sections = [
        intended_use(inputs),
        data_section(inputs),
        discrimination(inputs),
        calibration_section(inputs),
        decision_section(inputs),
        ablation_section(inputs),
        weights_section(inputs),
        faithfulness_section(inputs),
        examples_section(inputs),
        Section("limitations", "Limitations", [LIMITATIONS], ["26", "27b"]),
    ]
    return Report(
        title=f"Model audit report: {spec.outcome.column} on cohort {spec.name}",
        subtitle=f"DeepWe-MM model {inputs.bundle.sha256[:12]}, evaluated on {inputs.cohort.spec_path.name}",
        sections=sections,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        code_version=code_version(),
    )


def write_report(
    report: Report, out: str | Path, *, pdf: bool = False
) -> tuple[Path, Path | None, int | None]:
    """Write the HTML (atomically) and, with ``pdf``, a PDF beside it. Returns (html, pdf, pages)."""
    out = write_html(report, out)
    if not pdf:
        return out, None, None
    pdf_path = out.with_suffix(".pdf")
    return out, pdf_path, write_pdf(out.read_text(encoding="utf-8"), pdf_path)
