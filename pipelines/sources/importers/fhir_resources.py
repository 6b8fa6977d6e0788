"""Reading FHIR R4 resources from Bundles (``.json``) and NDJSON files, as plain JSON with checks.

Why plain JSON and not ``fhir.resources``: the importer needs a dozen fields of five resource types,
and it must skip one malformed resource while keeping the rest of the patient. A full model library
validates a whole Bundle at once (one bad entry rejects the patient), ties the reader to one FHIR
version (its default namespace is R5, which rejects R4 Bundles), and costs seconds per large
Bundle. Here each resource is checked for exactly the fields used, and a failure names the file, the
entry and the resource id.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

LOINC = "http://loinc.org"
USED = frozenset({"Patient", "Encounter", "Observation", "Condition", "DocumentReference"})


class ResourceError(ValueError):
    """One resource that cannot be used; the message names where it is and what was expected."""


@dataclass(frozen=True)
class Located:
    """A resource with where it came from (``file``, ``entry`` index or NDJSON ``line``)."""

    resource: dict
    file: Path
    where: str

    def fault(self, expected: str) -> ResourceError:
        kind = self.resource.get("resourceType", "resource")
        ident = self.resource.get("id")
        named = f"{kind} {ident!r}" if ident else kind
        return ResourceError(f"{_at(self.file, self.where)} ({named}): expected {expected}")


def read_resources(path: Path) -> Iterator[Located]:
    """The used resources in one file: a Bundle or single resource (``.json``), or NDJSON lines.

    Raises:
        ResourceError: the file (or an NDJSON line) is not JSON or not a FHIR resource; for NDJSON
            the other lines are still read (the error comes after them).
    """
    if path.suffix.lower() == ".ndjson":
        yield from _ndjson(path)
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResourceError(f"{path}: expected a FHIR Bundle in JSON ({error.__class__.__name__})") from None
    yield from _unpack(data, path, "")


def _ndjson(path: Path) -> Iterator[Located]:
    bad: list[int] = []
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                bad.append(number)
                continue
            try:
                yield from _unpack(data, path, f"line {number}")
            except ResourceError:
                bad.append(number)
    if bad:
        raise ResourceError(
            f"{path}, line {bad[0]}: expected one FHIR resource in JSON per line; {len(bad)} line(s) skipped"
        )


def _unpack(data: object, path: Path, where: str) -> Iterator[Located]:
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise ResourceError(f"{_at(path, where)}: expected a FHIR resource (a JSON object with resourceType)")
    if data["resourceType"] != "Bundle":
        if data["resourceType"] in USED:
            yield Located(data, path, where)
        return
    entries = data.get("entry", [])
    if not isinstance(entries, list):
        raise ResourceError(f"{_at(path, where)}: expected Bundle.entry to be a list")
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            yield Located({}, path, f"entry {index}")  # reported by the importer as not a resource
            continue
        if resource["resourceType"] in USED:
            yield Located(resource, path, f"entry {index}")


def _at(path: Path, where: str) -> str:
    return f"{path}, {where}" if where else str(path)


def reference_id(located: Located, field: str) -> str:
    """The id a reference such as ``subject`` points to (``Patient/ID`` or ``urn:uuid:ID``)."""
    ref = located.resource.get(field, {})
    text = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise located.fault(f"a {field}.reference to the patient")
    return text.strip().rsplit("/", 1)[-1].removeprefix("urn:uuid:")


def instant(located: Located, value: object, field: str) -> datetime:
    """A FHIR date or dateTime as a naive UTC datetime (a date is its midnight)."""
    if not isinstance(value, str):
        raise located.fault(f"a date or dateTime in {field}")
    text = value.strip().replace("Z", "+00:00")
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise located.fault(f"a date or dateTime in {field}, not {value!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def effective_time(located: Located) -> datetime:
    """When an Observation holds: effectiveDateTime, else effectivePeriod.start, else issued."""
    r = located.resource
    if "effectiveDateTime" in r:
        return instant(located, r["effectiveDateTime"], "effectiveDateTime")
    if isinstance(r.get("effectivePeriod"), dict) and "start" in r["effectivePeriod"]:
        return instant(located, r["effectivePeriod"]["start"], "effectivePeriod.start")
    if "issued" in r:
        return instant(located, r["issued"], "issued")
    raise located.fault("an effectiveDateTime, effectivePeriod.start or issued time")


def coding(concept: object) -> tuple[str, str] | None:
    """``(code, display)`` of a CodeableConcept: its LOINC coding first, else its first coding."""
    if not isinstance(concept, dict):
        return None
    codings = [c for c in concept.get("coding", []) if isinstance(c, dict) and c.get("code")]
    if not codings:
        return None
    chosen = next((c for c in codings if c.get("system") == LOINC), codings[0])
    return str(chosen["code"]), str(chosen.get("display") or concept.get("text") or chosen["code"])


def observation_values(located: Located) -> list[tuple[str, str, float | None, str | None]]:
    """``(code, display, value, unit)`` of an Observation and of each of its components.

    A numeric ``valueQuantity`` gives a number; ``valueCodeableConcept``, ``valueString`` and the
    like give None (not a number, counted by the engine if the code is used).

    Raises:
        ResourceError: no code, or no value at all (neither ``value[x]`` nor valued components).
    """
    r = located.resource
    code = coding(r.get("code"))
    if code is None:
        raise located.fault("an Observation.code with a coding")
    found = []
    own = _value(r)
    if own is not None:
        found.append((*code, *own))
    for component in r.get("component", []) or []:
        part_code = coding(component.get("code")) if isinstance(component, dict) else None
        part = _value(component) if isinstance(component, dict) else None
        if part_code is not None and part is not None:
            found.append((*part_code, *part))
    if not found:
        reason = r.get("dataAbsentReason")
        why = f" (dataAbsentReason {coding(reason)[0] if coding(reason) else 'given'})" if reason else ""
        raise located.fault(f"a value[x] or valued components{why}")
    return found


def _value(element: dict) -> tuple[float | None, str | None] | None:
    quantity = element.get("valueQuantity")
    if isinstance(quantity, dict):
        number = quantity.get("value")
        value = float(number) if isinstance(number, int | float) and not isinstance(number, bool) else None
        unit = quantity.get("unit") or quantity.get("code")
        return value, str(unit) if unit is not None else None
    for key in element:
        if key.startswith("value") and key != "valueQuantity":
            return None, None
    return None


def note_text(located: Located) -> str | None:
    """The plain text of a DocumentReference's first ``text/plain`` attachment, or None."""
    for content in located.resource.get("content", []) or []:
        attachment = content.get("attachment", {}) if isinstance(content, dict) else {}
        if str(attachment.get("contentType", "")).startswith("text/plain") and attachment.get("data"):
            try:
                return base64.b64decode(attachment["data"]).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise located.fault("base64 UTF-8 text in content.attachment.data") from None
    return None
