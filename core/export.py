"""Export the stored data: ``python -m core.export --db data/arena.db --out DIR``.

Writes one file per table and format (``generations.csv``, ``guesses.parquet``, …) and
``summary.json`` (core.stats.summary). Rows are streamed in batches from one consistent
snapshot. The answer key of a round nobody has answered is exported as null.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core import stats
from core.errors import DatabaseError
from core.storage import TABLES, Snapshot, Store, default_images_dir

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "json", "parquet")

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


def _write_csv(path: Path, columns: list[str], batches: Iterable[list[tuple]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for batch in batches:
            writer.writerows(batch)


def _write_json(path: Path, columns: list[str], batches: Iterable[list[tuple]]) -> None:
    """A JSON array of objects, written row by row (never the whole table in memory)."""
    encode = json.JSONEncoder(ensure_ascii=False).encode
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        first = True
        for batch in batches:
            chunk = ",\n".join(encode(dict(zip(columns, row, strict=True))) for row in batch)
            f.write(("\n" if first else ",\n") + chunk)
            first = False
        f.write("\n]\n")


def _write_parquet(
    path: Path, table: str, columns: list[str], batches: Iterable[list[tuple]]
) -> None:
    schema = pa.schema([(c, _arrow_type(table, c)) for c in columns])
    with pq.ParquetWriter(path, schema) as writer:
        for batch in batches:
            arrays = [
                pa.array([row[i] for row in batch], type=schema.field(i).type)
                for i in range(len(columns))
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))


def _write_table(snap: Snapshot, out: Path, table: str, fmt: str) -> Path:
    columns = snap.columns(table)
    path = out / f"{table}.{fmt}"
    batches = snap.rows(table, batch_size=50_000)
    if fmt == "csv":
        _write_csv(path, columns, batches)
    elif fmt == "json":
        _write_json(path, columns, batches)
    else:
        _write_parquet(path, table, columns, batches)
    return path


def export(store: Store, out: Path, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write every table in every format, and summary.json, under ``out``; return paths."""
    formats = parse_formats(",".join(formats))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with store.snapshot() as snap:
        for table in TABLES:
            for fmt in formats:
                written.append(_write_table(snap, out, table, fmt))
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(stats.summary(store), indent=2) + "\n", encoding="utf-8")
    written.append(summary_path)
    return written


def export_zip(
    store_or_db_path: Store | Path, out_path: Path, formats: Iterable[str] = ("csv",)
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
            files = export(store, Path(tmp), formats)
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
        prog="python -m core.export",
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.db.is_file():
        parser.error(f"no database at {args.db}")
    try:
        store = Store(args.db, default_images_dir(args.db), must_exist=True)
    except DatabaseError as e:
        parser.error(str(e))
    with store:
        paths = export(store, args.out, args.format)
    for path in paths:
        logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
