"""On-disk cache of frozen note embeddings, so that training never encodes the same note twice.

One safetensors file per note, under a folder that names everything the embedding depends on::

    {cache_dir}/{weights_sha256[:16]}-{recipe}/{text_sha256[:2]}/{text_sha256}.safetensors

``recipe`` spells the text encoder settings that change the embedding (granularity, window length,
chunk cap). A file holds ``embeddings`` (T, H) float32, and its metadata holds the token names and
the chunk counts. Files are written to a temporary name and renamed, so DataLoader workers that
encode the same note at once never read half a file; an unreadable file is treated as a miss and
rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

_READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class NoteEmbedding:
    """The frozen language-model output for one note.

    Attributes:
        embeddings: (T, H) float32, one row per token (sentence or word piece).
        names: T token names.
        n_chunks: model windows that were encoded.
        dropped_chunks: windows beyond the chunk cap that were not encoded.
    """

    embeddings: Tensor
    names: tuple[str, ...]
    n_chunks: int
    dropped_chunks: int


def sha256_text(text: str) -> str:
    """Hex sha256 of the UTF-8 bytes of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, computed once per process for an unchanged file."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _sha256_file(str(resolved), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _sha256_file(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the cache key so that a replaced file is hashed again.
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class EmbeddingCache:
    """Note embeddings on disk, keyed by the note's sha256 under one model and recipe.

    Args:
        root: the cache folder; created on first write.
        weights_sha256: hex sha256 of the language model's weights file.
        recipe: a short, filename-safe spelling of the settings that shape the embedding.
    """

    def __init__(self, root: str | Path, weights_sha256: str, recipe: str) -> None:
        self.folder = Path(root) / f"{weights_sha256[:16]}-{recipe}"
        self.weights_sha256 = weights_sha256

    def path(self, text: str) -> Path:
        """Where the embedding of ``text`` lives (whether or not it exists yet)."""
        key = sha256_text(text)
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, text: str) -> NoteEmbedding | None:
        """The stored embedding of ``text``, or None on a miss or an unreadable file."""
        path = self.path(text)
        if not path.is_file():
            return None
        try:
            with safe_open(path, framework="pt") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("weights_sha256") != self.weights_sha256:
                    return None
                embeddings = handle.get_tensor("embeddings")
            return NoteEmbedding(
                embeddings=embeddings,
                names=tuple(json.loads(metadata["names"])),
                n_chunks=int(metadata["n_chunks"]),
                dropped_chunks=int(metadata["dropped_chunks"]),
            )
        except (SafetensorError, OSError, KeyError, ValueError):
            return None

    def put(self, text: str, note: NoteEmbedding) -> None:
        """Store the embedding of ``text``, replacing any earlier file atomically."""
        path = self.path(text)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "names": json.dumps(list(note.names)),
            "n_chunks": str(note.n_chunks),
            "dropped_chunks": str(note.dropped_chunks),
            "weights_sha256": self.weights_sha256,
        }
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(handle)
        try:
            tensors = {"embeddings": note.embeddings.detach().to(torch.float32).contiguous()}
            save_file(tensors, temporary, metadata=metadata)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
