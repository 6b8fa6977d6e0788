"""One problem found in user input, located precisely enough to fix it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Problem(BaseModel):
    """A single validation problem: where it is, what was found, and what was expected.

    ``row`` is the 1-based data row of a table (the header is not counted); ``line`` is the 1-based
    line of a text file such as the cohort spec. ``column`` is a table column or, for the spec, a
    dotted key path (``modalities.labs.numeric``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    row: int | None = None
    line: int | None = None
    column: str | None = None
    value: str | None = None
    expected: str

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.line is not None:
            where += f", line {self.line}"
        if self.column is not None:
            where += f", column {self.column!r}"
        found = "" if self.value is None else f": found {self.value!r}"
        return f"{where}{found}; expected {self.expected}"
