"""A persistent, content-addressed cache of decoded input files, shared by every command.

Validation, training, prediction, explanation, the dashboard and the benchmarks read files through
:func:`decoded`. A decoded file is stored once, as safetensors bytes (arrays plus JSON metadata;
never pickle) behind their sha256, under a key made of

- the sha256 of the file's bytes (for a WFDB header, also of the signal files it names),
- :data:`READER_VERSION`, raised whenever a reader's output for the same bytes changes,
- ``how``: the reader and every setting that shapes its output (channels, grid rate, ...).

So a changed file, reader or setting is a miss, never a stale hit. Every entry carries the sha256
of its own content; an entry that does not match it (a torn copy, a flipped bit) is deleted and the
file decoded again. Entries are written to a temporary file and renamed into place, so concurrent
writers (two ``deepwe predict`` processes, DataLoader workers) leave one whole entry and a reader
never sees half of one. The folder's size is bounded: past the bound the least recently used
entries go.

Where it lives: ``--cache-dir`` on the command line, else ``$DEEPWE_CACHE_DIR``, else
``$XDG_CACHE_HOME/deepwe`` (``~/.cache/deepwe``). ``DEEPWE_CACHE_DIR=off`` turns it off. The bound is
``$DEEPWE_CACHE_MAX_MB`` (default 4096).

Inside :func:`keep_decoded_files` decoded values are also kept in memory, for runs that read the
same files many times in one process (cross-validation folds, ablations).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import stat
import tempfile
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pipelines.cohorts.decoded_codecs import CODECS, codec_for

T = TypeVar("T")

READER_VERSION = "1"
# The layout of an entry (its checksum); raised when it changes, so older entries are never read.
ENTRY_FORMAT = "3"
ENV_DIR = "DEEPWE_CACHE_DIR"
ENV_MAX_MB = "DEEPWE_CACHE_MAX_MB"
DEFAULT_MAX_MB = 4096
OFF = ("off", "none", "no", "0")
MAX_PUT_IN_MEMORY = 4096
_SUFFIX = ".safetensors"
_DIGEST_BYTES = 32
_CODEC = "__codec__"


@dataclass
class CacheCounts:
    """What this process's reads found in the cache."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0

    @property
    def hit_rate(self) -> float | None:
        """Share of reads served from the cache; None before any read."""
        total = self.hits + self.misses
        return self.hits / total if total else None

    def since(self, earlier: CacheCounts) -> CacheCounts:
        """The reads made after ``earlier`` was copied from these counts."""
        return CacheCounts(
            self.hits - earlier.hits, self.misses - earlier.misses, self.corrupt - earlier.corrupt
        )


def default_folder() -> Path | None:
    """The cache folder the environment asks for; None when the cache is turned off."""
    chosen = os.environ.get(ENV_DIR, "").strip()
    if chosen.lower() in OFF:
        return None
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepwe"


def default_max_bytes() -> int:
    """The size bound the environment asks for, in bytes."""
    text = os.environ.get(ENV_MAX_MB, "").strip()
    try:
        megabytes = float(text) if text else DEFAULT_MAX_MB
    except ValueError:
        raise ValueError(f"{ENV_MAX_MB} must be a number of megabytes, got {text!r}") from None
    if not megabytes > 0:
        raise ValueError(f"{ENV_MAX_MB} must be positive, got {text!r}")
    return int(megabytes * 1_000_000)


class DecodedCache:
    """Decoded files on disk, keyed by content, reader version and reader settings.

    Args:
        folder: where entries live (created on first write).
        max_bytes: size bound; past it the least recently used entries are evicted.
    """

    def __init__(self, folder: str | Path, max_bytes: int = DEFAULT_MAX_MB * 1_000_000) -> None:
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        self.counts = CacheCounts()
        self._written_since_check = 0
        self._put: dict[str, Any] = {}  # entry key -> value put in by this process, not yet read
        self._folders: set[Path] = set()  # entry folders this process made or found
        self._numbers = itertools.count()

    def key(self, how: Hashable, content_sha256: str) -> str:
        """The entry name of content ``content_sha256`` decoded ``how``."""
        text = json.dumps([READER_VERSION, ENTRY_FORMAT, repr(how), content_sha256])
        return hashlib.sha256(text.encode()).hexdigest()

    def entry(self, key: str) -> Path:
        return self.folder / "decoded" / key[:2] / f"{key}{_SUFFIX}"

    def get_or_decode(
        self, how: Hashable, path: str | Path, decode: Callable[[str], T], *, counted_inside: bool = False
    ) -> T:
        """``decode(path)``, or the value stored from an earlier decode of the same bytes ``how``.

        A file whose content cannot be hashed (absent, a folder) is decoded without the cache, so
        the reader raises its own error for it. Values of a type no codec knows are not stored.

        Args:
            counted_inside: ``decode`` derives its value from another cached decode of the same
                file (statistics from a grid), which counts the read as a hit or a miss: a miss
                here is not counted again, so the counts stay one per file read.
        """
        digest = content_sha256(path)
        if digest is None:
            return decode(str(path))
        key = self.key(how, digest)
        if key in self._put:  # decoded moments ago by put(), which counted the read
            return self._put.pop(key)
        entry = self.entry(key)
        found = self._load(entry)
        if found is not None:
            self.counts.hits += 1
            return found
        self.counts.misses += not counted_inside
        value = decode(str(path))
        codec = codec_for(value)
        # A file rewritten while it was decoded must not be stored under its old content's key.
        if codec is not None and content_sha256(path) == digest:
            self._store(entry, codec, value)
        return value

    def holds(self, how: Hashable, content_sha256: str) -> bool:
        """Whether an entry for content ``content_sha256`` decoded ``how`` exists (unchecked)."""
        key = self.key(how, content_sha256)
        return key in self._put or self.entry(key).is_file()

    def put(self, how: Hashable, content_sha256: str, value: Any) -> None:
        """Store ``value``, decoded ``how`` from bytes whose sha256 is ``content_sha256`` (counted as
        a miss), for files decoded together ahead of their reads.

        The next :meth:`get_or_decode` of that content takes it from memory; up to
        :data:`MAX_PUT_IN_MEMORY` values wait there.
        """
        self.counts.misses += 1
        key = self.key(how, content_sha256)
        codec = codec_for(value)
        if codec is not None:
            self._store(self.entry(key), codec, value)
        if len(self._put) >= MAX_PUT_IN_MEMORY:
            self._put.clear()  # values put but never read: their rows failed first
        self._put[key] = value

    def _load(self, entry: Path) -> Any | None:
        try:
            blob = entry.read_bytes()
        except OSError:
            return None
        value = _unpack(blob)
        if value is None:
            self.counts.corrupt += 1
            entry.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(entry)  # recently used: the last to be evicted
        return value

    def _store(self, entry: Path, codec: str, value: Any) -> None:
        blob = _pack(codec, value)
        try:
            handle, temporary = self._temporary(entry.parent)
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(blob)
                os.replace(temporary, entry)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError:
            return  # a full or read-only disk slows reading down; it must not fail it
        self._written_since_check += len(blob)
        if self._written_since_check * 20 >= self.max_bytes:
            self.evict()

    def _temporary(self, folder: Path) -> tuple[int, str]:
        """A new file in ``folder`` (made when missing) to write an entry to, open for writing.

        Its name is unique to this process and call (``mkstemp``'s random names cost more than the
        small entries they hold); a name somehow taken falls back to ``mkstemp``.
        """
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        name = str(folder / f".tmp-{os.getpid()}-{next(self._numbers)}{_SUFFIX}")
        try:
            return os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
            ), name  # as mkstemp: entries hold patient data
        except FileNotFoundError:  # the folder was removed meanwhile (``deepwe cache clear``)
            self._folders.discard(folder)
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            pass
        return tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=_SUFFIX)

    def size_bytes(self) -> int:
        """Bytes held by the entries now in the folder."""
        return sum(size for _, size, _ in self._entries())

    def evict(self) -> int:
        """Delete least recently used entries until the folder is under 80% of its bound.

        Returns:
            The number of entries deleted (0 while under the bound).
        """
        self._written_since_check = 0
        entries = sorted(self._entries(), key=lambda item: item[2])
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return 0
        removed = 0
        for path, size, _ in entries:
            if total <= 0.8 * self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed

    def clear(self) -> int:
        """Delete every entry (and stray temporary files). Returns the number of entries deleted."""
        removed = 0
        for path in self._files():
            path.unlink(missing_ok=True)
            removed += not path.name.startswith(".tmp-")
        return removed

    def _files(self) -> Iterator[Path]:
        root = self.folder / "decoded"
        if root.is_dir():
            yield from root.glob(f"*/*{_SUFFIX}")
            yield from root.glob(f"*/.tmp-*{_SUFFIX}")

    def _entries(self) -> Iterator[tuple[Path, int, float]]:
        """(path, size, last use) of each entry."""
        for path in self._files():
            if path.name.startswith(".tmp-"):
                continue
            try:
                info = path.stat()
            except OSError:
                continue
            yield path, info.st_size, info.st_mtime


def _pack(codec: str, value: Any) -> bytes:
    """An entry's bytes: the sha256 of what follows (32 bytes), then safetensors bytes of ``value``
    with its codec name in the metadata."""
    from safetensors.numpy import save

    arrays, metadata = CODECS[codec].encode(value)
    tensors = save(arrays, metadata={**metadata, _CODEC: codec})
    return hashlib.sha256(tensors).digest() + tensors


def _unpack(blob: bytes) -> Any | None:
    """The value in an entry's bytes, or None when they are not a whole, matching entry."""
    from safetensors.numpy import load

    digest, tensors = blob[:_DIGEST_BYTES], blob[_DIGEST_BYTES:]
    if len(digest) < _DIGEST_BYTES or hashlib.sha256(tensors).digest() != digest:
        return None
    try:
        metadata = _metadata(tensors)
        codec = CODECS[metadata.pop(_CODEC)]
        return codec.decode(load(tensors), metadata)
    except Exception:  # a damaged entry can fail anywhere in parsing; it is then re-decoded
        return None


def _metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (the header is 8 bytes of length, then JSON)."""
    length = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + length])
    return dict(header["__metadata__"])


def content_sha256(path: str | Path) -> str | None:
    """sha256 of a file's bytes (a WFDB header: of it and the signal files it names); None when the
    path is not a readable file or a header's signal file is missing.

    A run asks for the same file's hash several times (the cache key, the audit log's input hash);
    it is computed once per file identity (inode, size, modification and change times), so a
    rewritten file is hashed again.
    """
    path = Path(path)
    files = [path]
    try:
        if path.suffix.lower() == ".hea":
            files += _wfdb_signal_files(path)
        identity = tuple(_identity(file) for file in files)
    except (OSError, ValueError):
        return None
    remembered = _hashed.get(str(path))
    if remembered is not None and remembered[0] == identity:
        return remembered[1]
    digest = hashlib.sha256()
    try:
        for file in files:
            with open(file, "rb") as handle:
                digest.update(handle.read())
    except OSError:
        return None
    _remember(path, identity, digest.hexdigest())
    return digest.hexdigest()


def file_bytes_and_sha256(path: str | Path) -> tuple[bytes, str]:
    """A regular file's bytes and their sha256, which :func:`content_sha256` then reuses while the
    file keeps its identity (a WFDB header's hash also covers its signal files, so it is not kept).

    Raises:
        OSError: the path is not a readable regular file.
    """
    path = Path(path)
    before = _identity(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix.lower() != ".hea" and _identity(path) == before:
        _remember(path, (before,), digest)
    return data, digest


def _remember(path: Path, identity: tuple[tuple[int, ...], ...], digest: str) -> None:
    if len(_hashed) >= MAX_REMEMBERED_HASHES:
        _hashed.clear()
    _hashed[str(path)] = (identity, digest)


MAX_REMEMBERED_HASHES = 1 << 17
_hashed: dict[str, tuple[tuple[tuple[int, ...], ...], str]] = {}


def _identity(file: Path) -> tuple[int, ...]:
    """(inode, size, mtime ns, ctime ns) of a regular file; OSError when it is not one."""
    info = os.stat(file)
    if not stat.S_ISREG(info.st_mode):
        raise IsADirectoryError(file)
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _wfdb_signal_files(header: Path) -> list[Path]:
    """The signal files a WFDB header names (the reader checks they are safe before reading)."""
    lines = [line.split() for line in header.read_text(encoding="latin-1").splitlines()]
    lines = [fields for fields in lines if fields and not fields[0].startswith("#")]
    signals = int(lines[0][1])
    names = dict.fromkeys(fields[0] for fields in lines[1 : 1 + signals])
    return [header.parent / name for name in names if name != "~"]


# --- the process's cache and the in-memory layer --------------------------------------------------

_caches: dict[tuple[Path, int], DecodedCache] = {}
_kept: dict[tuple[Hashable, str], Any] | None = None


def process_cache() -> DecodedCache | None:
    """This process's cache for the folder the environment names now; None when turned off."""
    folder = default_folder()
    if folder is None:
        return None
    key = (folder, default_max_bytes())
    if key not in _caches:
        _caches[key] = DecodedCache(folder, key[1])
    return _caches[key]


def cache_counts() -> CacheCounts:
    """Hits and misses of this process's reads so far (zeros when the cache is off)."""
    cache = process_cache()
    return CacheCounts() if cache is None else cache.counts


@contextmanager
def keep_decoded_files() -> Iterator[dict[tuple[Hashable, str], Any]]:
    """Within the block, decoded files are also kept in memory (nested blocks share the outer memory).

    Within a block files are taken not to change. Kept values are shared, so callers must not
    modify them in place.

    Yields:
        The memory itself: ``(how, path) -> decoded value``.
    """
    global _kept
    outer = _kept
    _kept = {} if outer is None else outer
    try:
        yield _kept
    finally:
        _kept = outer


def decoded(
    how: Hashable, path: str, read: Callable[[str], T], *, persist: bool = True, counted_inside: bool = False
) -> T:
    """``read(path)`` through the in-memory layer (inside :func:`keep_decoded_files`) and, with
    ``persist``, the persistent cache (``counted_inside``: see :meth:`DecodedCache.get_or_decode`).
    Files that fail to read are never kept: they fail again, with the same error, every time."""
    if _kept is not None and (how, path) in _kept:
        return _kept[how, path]
    cache = process_cache() if persist else None
    value = (
        read(path) if cache is None else cache.get_or_decode(how, path, read, counted_inside=counted_inside)
    )
    if _kept is not None:
        _kept[how, path] = value
    return value
