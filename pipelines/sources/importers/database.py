"""Tables of a SQL database copied into a folder of CSV files, for an importer that reads folders.

A hospital's OMOP CDM usually lives in a database, not in CSV files. :func:`export_tables` streams
the named tables out through SQLAlchemy in chunks (bounded memory), so the same folder importer
reads them; the copies go into a temporary folder the caller owns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

CHUNK_ROWS = 200_000
_URL = re.compile(r"^[a-z][a-z0-9+]*://", re.IGNORECASE)


def is_database_url(source: str | Path) -> bool:
    """Whether ``source`` is a SQLAlchemy URL (``postgresql://...``, ``sqlite:///...``), not a path."""
    return isinstance(source, str) and bool(_URL.match(source))


def shown_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def export_tables(url: str, folder: Path, tables: Sequence[str], schema: str | None = None) -> list[str]:
    """Write each of ``tables`` found in the database at ``url`` to ``folder/<TABLE>.csv``.

    Table names are matched without regard to case. Tables the database lacks are left out (the
    importer says which it needs).

    Returns:
        The tables written.

    Raises:
        ValueError: the database cannot be reached or read; the message names it without its password.
    """
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url)
        names = {name.upper(): name for name in sqlalchemy.inspect(engine).get_table_names(schema=schema)}
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        raise ValueError(
            f"{shown_url(url)}: expected a database SQLAlchemy can open ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]})"
        ) from None
    written = []
    try:
        for table in tables:
            if table.upper() not in names:
                continue
            target = folder / f"{table.upper()}.csv"
            chunks = pd.read_sql_table(names[table.upper()], engine, schema=schema, chunksize=CHUNK_ROWS)
            for number, chunk in enumerate(chunks):
                chunk.to_csv(target, mode="a", header=number == 0, index=False)
            if not target.exists():  # an empty table: its header only
                pd.read_sql_table(names[table.upper()], engine, schema=schema).to_csv(target, index=False)
            written.append(table.upper())
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise ValueError(f"{shown_url(url)}: a table could not be read ({type(error).__name__})") from None
    finally:
        engine.dispose()
    return written
