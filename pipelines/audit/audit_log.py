"""The append-only, hash-chained prediction audit log: one JSON line per prediction.

Each line is one :class:`~data_schemas.AuditRecord` — time (UTC), user, model sha256, input sha256,
code version and the output :class:`~data_schemas.PredictionRecord` — plus the hash chain:

- ``sequence`` starts at 1 and grows by one per record, so in an intact log record ``n`` is on line ``n``;
- ``previous_hash`` is the ``record_hash`` of the record before it (64 zeros for the first record);
- ``record_hash`` is the sha256 of the record's canonical JSON without ``record_hash``.

Canonical JSON, so that an auditor can re-implement the check without this code: take the line's JSON
object (the same as ``AuditRecord.model_dump(mode="json")``, without ``batch`` when that is null), remove the ``record_hash`` key, and encode
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)`` as UTF-8;
``record_hash`` is the lowercase hex sha256 of those bytes. Every line is written in this same canonical
form (with ``record_hash`` included), so Python's ``json`` module reproduces the bytes exactly.

An edited record no longer matches its ``record_hash``; a removed or reordered record breaks the
``previous_hash`` link and the sequence of the record after it. Removing records from the *end* of the
log leaves a valid shorter chain, so every append also writes the chain head (last ``sequence`` and
``record_hash``) to the sidecar ``<log>.head``; :func:`verify_log` reports a log that ends before its
head, and :meth:`AuditLog.append` refuses to continue one. A head that lags the log while the
records after it chain on from it is a writer killed between its two writes: without a key the next
append moves the head up and continues. With the environment variable
``DEEPWE_AUDIT_KEY`` set, the head also carries an HMAC-SHA256 of ``"<sequence>:<record_hash>"``
under that key: without the key, nobody can re-chain an edited log and write a head that verifies.
Without a key, someone who can write both files can rewrite the whole chain and its head; keep a
copy of the head (``deepwe audit verify`` prints it) where the log's writers cannot change it.

Appends are crash-safe and safe across processes: the file is opened for appending, an exclusive
``fcntl.flock`` is held while the last record is read and the new lines are written, every line is
written whole and the file is flushed with ``os.fsync`` before the lock is released. A crash mid-write
leaves a torn last line (no newline at the end); :func:`verify_log` reports it and
:meth:`AuditLog.append` refuses to continue such a log until an operator has checked and truncated it.

Patient data: the log is the governance record of who was predicted what, so each record holds the
patient id (inside the output) — and nothing else from the patient: no note text and no values. Token
names of text modalities split into word pieces *are* note text; pass those modalities to
``append(..., redact_tokens=...)``. The log is a clinical record: store, back up, grant access to and
retain it like one.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from data_schemas import AuditRecord, PredictionRecord

GENESIS_HASH = "0" * 64
KEY_VARIABLE = "DEEPWE_AUDIT_KEY"
REDACTED_TOKEN = "[redacted]"
_BLOCK = 1 << 16


class AuditLogError(ValueError):
    """An audit log that cannot be appended to or read; the message names the file and says why."""


@dataclass
class VerifyResult:
    """What :func:`verify_log` found.

    Attributes:
        ok: the whole log is intact (no problems).
        records: number of lines that hold a valid record.
        problems: one message per problem, each starting with its 1-based line number.
        head_sequence: ``sequence`` of the last valid record (``None`` for an empty log).
        head_hash: ``record_hash`` of the last valid record; keep it elsewhere to detect later removal
            of records from the end of the log.
    """

    ok: bool
    records: int
    problems: list[str] = field(default_factory=list)
    head_sequence: int | None = None
    head_hash: str | None = None


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """The canonical UTF-8 JSON bytes of a JSON-ready mapping (see the module docstring)."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def record_hash(record: AuditRecord) -> str:
    """sha256 (hex) of the canonical JSON of ``record`` without its ``record_hash``."""
    return hashlib.sha256(canonical_json(record_json(record, exclude={"record_hash"}))).hexdigest()


def record_json(record: AuditRecord, exclude: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The JSON object of ``record`` as logged: an absent ``batch`` is left out, not written as null."""
    return record.model_dump(mode="json", exclude=exclude | ({"batch"} if record.batch is None else set()))


def redacted(output: PredictionRecord, modalities: Collection[str]) -> PredictionRecord:
    """``output`` with the top-feature token names of ``modalities`` replaced by ``"[redacted]"``.

    For text modalities whose tokens are word pieces (their names are note text). Replay applies the
    same redaction before comparing a reproduced output with the logged one.
    """
    if not modalities or not any(f.modality in modalities for f in output.top_features):
        return output
    features = [
        f.model_copy(update={"token": REDACTED_TOKEN}) if f.modality in modalities else f
        for f in output.top_features
    ]
    return output.model_copy(update={"top_features": features})


class AuditLog:
    """An append-only JSON Lines audit log at ``path`` (created on the first append).

    Usage: ``AuditLog(path).append(predictions, user=getpass.getuser(), code_version=code_version())``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(
        self,
        outputs: Iterable[PredictionRecord],
        *,
        user: str,
        code_version: str,
        redact_tokens: Collection[str] = (),
        batch: str | None = None,
    ) -> list[AuditRecord]:
        """Append one record per output, continuing the chain from the last record in the file.

        ``outputs`` is consumed before the lock is taken, so a lazy prediction stream never holds the
        log locked. All records of one call are written with a single ``fsync``.

        Args:
            outputs: the predictions to record, in order.
            user: who asked for the predictions (the caller's ``getpass.getuser()`` by default).
            code_version: the version of the code that made them (``pipelines.bundles.bundle_io.code_version()``).
            redact_tokens: modalities whose top-feature token names are note text (word pieces).
            batch: a name for this call unique to it (a prediction run's ``"<run>/<chunk>"``). When
                the log already ends with this batch (a resumed run passing on a chunk whose records
                were written just before the previous run was killed), nothing is appended again.

        Returns:
            The records as written (empty when the batch was already in the log).

        Raises:
            AuditLogError: the log's last line is torn or its last record is invalid or edited; or an
                output holds a NaN or infinite number (the log is strict JSON).
        """
        checked = [_checked_output(output, redact_tokens) for output in outputs]
        if not checked:
            return []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            start = os.fstat(fd).st_size
            last = self._tail(fd)
            if batch is not None and last is not None and last.batch == batch:
                return []
            sequence, previous = (0, GENESIS_HASH) if last is None else (last.sequence, last.record_hash)
            now = datetime.now(UTC)
            records, lines = [], []
            for output in checked:
                sequence += 1
                record = _seal(
                    sequence=sequence,
                    time=now,
                    user=user,
                    model_sha256=output.model_sha256,
                    input_sha256=output.input_sha256,
                    code_version=code_version,
                    output=output,
                    previous_hash=previous,
                    batch=batch,
                )
                lines.append(canonical_json(record_json(record)) + b"\n")
                records.append(record)
                previous = record.record_hash
            try:
                _write_all(fd, b"".join(lines))
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, start)  # a full disk must not leave a torn line behind
                raise
            _write_head(head_path(self.path), sequence, previous)
        finally:
            os.close(fd)  # closing releases the lock
        if start == 0:
            _fsync_dir(self.path.parent)
        return records

    def _tail(self, fd: int) -> AuditRecord | None:
        """The last record, checked against its hash and the head, or None for an empty file."""
        size = os.fstat(fd).st_size
        if size == 0:
            problem = _head_problem(head_path(self.path), 0, GENESIS_HASH)
            if problem is not None:
                raise AuditLogError(f"{self.path}: {problem}; refusing to append")
            return None
        if os.pread(fd, 1, size - 1) != b"\n":
            end = _last_newline(fd, size) + 1
            raise AuditLogError(
                f"{self.path}: the last line is torn (no newline at the end: a write was interrupted); "
                f"refusing to append. Check the line, then truncate the file to its last complete line "
                f"({end} bytes, e.g. `truncate -s {end} {self.path}`) and run `deepwe audit verify`"
            )
        start = _last_newline(fd, size - 1) + 1
        raw = os.pread(fd, size - start, start)
        try:
            record = _parse(raw)
        except _BadLine as bad:
            raise AuditLogError(
                f"{self.path}: the last line is not a valid audit record ({bad}); refusing to append. "
                "Run `deepwe audit verify` to see what is wrong"
            ) from None
        if record_hash(record) != record.record_hash:
            raise AuditLogError(
                f"{self.path}: the last record (sequence {record.sequence}) does not match its "
                "record_hash: it was edited; refusing to append. Run `deepwe audit verify`"
            )
        problem = _head_problem(head_path(self.path), record.sequence, record.record_hash)
        if problem is not None and self._finish_interrupted_append(fd, record):
            problem = None
        if problem is not None:
            raise AuditLogError(f"{self.path}: {problem}; refusing to append. Run `deepwe audit verify`")
        return record

    def _finish_interrupted_append(self, fd: int, last: AuditRecord) -> bool:
        """Move a head that lags the log up to its last record, when the records after the head
        chain on from it: a process killed between writing its records and writing the head.

        Only without an HMAC key: with one, records appended after the head could come from anyone
        who can write the file, so the head is the key holder's to move. Called under the lock.
        """
        if _key() is not None:
            return False
        try:
            head = json.loads(_read_head(head_path(self.path)) or "")
            recorded, recorded_hash = int(head["sequence"]), str(head["record_hash"])
        except (ValueError, KeyError, TypeError):
            return False
        if recorded >= last.sequence:
            return False
        previous: AuditRecord | None = None
        with open(fd, "rb", closefd=False) as handle:
            for _, raw in _lines(handle, os.fstat(fd).st_size):
                try:
                    record = _parse(raw)
                except _BadLine:
                    return False
                if previous is None:
                    if record.sequence == recorded and record.record_hash == recorded_hash:
                        previous = record
                    continue
                if (
                    record_hash(record) != record.record_hash
                    or record.previous_hash != previous.record_hash
                    or record.sequence != previous.sequence + 1
                ):
                    return False
                previous = record
        if previous is None or previous.record_hash != last.record_hash:
            return False
        _write_head(head_path(self.path), last.sequence, last.record_hash)
        return True


def verify_log(path: str | Path, *, max_problems: int = 1000) -> VerifyResult:
    """Check every line of an audit log, streaming (the log is never loaded whole).

    Lines appended while the check runs are not checked: the log is read up to its size at the start.

    Args:
        path: the JSON Lines audit log.
        max_problems: stop listing problems after this many (the count of the rest is reported).

    Raises:
        AuditLogError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise AuditLogError(f"{path}: no such audit log")
    problems: list[str] = []
    records = 0
    head: AuditRecord | None = None
    previous: tuple[int, AuditRecord] | None = None  # the line before, when it holds a valid record
    with path.open("rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)  # the size and head are taken between two whole appends
        size = os.fstat(handle.fileno()).st_size
        head_text = _read_head(head_path(path))
        fcntl.flock(handle, fcntl.LOCK_UN)
        for lineno, raw in _lines(handle, size):
            if not raw.endswith(b"\n"):
                problems.append(
                    f"line {lineno}: torn last line (no newline at the end: a write was interrupted); "
                    f"check it, then truncate the file to its last complete line ({size - len(raw)} bytes)"
                )
            try:
                record = _parse(raw)
            except _BadLine as bad:
                if raw.endswith(b"\n"):
                    problems.append(f"line {lineno}: {bad}")
                previous = None
                continue
            records += 1
            problems.extend(f"line {lineno}: {p}" for p in _check(record, lineno, previous))
            head, previous = record, (lineno, record)
    sequence, last = (0, GENESIS_HASH) if head is None else (head.sequence, head.record_hash)
    problem = _head_problem(head_path(path), sequence, last, required=bool(_key()), text=head_text)
    if problem is not None:
        problems.append(f"head: {problem}")
    shown = problems[:max_problems]
    if len(problems) > max_problems:
        shown.append(f"... and {len(problems) - max_problems} more problems")
    return VerifyResult(
        ok=not problems,
        records=records,
        problems=shown,
        head_sequence=None if head is None else head.sequence,
        head_hash=None if head is None else head.record_hash,
    )


def unlogged(path: str | Path, delivered: Iterable[PredictionRecord]) -> list[int]:
    """Rows of ``delivered`` (a predictions file's records) that no record of the log holds.

    A row counts as logged when a valid record has the same row, patient id, status, risk, model
    sha256 and input sha256. Streams the log; holds one small key per record.

    Raises:
        AuditLogError: the log does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise AuditLogError(f"{path}: no such audit log")
    logged = set()
    with path.open("rb") as handle:
        for _, raw in _lines(handle, os.fstat(handle.fileno()).st_size):
            try:
                logged.add(_delivery_key(_parse(raw).output))
            except _BadLine:
                continue
    return [record.row for record in delivered if _delivery_key(record) not in logged]


def _delivery_key(output: PredictionRecord) -> tuple[object, ...]:
    risk = None if output.risk is None else round(output.risk, 6)
    return (output.row, output.patient_id, output.status, risk, output.model_sha256, output.input_sha256)


def read_record(path: str | Path, sequence: int) -> AuditRecord:
    """The record with this ``sequence``, checked against its own ``record_hash`` (for replay).

    Streams the log up to the record. Only the record itself is checked: run :func:`verify_log` to
    check the chain.

    Raises:
        AuditLogError: the file does not exist, no record has this sequence, or the record is invalid
            or was edited.
    """
    path = Path(path)
    if not path.is_file():
        raise AuditLogError(f"{path}: no such audit log")
    with path.open("rb") as handle:
        for lineno, raw in _lines(handle, os.fstat(handle.fileno()).st_size):
            try:
                found = json.loads(raw).get("sequence") == sequence
            except (ValueError, AttributeError):
                continue
            if not found:
                continue
            try:
                record = _parse(raw)
            except _BadLine as bad:
                raise AuditLogError(f"{path}: line {lineno} (sequence {sequence}): {bad}") from None
            if record_hash(record) != record.record_hash:
                raise AuditLogError(
                    f"{path}: line {lineno} (sequence {sequence}) does not match its record_hash: the "
                    "record was edited; refusing to replay it"
                )
            return record
    raise AuditLogError(f"{path}: no record with sequence {sequence}")


def head_path(log: Path) -> Path:
    """The sidecar holding the chain head of ``log``."""
    return log.with_name(log.name + ".head")


def _key() -> bytes | None:
    key = os.environ.get(KEY_VARIABLE)
    return key.encode("utf-8") if key else None


def _head_mac(key: bytes, sequence: int, last_hash: str) -> str:
    return hmac.new(key, f"{sequence}:{last_hash}".encode(), hashlib.sha256).hexdigest()


def _write_head(path: Path, sequence: int, last_hash: str) -> None:
    """Replace the head sidecar atomically (and durably) with ``sequence`` and ``last_hash``."""
    head: dict[str, Any] = {"sequence": sequence, "record_hash": last_hash}
    key = _key()
    if key is not None:
        head["hmac"] = _head_mac(key, sequence, last_hash)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(canonical_json(head) + b"\n")
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_head(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""


def _head_problem(
    path: Path, sequence: int, last_hash: str, *, required: bool = False, text: str | None = None
) -> str | None:
    """What is wrong between the log's last record and its head sidecar, or None.

    Args:
        sequence, last_hash: the log's last valid record (0 and the genesis hash for an empty log).
        required: a missing sidecar is a problem (with a key, a deleted head must not pass).
        text: the sidecar's text when already read (read from ``path`` otherwise).
    """
    text = _read_head(path) if text is None else text
    if text is None:
        if required and sequence > 0:
            return f"{path.name} is missing; with {KEY_VARIABLE} set the log's head must be there"
        return None
    try:
        head = json.loads(text)
        recorded, recorded_hash = int(head["sequence"]), str(head["record_hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path.name} is not a valid head file"
    if recorded != sequence or recorded_hash != last_hash:
        return (
            f"the log ends at sequence {sequence} but {path.name} records the head at sequence "
            f"{recorded}: records were removed from the end, or added without deepwe"
        )
    key = _key()
    if key is not None and not hmac.compare_digest(
        str(head.get("hmac", "")), _head_mac(key, sequence, last_hash)
    ):
        return (
            f"the HMAC in {path.name} does not match under {KEY_VARIABLE}: the log or its head was "
            "rewritten without the key (or the key differs)"
        )
    return None


class _BadLine(Exception):
    """A line that holds no valid record; the message says why without quoting the line."""


def _seal(**fields: Any) -> AuditRecord:
    """A validated record with its ``record_hash`` computed."""
    draft = AuditRecord(**fields, record_hash=GENESIS_HASH)
    try:
        digest = record_hash(draft)
    except ValueError:  # json refuses NaN and infinities with allow_nan=False
        raise AuditLogError(
            f"the output for row {draft.output.row} holds a NaN or infinite number; the audit log is "
            "strict JSON and records finite numbers only"
        ) from None
    return draft.model_copy(update={"record_hash": digest})


def _checked_output(output: PredictionRecord, modalities: Collection[str]) -> PredictionRecord:
    if not isinstance(output, PredictionRecord):
        raise TypeError(f"the audit log records PredictionRecord objects, got {type(output).__name__}")
    return redacted(output, modalities)


def _parse(raw: bytes) -> AuditRecord:
    if not raw.strip():
        raise _BadLine("empty line")
    try:
        payload = json.loads(raw)
    except UnicodeDecodeError:
        raise _BadLine("not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise _BadLine(f"invalid JSON ({error.msg} at column {error.colno})") from None
    try:
        return AuditRecord.model_validate(payload)
    except ValidationError as error:
        raise _BadLine(f"schema error ({_summary(error)})") from None


def _check(record: AuditRecord, lineno: int, previous: tuple[int, AuditRecord] | None) -> Iterator[str]:
    """The problems of one valid record, given the valid record on the line before it (if any)."""
    if record_hash(record) != record.record_hash:
        yield "record_hash mismatch: the record's contents do not match its hash (the record was edited)"
    if lineno == 1:
        if record.sequence != 1:
            yield f"sequence gap: the first record has sequence {record.sequence}, expected 1 (records removed)"
        if record.previous_hash != GENESIS_HASH:
            yield "previous_hash mismatch: the first record must chain from 64 zeros (records removed)"
        return
    if previous is None:  # the line before holds no valid record and is reported already
        return
    previous_line, before = previous
    if record.sequence != before.sequence + 1:
        yield (
            f"sequence gap: sequence {record.sequence} follows {before.sequence} on line {previous_line} "
            "(a record was removed or reordered)"
        )
    if record.previous_hash != before.record_hash:
        yield (
            f"previous_hash mismatch: does not match the record_hash of line {previous_line} (a record was "
            f"removed or reordered, or line {previous_line} was edited and re-hashed)"
        )


def _summary(error: ValidationError) -> str:
    """Field locations and messages of a validation error, without the offending values."""
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}"
        for e in error.errors(include_input=False, include_url=False)
    ]
    return "; ".join(parts[:5]) + (f"; and {len(parts) - 5} more" if len(parts) > 5 else "")


def _lines(handle: BinaryIO, size: int) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line with its newline) for the first ``size`` bytes of ``handle``."""
    consumed = 0
    for lineno, raw in enumerate(handle, start=1):
        if consumed + len(raw) > size:
            raw = raw[: size - consumed]
        if raw:
            yield lineno, raw
        consumed += len(raw)
        if consumed >= size:
            return


def _last_newline(fd: int, end: int) -> int:
    """Offset of the last ``\\n`` before ``end``, or -1 when there is none."""
    while end > 0:
        start = max(0, end - _BLOCK)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(folder: Path) -> None:
    """Make a newly created log's directory entry durable too."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
