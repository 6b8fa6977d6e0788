"""Cheap header checks: is this file what its extension and modality kind say it is?

``deepwe validate`` calls :func:`sniff_file` on every path of a cohort, so it reads at most a few
kilobytes per file and never decodes pixel or sample data.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "text": (".txt",),
    "image": (".dcm", ".nii", ".nii.gz", ".png", ".jpg", ".jpeg", ".npy"),
    "audio": (".wav", ".flac"),
    "sensor": (".csv", ".parquet", ".hea", ".txt"),
}

_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (128, b"DICM", "a DICOM file"),
    (0, b"\x93NUMPY", "a NumPy .npy array"),
    (0, b"\x1f\x8b", "gzip-compressed data"),
    (0, b"fLaC", "a FLAC recording"),
    (0, b"PAR1", "a Parquet file"),
    (0, b"PK\x03\x04", "a ZIP archive"),
    (0, b"%PDF", "a PDF document"),
    (0, b"\x80", "a Python pickle"),
)
_HEAD_BYTES = 4096


def file_extension(path: str | Path) -> str:
    """Lower-case extension, with ``.nii.gz`` kept whole."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def describe(head: bytes) -> str:
    """A human name for what the first bytes of a file look like."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "a WAV recording"
    for offset, magic, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    if _nifti_header_size(head) is not None:
        return "a NIfTI image"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of unknown format"
    return "text"


def sniff_file(path: str | Path, kind: str) -> str | None:
    """Check the header of ``path`` against modality ``kind``.

    Returns:
        ``None`` when the file looks right, otherwise the reason it does not (no file content in it).
    """
    path = Path(path)
    ext = file_extension(path)
    allowed = EXTENSIONS[kind]
    if ext not in allowed:
        return f"a {kind} file with extension {', '.join(allowed)}"
    if not path.is_file():
        return "a regular file"
    size = path.stat().st_size
    if size == 0:
        return f"a non-empty {ext} file (this one is 0 bytes)"
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
    check = _CHECKS.get((kind, ext)) or _CHECKS.get((None, ext))
    return check(path, head) if check else None


def _expect(head: bytes, offset: int, magic: bytes, what: str) -> str | None:
    if head[offset : offset + len(magic)] == magic:
        return None
    return f"{what}, but the header looks like {describe(head)}"


def _nifti_header_size(head: bytes) -> int | None:
    if len(head) < 4:
        return None
    for order in "<>":
        (size,) = struct.unpack(order + "i", head[:4])
        if size in (348, 540):
            return size
    return None


def _check_nifti(path: Path, head: bytes) -> str | None:
    if _nifti_header_size(head) is None:
        return f"a NIfTI image (header size 348 or 540), but the header looks like {describe(head)}"
    return None


def _check_nifti_gz(path: Path, head: bytes) -> str | None:
    if head[:2] != b"\x1f\x8b":
        return f"a gzip-compressed NIfTI image, but the header looks like {describe(head)}"
    try:
        with gzip.open(path, "rb") as handle:
            inner = handle.read(8)
    except (OSError, EOFError):
        return "a gzip-compressed NIfTI image, but the gzip stream is corrupt"
    return _check_nifti(path, inner)


def _check_wav(path: Path, head: bytes) -> str | None:
    if not (head[:4] == b"RIFF" and head[8:12] == b"WAVE"):
        return f"a WAV recording (RIFF/WAVE header), but the header looks like {describe(head)}"
    return _check_audio_frames(path)


def _check_flac(path: Path, head: bytes) -> str | None:
    return _expect(head, 0, b"fLaC", "a FLAC recording") or _check_audio_frames(path)


def _check_audio_frames(path: Path) -> str | None:
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as error:
        return f"a readable recording, but libsndfile refused it ({error.__class__.__name__})"
    if info.channels < 1 or info.frames < 1:
        return f"a recording with audio frames, but it has {info.frames} frames in {info.channels} channels"
    return None


def _check_text_line(path: Path, head: bytes, what: str) -> str | None:
    try:
        first = head.decode("utf-8", errors="strict").splitlines()[0] if head.strip() else ""
    except UnicodeDecodeError:
        return f"{what}, but the header looks like {describe(head)}"
    return None if first.strip() else f"{what}, but the first line is blank"


def _check_csv(path: Path, head: bytes) -> str | None:
    return _check_text_line(path, head, "a CSV table with a header line")


def _check_parquet(path: Path, head: bytes) -> str | None:
    problem = _expect(head, 0, b"PAR1", "a Parquet file")
    if problem:
        return problem
    with path.open("rb") as handle:
        handle.seek(-4, 2)
        if handle.read(4) != b"PAR1":
            return "a Parquet file, but its footer is missing (truncated file?)"
    return None


def _check_wfdb_header(path: Path, head: bytes) -> str | None:
    try:
        lines = [ln for ln in head.decode("ascii").splitlines() if ln.strip() and not ln.startswith("#")]
    except UnicodeDecodeError:
        return f"a WFDB header (text), but the header looks like {describe(head)}"
    fields = lines[0].split() if lines else []
    if len(fields) < 2 or not fields[1].isdigit():
        return "a WFDB header whose first line is 'RECORD NSIGNALS [FS [NSAMPLES]]'"
    return None


def _check_sensor_txt(path: Path, head: bytes) -> str | None:
    first = head.decode("utf-8", errors="replace").splitlines()[0].strip() if head else ""
    if first.replace(" ", "") != "Time,Parameter,Value":
        return "a PhysioNet 2012 record whose first line is 'Time,Parameter,Value'"
    return None


_CHECKS = {
    (None, ".dcm"): lambda p, h: _expect(h, 128, b"DICM", "a DICOM file ('DICM' at byte 128)"),
    (None, ".png"): lambda p, h: _expect(h, 0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (None, ".jpg"): lambda p, h: _expect(h, 0, b"\xff\xd8\xff", "a JPEG image"),
    (None, ".jpeg"): lambda p, h: _expect(h, 0, b"\xff\xd8\xff", "a JPEG image"),
    (None, ".npy"): lambda p, h: _expect(h, 0, b"\x93NUMPY", "a NumPy .npy array"),
    (None, ".nii"): _check_nifti,
    (None, ".nii.gz"): _check_nifti_gz,
    (None, ".wav"): _check_wav,
    (None, ".flac"): _check_flac,
    (None, ".csv"): _check_csv,
    (None, ".parquet"): _check_parquet,
    (None, ".hea"): _check_wfdb_header,
    ("sensor", ".txt"): _check_sensor_txt,
}
