"""One consistent state of the whole database, read as Arrow record batches (for export).

Rows go from SQLite to Arrow through ADBC's SQLite driver (``adbc-driver-sqlite``): C
code fills Arrow buffers directly, with no Python object per value (handing rows to
Python through ``sqlite3`` cost most of the old export's time). Column types come from
the live schema (declared types, by SQLite's affinity rules), not from a list restated
here. Opened by ``Store.snapshot()``, which pins this view and the store's own reads to
the same state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import adbc_driver_sqlite.dbapi as adbc
import pyarrow as pa

from core.store.migrations import DATA_TABLES

BATCH_ROWS = 65_536  # rows per Arrow batch: large enough to amortize, small for memory


def arrow_type(declared: str) -> pa.DataType:
    """The Arrow type of a column by SQLite's affinity rules for its declared type."""
    declared = declared.upper()
    if "INT" in declared:
        return pa.int64()
    if any(t in declared for t in ("CHAR", "CLOB", "TEXT")) or not declared:
        return pa.string()
    if any(t in declared for t in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    return pa.string()  # NUMERIC affinity: not used by this schema


_SENTINELS = {pa.int64(): "0", pa.float64(): "0.0", pa.string(): "''"}


class Snapshot:
    """A read transaction over the whole database, as Arrow batches.

    ``declared`` is each data table's declared column types, read from the live schema
    in the same state (table -> {column: declared type}, in schema order).
    """

    def __init__(self, reader: adbc.Connection, declared: dict[str, dict[str, str]]) -> None:
        self._reader = reader
        self._columns = {
            table: {name: arrow_type(decl) for name, decl in columns.items()}
            for table, columns in declared.items()
        }

    def columns(self, table: str) -> dict[str, pa.DataType]:
        """Column name -> Arrow type of ``table``, in schema order, from the live schema."""
        if table not in DATA_TABLES or table not in self._columns:
            raise ValueError(f"unknown table {table!r}")
        return dict(self._columns[table])

    def schema(self, table: str, columns: Sequence[str] | None = None) -> pa.Schema:
        types = self.columns(table)
        names = list(types) if columns is None else list(columns)
        return pa.schema([(c, types[c]) for c in names])

    def batches(self, table: str, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
        """``table``'s rows (the given columns, all by default), oldest first, as Arrow
        batches typed by ``schema()``.

        ADBC infers each column's type from its first batch of values; a leading row of
        typed placeholders (dropped here) makes that the declared type even when the
        first rows hold only NULLs.
        """
        schema = self.schema(table, columns)
        quoted = [f'"{f.name}"' for f in schema]
        placeholders = ", ".join(
            f"{_SENTINELS[f.type]} AS {q}" for f, q in zip(schema, quoted, strict=True)
        )
        sql = (
            f"SELECT {placeholders} UNION ALL "
            f"SELECT * FROM (SELECT {', '.join(quoted)} FROM {table} ORDER BY rowid)"
        )
        options = {"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)}
        cursor = self._reader.cursor(adbc_stmt_kwargs=options)
        try:
            cursor.execute(sql)
            first = True
            for batch in cursor.fetch_record_batch():
                if first:
                    batch, first = batch.slice(1), False
                if batch.num_rows:
                    yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        finally:
            cursor.close()


def open_reader(uri: str) -> adbc.Connection:
    """An ADBC connection on ``uri`` (read-only), not yet in a transaction."""
    return adbc.connect(uri)
