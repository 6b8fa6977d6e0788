"""Replaying an audit-log record: the same model and input must give the same output."""

from __future__ import annotations

from pathlib import Path

from pipelines.audit.audit_log import read_record, redacted
from pipelines.bundles.loading import load_bundle
from pipelines.cohorts.cohort_table import load_cohort
from pipelines.common.devices import pick_device
from pipelines.inference.batching import PredictOptions, iter_predictions, token_modalities


def replay_record(
    log: Path, sequence: int, model: Path, spec: Path, *, device: str = "cpu"
) -> tuple[bool, str]:
    """Predict the logged patient's row again and compare with the logged output.

    Returns:
        (identical, explanation). Raises ValueError when the model or the input is not the logged one.
    """
    record = read_record(log, sequence)
    bundle = load_bundle(model, device=pick_device(device))
    if bundle.sha256 != record.model_sha256:
        raise ValueError(
            f"{model} is not the logged model (sha256 {bundle.sha256[:12]}..., logged {record.model_sha256[:12]}...)"
        )
    cohort = load_cohort(spec)
    position = record.output.row - 1
    if not 0 <= position < len(cohort.table):
        raise ValueError(f"{spec} has no row {record.output.row}")
    (output,) = iter_predictions(bundle, cohort, [position], PredictOptions())
    if output.input_sha256 != record.input_sha256:
        raise ValueError(f"row {record.output.row} of {spec} is not the logged input (its sha256 differs)")
    output = redacted(output, token_modalities(bundle))
    difference = compare(record.output.model_dump(mode="json"), output.model_dump(mode="json"))
    if difference is None:
        return True, (
            f"record {sequence}: row {record.output.row}, status {output.status}, label {output.label}, "
            f"risk {output.risk} (every field equal; numbers within {FLOAT_TOLERANCE:g})"
        )
    return False, f"record {sequence}: {difference}"


FLOAT_TOLERANCE = 1e-5


def compare(logged: object, again: object, where: str = "output") -> str | None:
    """None when equal (numbers within ``FLOAT_TOLERANCE``), else where they first differ.

    Numbers get a tolerance because a patient predicted alone and in a batch of 64 sums in a
    different order (float32); decisions, ids, names and hashes must match exactly.
    """
    if isinstance(logged, dict) and isinstance(again, dict):
        if logged.keys() != again.keys():
            return f"{where}: different keys"
        for key in logged:
            found = compare(logged[key], again[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(logged, list) and isinstance(again, list):
        if len(logged) != len(again):
            return f"{where}: {len(logged)} items logged, {len(again)} now"
        for i, (a, b) in enumerate(zip(logged, again, strict=True)):
            found = compare(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(logged, float | int) and isinstance(again, float | int) and not isinstance(logged, bool):
        return None if abs(logged - again) <= FLOAT_TOLERANCE else f"{where}: {logged} logged, {again} now"
    return None if logged == again else f"{where}: differs"
