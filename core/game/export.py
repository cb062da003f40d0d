"""Export the stored data: ``python -m core.game.export --db data/arena.db --out DIR``.

Writes one file per table and format (``generations.csv``, ``guesses.parquet``, …) and
``summary.json`` (core.game.stats.summary), all from one snapshot of the database
(``Store.snapshot``): every file, the summary included, shows the same state even while
another process writes.

Each table is read once, as Arrow record batches, and every format is written from the
same batches by its own writer thread (Arrow's CSV and Parquet writers and the JSON
encoder below run with the GIL released, so they share the two cores with the reader).
Floats are written exactly (the shortest text that reads back as the same double).

Public by default (the app's download): the answer key and the duel's quantized variant
of a round nobody has answered are null, and the columns that tie a served image file to
its variant (``PRIVATE_COLUMNS``) are left out. ``--include-private`` (the operator's
CLI only) exports every table whole.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core.errors import DatabaseError
from core.records import IMAGE_METRICS
from core.store.snapshot import Snapshot
from core.store.storage import TABLES, Store, default_images_dir

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "json", "parquet")
# Left out of the public export: a stored file name or hash would tell which served
# image is which variant while a round of its generation can still be answered.
# Stored file name and byte hash name a served file; PSNR / SSIM / FLIP mean against BF16
# (records.IMAGE_METRICS) are exact per-image figures a player could recompute from two
# served images of a replayed generation to spot the pair. summary.json carries their
# means per variant ("metrics") and the viewing conditions instead.
PRIVATE_COLUMNS: dict[str, tuple[str, ...]] = {"images": ("path", "sha256", *IMAGE_METRICS)}
# Nulled in the public export for a round nobody has answered: they are its answer.
ANSWER_COLUMNS: dict[str, tuple[str, ...]] = {"rounds": ("answer_key", "compared_variant")}
# Every epoch-seconds column (``created_at``, ``expires_at``) is exported with, right after
# it, the same moment in ISO 8601 UTC (``created_at_utc``: "2026-12-04T14:22:20.123456Z"),
# so a reader needs no conversion; the epoch value stays as stored.
TIME_SUFFIX = "_at"
UTC_SUFFIX = "_utc"
# A header row; quotes only where a value needs them; nulls as empty fields.
_CSV_OPTIONS = pacsv.WriteOptions(include_header=True, quoting_style="needed")


def parse_formats(value: str) -> tuple[str, ...]:
    """``"csv,json"`` -> ("csv", "json"); argparse turns the error into a usage error."""
    formats = tuple(dict.fromkeys(f.strip() for f in value.split(",") if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}"
        )
    return formats


def exported_columns(snap: Snapshot, table: str, include_private: bool) -> list[str]:
    """The columns of ``table`` an export writes, in schema order (live schema)."""
    hidden = () if include_private else PRIVATE_COLUMNS.get(table, ())
    return [c for c in snap.columns(table) if c not in hidden]


# --- writers: one per format, fed the same batches -------------------------------------


class _Writer(Protocol):
    path: Path

    def write(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...


class _CsvWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self._writer = pacsv.CSVWriter(str(path), schema, write_options=_CSV_OPTIONS)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()


class _ParquetWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self._schema = schema
        self._writer = pq.ParquetWriter(path, schema)
        self._empty = True

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        self._empty = False

    def close(self) -> None:
        if self._empty:
            self._writer.write_table(self._schema.empty_table())
        self._writer.close()


_CONTROL = [chr(c) for c in range(0x20)]


def _has(values: pa.Array, pattern: str, *, regex: bool = False) -> bool:
    """Whether any string of ``values`` contains ``pattern`` (a literal, or a regex)."""
    found = (pc.match_substring_regex if regex else pc.match_substring)(values, pattern)
    return bool(pc.any(found).as_py())


def _json_escape(values: pa.Array) -> pa.Array:
    """The text of each string escaped for a JSON string literal (RFC 8259), unquoted.

    Each replacement is a pass over the whole batch, so each runs only where one scan
    found its character: a batch of plain strings costs one scan, and JSON text (the
    answer key) one scan per character it holds.
    """
    if not _has(values, '["\\\\\\x00-\\x1f]', regex=True):
        return values
    if _has(values, "\\"):
        values = pc.replace_substring(values, "\\", "\\\\")
    if _has(values, '"'):
        values = pc.replace_substring(values, '"', '\\"')
    if _has(values, "[\\x00-\\x1f]", regex=True):  # rare (prompts refuse them)
        for char in _CONTROL:
            if _has(values, char):
                values = pc.replace_substring(values, char, f"\\u{ord(char):04x}")
    return values


def _json_value(values: pa.Array) -> pa.Array:
    """JSON text of each value; null for nulls and for non-finite floats (JSON has none)."""
    if pa.types.is_string(values.type):
        text = pc.binary_join_element_wise('"', _json_escape(values), '"', "")
    else:
        text = pc.cast(values, pa.string())  # shortest text that reads back exactly
        if pa.types.is_floating(values.type):
            text = pc.if_else(pc.is_finite(values), text, pa.scalar(None, pa.string()))
    return pc.fill_null(text, "null")


class _JsonWriter:
    """A JSON array of objects, one per row, built by Arrow kernels batch by batch.

    Each row's text is ``,\\n{"col":value,...}`` (the file's first comma is skipped),
    made by one element-wise join of the keys and each column's JSON text. A string
    column without nulls has its quotes folded into the keys around it (one pass fewer).
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self._keys = [json.dumps(f.name) + ":" for f in schema]
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close())
        self._file.write(b"[")
        self._first = True

    def write(self, batch: pa.RecordBatch) -> None:
        parts: list[pa.Array | str] = []
        literal = ",\n{"
        for key, column in zip(self._keys, batch.columns, strict=True):
            literal += key
            if pa.types.is_string(column.type) and column.null_count == 0:
                parts += [literal + '"', _json_escape(column)]
                literal = '",'
            else:
                parts += [literal, _json_value(column)]
                literal = ","
        parts.append(literal[:-1] + "}")  # the closing quote, if any, and the brace
        rows = pc.binary_join_element_wise(*parts, "")
        offsets = rows.buffers()[1]
        start, end = (
            int.from_bytes(offsets[4 * i : 4 * i + 4], sys.byteorder, signed=True)
            for i in (rows.offset, rows.offset + len(rows))
        )
        data = memoryview(rows.buffers()[2])[start:end]
        self._file.write(data[1:] if self._first else data)
        self._first = False

    def close(self) -> None:
        self._file.write(b"\n]\n")
        self._file.close()


_WRITERS = {"csv": _CsvWriter, "json": _JsonWriter, "parquet": _ParquetWriter}


# --- reading ---------------------------------------------------------------------------


def _answered(snap: Snapshot) -> pa.Array:
    """Per round (in rowid order): whether it has a guess."""
    guessed = pa.chunked_array(
        [b.column(0) for b in snap.batches("guesses", ["round_id"])], pa.string()
    ).combine_chunks()
    ids = pa.chunked_array([b.column(0) for b in snap.batches("rounds", ["id"])], pa.string())
    return pc.is_in(ids.combine_chunks(), value_set=guessed)


def _public_batches(snap: Snapshot, table: str, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The batches of ``table`` with each unanswered round's answer columns nulled."""
    hide = [c for c in ANSWER_COLUMNS.get(table, ()) if c in columns]
    if not hide:
        yield from snap.batches(table, columns)
        return
    answered = _answered(snap)
    start = 0
    for batch in snap.batches(table, columns):
        mask = answered.slice(start, batch.num_rows)
        start += batch.num_rows
        arrays = [
            pc.if_else(mask, col, pa.scalar(None, col.type)) if name in hide else col
            for name, col in zip(batch.schema.names, batch.columns, strict=True)
        ]
        yield pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def _is_time(field: pa.Field) -> bool:
    return field.name.endswith(TIME_SUFFIX) and pa.types.is_floating(field.type)


def with_utc_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with a string ``<name>_utc`` field after each epoch-seconds field."""
    fields: list[pa.Field] = []
    for f in schema:
        fields.append(f)
        if _is_time(f):
            fields.append(pa.field(f.name + UTC_SUFFIX, pa.string()))
    return pa.schema(fields)


def _iso_utc(seconds: pa.Array) -> pa.Array:
    """Epoch seconds as ISO 8601 UTC text, to the microsecond ("…T14:22:20.123456Z")."""
    micros = pc.cast(pc.round(pc.multiply(seconds, 1_000_000.0)), pa.int64())
    stamps = pc.cast(micros, pa.timestamp("us", tz="UTC"))
    return pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ")


def with_utc(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with each epoch-seconds column followed by its ISO 8601 UTC text
    (``schema``: ``with_utc_schema`` of the batch's schema)."""
    arrays: list[pa.Array] = []
    for f, column in zip(batch.schema, batch.columns, strict=True):
        arrays.append(column)
        if _is_time(f):
            arrays.append(_iso_utc(column))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _write_table(
    snap: Snapshot,
    out: Path,
    table: str,
    formats: Sequence[str],
    include_private: bool,
    pool: ThreadPoolExecutor,
) -> list[Path]:
    """Read ``table`` once and write it in every format; return the paths."""
    columns = exported_columns(snap, table, include_private)
    schema = with_utc_schema(snap.schema(table, columns))
    writers: list[_Writer] = [_WRITERS[f](out / f"{table}.{f}", schema) for f in formats]
    batches = (
        snap.batches(table, columns) if include_private else _public_batches(snap, table, columns)
    )
    timed = (with_utc(batch, schema) for batch in batches)
    pending: list[Future[None]] = []
    try:
        for batch in timed:  # the next batch is read while the writers take this one
            for done in pending:
                done.result()
            pending = [pool.submit(w.write, batch) for w in writers]
        for done in pending:
            done.result()
    finally:
        batches.close()  # closes the snapshot's cursor now, even after an error
        wait(pending)  # no writer is still writing when it is closed
        for w in writers:
            w.close()
    return [w.path for w in writers]


def _write_tables(
    snap: Snapshot,
    out: Path,
    formats: Sequence[str],
    include_private: bool,
    pool: ThreadPoolExecutor,
) -> list[Path]:
    written: list[Path] = []
    for table in TABLES:
        written += _write_table(snap, out, table, formats, include_private, pool)
    return written


def export(
    store: Store,
    out: Path,
    formats: Iterable[str] = FORMATS,
    *,
    include_private: bool = False,
) -> list[Path]:
    """Write every table in every format, and summary.json, under ``out``; return paths.

    Everything comes from one snapshot (see the module docstring). ``include_private``
    adds what the public export leaves out.
    """
    # Imported here, not at the top: the CLI imports it (scipy) while SQLite checks the file.
    from core.game import stats

    formats = parse_formats(",".join(formats))
    out.mkdir(parents=True, exist_ok=True)
    with (
        store.snapshot() as snap,
        ThreadPoolExecutor(max_workers=len(formats), thread_name_prefix="export") as pool,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-read") as reader,
    ):
        tables = reader.submit(_write_tables, snap, out, formats, include_private, pool)
        # Meanwhile, on this thread's connection, which the snapshot pinned to its state.
        summary = stats.summary(store)
        written = tables.result()
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    written.append(summary_path)
    return written


def export_zip(
    store_or_db_path: Store | Path,
    out_path: Path,
    formats: Iterable[str] = ("csv",),
    *,
    include_private: bool = False,
) -> Path:
    """Export into a zip file at ``out_path`` (for the app's download button); return it.

    A path must name an existing database (DatabaseMissingError otherwise).
    """
    out_path = Path(out_path)
    if isinstance(store_or_db_path, Store):
        store, owned = store_or_db_path, False
    else:
        db = Path(store_or_db_path)
        store, owned = Store(db, default_images_dir(db), must_exist=True), True
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = export(store, Path(tmp), formats, include_private=include_private)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            partial = out_path.with_name(out_path.name + ".partial")
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for path in files:
                    zf.write(path, arcname=path.name)
            partial.replace(out_path)
    finally:
        if owned:
            store.close()
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.game.export",
        description="Export generations, images, rounds, guesses and summary.json.",
    )
    parser.add_argument("--db", type=Path, default=Path("data/arena.db"), help="SQLite file")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--format",
        type=parse_formats,
        default=FORMATS,
        help=f"comma-separated subset of {','.join(FORMATS)} (default: all)",
    )
    parser.add_argument(
        "--include-private",
        action="store_true",
        help="also export image file names, hashes, the per-image PSNR, SSIM and FLIP mean "
        "error against BF16, and the answer keys of unanswered rounds (never publish this)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        # The store's start (quick_check: SQLite, no GIL) runs while Python imports the
        # statistics (scipy: GIL-bound), on the other core.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-open") as opener:
            opening = opener.submit(Store, args.db, default_images_dir(args.db), must_exist=True)
            importlib.import_module("core.game.stats")
            store = opening.result()
        with store:
            paths = export(store, args.out, args.format, include_private=args.include_private)
    except DatabaseError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    for path in paths:
        logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    # This one-shot command makes no reference cycles worth collecting (rows never become
    # Python objects), so Python's cyclic collector would only walk the imported modules'
    # objects, again and again during the imports and once more at exit: about 0.4 s of
    # CPU per CSV export of 1M guesses + 1M rounds on the 2-core dev machine (user time
    # from /usr/bin/time, 2 runs each way; py-spy shows the collector). Off for the
    # process's life, and what exists at the end is frozen so the exit's collection
    # skips it. The command only: main() and export() called in a process (the app,
    # the tests) leave the collector alone.
    gc.disable()
    code = main()
    gc.freeze()
    raise SystemExit(code)
