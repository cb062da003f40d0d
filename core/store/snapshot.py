"""One consistent state of the whole database, read as Arrow record batches (for export).

Rows go from SQLite to Arrow through ADBC's SQLite driver (``adbc-driver-sqlite``): C
code fills Arrow buffers directly, with no Python object per value (handing rows to
Python through ``sqlite3`` cost most of the old export's time). It is driven through
ADBC's low-level API (``Reader``), not its DB-API module, which imports ``pyarrow.dataset``
and with it pandas (0.17 s of CPU per export command, for nothing used here). Column types come from
the live schema (declared types, by SQLite's affinity rules), not from a list restated
here. Opened by ``Store.snapshot()``, which pins this view and the store's own reads to
the same state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import adbc_driver_manager
import adbc_driver_sqlite
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

    def __init__(self, reader: Reader, declared: dict[str, dict[str, str]]) -> None:
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
        rows = self._reader.query(sql, batch_rows=BATCH_ROWS)
        try:
            first = True
            for batch in rows:
                if first:
                    batch, first = batch.slice(1), False
                if batch.num_rows:
                    yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        finally:
            rows.close()  # closes the statement now, even when the caller stops early


class Reader:
    """An ADBC SQLite connection with autocommit off: its first query starts a read
    transaction, which lasts until ``close()``. Not shared between threads at once."""

    def __init__(self, uri: str) -> None:
        self._db = adbc_driver_sqlite.connect(uri)
        try:
            self._conn = adbc_driver_manager.AdbcConnection(self._db)
        except BaseException:
            self._db.close()
            raise
        try:
            self._conn.set_autocommit(False)
        except BaseException:
            self.close()
            raise

    def query(self, sql: str, batch_rows: int | None = None) -> Iterator[pa.RecordBatch]:
        """The rows of ``sql`` as Arrow batches (of ``batch_rows`` rows: the driver's
        default if None), read as they are consumed; the statement is closed when the
        iterator ends or is closed."""
        statement = adbc_driver_manager.AdbcStatement(self._conn)
        try:
            if batch_rows is not None:
                statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
            statement.set_sql_query(sql)
            stream, _ = statement.execute_query()
            with pa.RecordBatchReader.from_stream(stream) as reader:
                yield from reader
        finally:
            statement.close()

    def close(self) -> None:
        """Close the connection (ending its transaction) and the database handle."""
        try:
            self._conn.close()
        finally:
            self._db.close()


def open_reader(uri: str) -> Reader:
    """An ADBC connection on ``uri`` (read-only), not yet in a transaction."""
    return Reader(uri)
