"""The one error every reader raises for a file it cannot read."""

from __future__ import annotations

from pathlib import Path


class ReaderError(ValueError):
    """A file that cannot be read as its modality kind.

    The message names the file and what was wrong with it, never its content: it is shown in
    prediction outputs and logs, where patient data must not appear.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
