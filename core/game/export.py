"""Export the stored data: ``python -m core.game.export --db data/arena.db --out DIR``.

Writes one file per table and format (``generations.csv``, ``guesses.parquet``, …) and
``summary.json`` (core.game.stats.summary). Rows are streamed in batches from one consistent
snapshot. The answer key of a round nobody has answered is exported as null.

Two kinds of export. The *public* one (the default, and the app's download) leaves out
every column of ``images`` that could tie a served image to its variant while its
generation can still be played (and every stored generation can, in a new round): the
stored file name, the bytes' SHA-256, and PSNR / SSIM against BF16 (exact per-image
figures a player could recompute from two served images to spot the pair). The
*private* one (``--include-private``, for the operator) adds those columns.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core.errors import DatabaseError
from core.game import stats
from core.store.storage import TABLES, Snapshot, Store, default_images_dir

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "json", "parquet")
# Columns only a private export holds (see the module docstring).
PRIVATE_COLUMNS: dict[str, frozenset[str]] = {
    "images": frozenset({"path", "sha256", "psnr", "ssim"}),
}
# A header row; quotes only where a value needs them; nulls as empty fields.
_CSV_OPTIONS = pacsv.WriteOptions(include_header=True, quoting_style="needed")

# Arrow types of the exported columns (SQLite is dynamically typed; these are the types
# the schema declares). Unlisted columns are strings.
_INT_COLUMNS = {
    "id",
    "seed",
    "steps",
    "width",
    "height",
    "max_sequence_length",
    "synthetic",
    "generation_id",
    "weight_bytes",
    "shared_weight_bytes",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "peak_rss_bytes",
    "correct",
    "cant_tell",
}
_FLOAT_COLUMNS = {"guidance", "created_at", "expires_at", "seconds", "psnr", "ssim"}


def _arrow_type(table: str, column: str) -> pa.DataType:
    if column == "id" and table == "rounds":
        return pa.string()
    if column in _INT_COLUMNS:
        return pa.int64()
    if column in _FLOAT_COLUMNS:
        return pa.float64()
    return pa.string()


def parse_formats(value: str) -> tuple[str, ...]:
    """``"csv,json"`` -> ("csv", "json"); argparse turns the ValueError into a usage error."""
    formats = tuple(dict.fromkeys(f.strip() for f in value.split(",") if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}"
        )
    return formats


def _write_json(path: Path, batches: Iterable[list[str]]) -> None:
    """A JSON array of objects, written batch by batch (never the whole table in memory)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        first = True
        for batch in batches:
            f.write(("\n" if first else ",\n") + ",\n".join(batch))
            first = False
        f.write("\n]\n")


def _write_table(
    snap: Snapshot, out: Path, table: str, formats: tuple[str, ...], private: bool = False
) -> list[Path]:
    """Read ``table`` once and write it as CSV and/or Parquet (one Arrow batch for both)."""
    columns = snap.columns(table)
    kept = _kept_indexes(table, columns, private)
    schema = pa.schema([(columns[i], _arrow_type(table, columns[i])) for i in kept])
    paths = {fmt: out / f"{table}.{fmt}" for fmt in formats}
    if "csv" in formats or "parquet" in formats:
        with ExitStack() as stack:
            csv_writer = parquet_writer = None
            if "csv" in formats:
                sink = stack.enter_context(pa.OSFile(str(paths["csv"]), "wb"))
                csv_writer = stack.enter_context(
                    pacsv.CSVWriter(sink, schema, write_options=_CSV_OPTIONS)
                )
            if "parquet" in formats:
                parquet_writer = stack.enter_context(pq.ParquetWriter(paths["parquet"], schema))
            wrote_any = False
            for batch in snap.rows(table, batch_size=50_000):
                values = list(zip(*batch, strict=True))
                arrays = [
                    pa.array(values[i], type=f.type) for i, f in zip(kept, schema, strict=True)
                ]
                record_batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
                if csv_writer is not None:
                    csv_writer.write_batch(record_batch)
                if parquet_writer is not None:
                    parquet_writer.write_batch(record_batch)
                wrote_any = True
            if not wrote_any and parquet_writer is not None:
                parquet_writer.write_table(schema.empty_table())
    return list(paths.values())


def _kept_indexes(table: str, columns: list[str], private: bool) -> list[int]:
    """Indexes of the columns an export of this kind writes."""
    hidden = frozenset() if private else PRIVATE_COLUMNS.get(table, frozenset())
    return [i for i, c in enumerate(columns) if c not in hidden]


def export(
    store: Store, out: Path, formats: Iterable[str] = FORMATS, *, private: bool = False
) -> list[Path]:
    """Write every table in every format, and summary.json, under ``out``; return paths.

    ``private``: also write the columns that tie images to variants (PRIVATE_COLUMNS);
    never for anything served to the public.

    JSON is written by a second thread from a second view of the same database state:
    SQLite builds the JSON text with the GIL released, so it overlaps with the CSV and
    Parquet work on a second core.
    """
    formats = parse_formats(",".join(formats))
    out.mkdir(parents=True, exist_ok=True)
    tabular = tuple(f for f in formats if f != "json")
    with (
        store.snapshots(2) as (snap, json_snap),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-json") as pool,
    ):
        json_paths = (
            pool.submit(_write_json_tables, json_snap, out, private) if "json" in formats else None
        )
        written = []
        if tabular:
            for table in TABLES:
                written += _write_table(snap, out, table, tabular, private)
        if json_paths is not None:
            written += json_paths.result()
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(stats.summary(store), indent=2) + "\n", encoding="utf-8")
    written.append(summary_path)
    return written


def _write_json_tables(snap: Snapshot, out: Path, private: bool = False) -> list[Path]:
    paths = []
    for table in TABLES:
        paths.append(out / f"{table}.json")
        batches = snap.json_rows(table, batch_size=50_000)
        hidden = frozenset() if private else PRIVATE_COLUMNS.get(table, frozenset())
        if hidden:  # small tables only (images: three rows per generation)
            batches = (
                [
                    json.dumps({k: v for k, v in json.loads(row).items() if k not in hidden})
                    for row in batch
                ]
                for batch in batches
            )
        _write_json(paths[-1], batches)
    return paths


def export_zip(
    store_or_db_path: Store | Path,
    out_path: Path,
    formats: Iterable[str] = ("csv",),
    *,
    private: bool = False,
) -> Path:
    """Export into a zip file at ``out_path`` (for the app's download button: public, CSV
    and summary.json); return it.

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
            files = export(store, Path(tmp), formats, private=private)
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
        help="also write the columns that tie an image to its variant (images: "
        + ", ".join(sorted(PRIVATE_COLUMNS["images"]))
        + "); for the operator only, never to publish while rounds can be played",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.db.is_file():
        parser.error(f"no database at {args.db}")
    try:
        store = Store(args.db, default_images_dir(args.db), must_exist=True)
    except DatabaseError as e:
        parser.error(str(e))
    with store:
        paths = export(store, args.out, args.format, private=args.include_private)
    for path in paths:
        logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
