"""core.store.migrations: exact schema (names and types), upgrades from every older step
(including the pre-sqlite-utils ``migrations`` record), and the adoption check: foreign,
newer and damaged databases are refused and left byte-identical."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import sqlite_utils

from core.errors import DatabaseCorruptError, ForeignDatabaseError, NewerDatabaseError
from core.store.migrations import MIGRATIONS, migration_names
from core.store.storage import Store
from tests.data_helpers import make_generation, make_store

EXPECTED_SCHEMA = {
    "_sqlite_migrations": {
        "id": "INTEGER",
        "migration_set": "TEXT",
        "name": "TEXT",
        "applied_at": "TEXT",
    },
    "generations": {
        "id": "INTEGER",
        "prompt": "TEXT",
        "seed": "INTEGER",
        "steps": "INTEGER",
        "guidance": "REAL",
        "width": "INTEGER",
        "height": "INTEGER",
        "max_sequence_length": "INTEGER",
        "model": "TEXT",
        "device": "TEXT",
        "placement": "TEXT",
        "versions": "TEXT",
        "synthetic": "INTEGER",
        "created_at": "REAL",
        "resident_weight_bytes": "INTEGER",
        "out_of_domain": "INTEGER",
        "origin": "TEXT",
        "moderation": "TEXT",
        "moderated_at": "REAL",
    },
    "images": {
        "generation_id": "INTEGER",
        "variant": "TEXT",
        "path": "TEXT",
        "sha256": "TEXT",
        "seconds": "REAL",
        "weight_bytes": "INTEGER",
        "shared_weight_bytes": "INTEGER",
        "peak_allocated_bytes": "INTEGER",
        "peak_reserved_bytes": "INTEGER",
        "peak_rss_bytes": "INTEGER",
        "psnr": "REAL",
        "ssim": "REAL",
        "activation_peak_bytes": "INTEGER",
        "standalone_peak_bytes": "INTEGER",
        "flip_mean": "REAL",
    },
    "rounds": {
        "id": "TEXT",
        "generation_id": "INTEGER",
        "mode": "TEXT",
        "session_id": "TEXT",
        "compared_variant": "TEXT",
        "answer_key": "TEXT",
        "created_at": "REAL",
        "expires_at": "REAL",
    },
    "guesses": {
        "id": "INTEGER",
        "round_id": "TEXT",
        "session_id": "TEXT",
        "generation_id": "INTEGER",
        "mode": "TEXT",
        "compared_variant": "TEXT",
        "answer": "TEXT",
        "variant": "TEXT",
        "correct": "INTEGER",
        "cant_tell": "INTEGER",
        "seconds": "REAL",
        "created_at": "REAL",
    },
}
NAMES = [
    "m001_initial",
    "m002_covering_indexes",
    "m003_memory_per_variant",
    "m004_verdict_indexes",
    "m005_out_of_domain",
    "m006_pool_and_moderation",
    "m007_perceptual",
]
INDEXES = {
    "guesses_round_id",
    "rounds_session_generation",
    "rounds_session_created",
    "guesses_groups",
    "guesses_generation",
    "guesses_session",
    "guesses_mode_session",
    "generations_origin",
}


def _indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        conn.close()


def test_exact_schema_names_and_types(tmp_path):
    store = make_store(tmp_path)
    assert store.schema() == EXPECTED_SCHEMA
    assert store.applied_migrations() == migration_names() == NAMES
    assert _indexes(tmp_path / "arena.db") >= INDEXES
    conn = sqlite3.connect(tmp_path / "arena.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    store.close()
    again = make_store(tmp_path)  # re-opening applies nothing twice
    assert again.applied_migrations() == NAMES
    assert again.schema() == EXPECTED_SCHEMA
    again.close()


def _database_at(path: Path, applied: int, *, legacy: bool) -> None:
    """A database as an older version left it: the first ``applied`` migrations, recorded
    in sqlite-utils' table, or (``legacy``) in the ``migrations`` table of old versions."""
    db = sqlite_utils.Database(path)
    MIGRATIONS.apply(db, stop_before=NAMES[applied:])
    if legacy:
        db.execute("DROP TABLE _sqlite_migrations")
        db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        for name in NAMES[:applied]:
            db.execute("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))
    if applied:
        db.execute(
            "INSERT INTO generations (prompt, seed, steps, guidance, width, height, "
            "max_sequence_length, model, device, placement, versions, synthetic, created_at) "
            "VALUES ('kept', 1, 4, 0.0, 64, 64, 256, 'tiny', 'cpu', 'resident', '{}', 1, 1.0)"
        )
    db.conn.commit()
    db.close()


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-record", "sqlite-utils-record"])
@pytest.mark.parametrize("applied", range(1, len(NAMES) + 1))
def test_upgrade_from_every_older_migration(tmp_path, applied, legacy):
    path = tmp_path / "arena.db"
    _database_at(path, applied, legacy=legacy)
    store = make_store(tmp_path)
    assert store.applied_migrations() == NAMES
    assert store.schema() == EXPECTED_SCHEMA  # the legacy record table is gone
    assert _indexes(path) >= INDEXES
    assert store.generation(1).prompt == "kept"
    store.save_generation(make_generation())  # and it works
    assert store.integrity_check() == "ok"
    store.close()


def test_images_stored_before_m007_have_no_flip_figure(tmp_path):
    """m007 adds the FLIP mean: an image stored before it keeps its PSNR / SSIM and gets
    NULL there (shown as not measured); images stored after it carry all three."""
    path = tmp_path / "arena.db"
    _database_at(path, NAMES.index("m007_perceptual"), legacy=False)
    db = sqlite_utils.Database(path)
    db["images"].insert(
        {
            "generation_id": 1,
            "variant": "int8",
            "path": "1/int8.png",
            "sha256": "0" * 64,
            "seconds": 1.0,
            "weight_bytes": 10,
            "psnr": 31.5,
            "ssim": 0.97,
        }
    )
    db.close()
    store = make_store(tmp_path)
    old = store.image_stats(1)["int8"]
    assert (old["psnr"], old["ssim"], old["flip_mean"]) == (31.5, 0.97, None)
    generation = make_generation()
    generation.results["int8"].flip_mean = 0.125
    gid = store.save_generation(generation)
    assert store.image_stats(gid)["int8"]["flip_mean"] == 0.125
    store.close()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('not a game')")
    conn.commit()
    conn.close()


def _own_guesses_table(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE guesses (id INTEGER PRIMARY KEY, word TEXT)")
    conn.commit()
    conn.close()


def _newer(path: Path) -> None:
    _database_at(path, len(NAMES), legacy=False)
    db = sqlite_utils.Database(path)
    db.execute("ALTER TABLE guesses ADD COLUMN confidence REAL")
    db["_sqlite_migrations"].insert(
        {"migration_set": "spot", "name": "m003_confidence", "applied_at": "2030-01-01"}
    )
    db.close()


def _newer_legacy(path: Path) -> None:
    _database_at(path, len(NAMES), legacy=True)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO migrations VALUES ('m003_confidence', 0.0)")
    conn.commit()
    conn.close()


def _extra_column(path: Path) -> None:
    _database_at(path, len(NAMES), legacy=False)
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE rounds ADD COLUMN note TEXT")
    conn.commit()
    conn.close()


def _damaged(root_of: str):
    """A real database of ours whose ``root_of`` root page (table or index) is overwritten."""

    def make(path: Path) -> None:
        store = Store(path, path.parent.parent / "made-images")
        for i in range(3):
            store.save_generation(make_generation(i))
        store.close()  # the last close checkpoints the WAL into the file
        conn = sqlite3.connect(path)
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        if root_of == "sqlite_master":  # page 1, after the 100-byte file header
            start, end = 100, page_size
        else:
            (root,) = conn.execute(
                "SELECT rootpage FROM sqlite_master WHERE name = ?", (root_of,)
            ).fetchone()
            start, end = (root - 1) * page_size, root * page_size
        conn.close()
        data = bytearray(path.read_bytes())
        data[start:end] = (b"\x0d\xff\x13" * page_size)[: end - start]
        path.write_bytes(bytes(data))

    return make


REFUSED = {
    "foreign": (_foreign, ForeignDatabaseError),
    "own-guesses-table": (_own_guesses_table, ForeignDatabaseError),
    "newer": (_newer, NewerDatabaseError),
    "newer-legacy-record": (_newer_legacy, NewerDatabaseError),
    "extra-column": (_extra_column, ForeignDatabaseError),
    "damaged-table-root": (_damaged("guesses"), DatabaseCorruptError),
    "damaged-index-root": (_damaged("guesses_round_id"), DatabaseCorruptError),
    "damaged-schema-page": (_damaged("sqlite_master"), DatabaseCorruptError),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused_databases_are_left_byte_identical(tmp_path, case):
    make, error = REFUSED[case]
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder / "arena.db"
    make(path)
    before = _files(folder)
    with pytest.raises(error, match="left untouched"):
        Store(path, tmp_path / "images")
    after = _files(folder)
    # A reader of a WAL-mode file (our own, damaged ones) makes SQLite's empty -wal and
    # its -shm index beside it, as any reader does; the database itself is untouched, and
    # a rollback-journal file (the foreign ones) gets nothing beside it.
    if "arena.db-wal" not in before:
        assert after.pop("arena.db-wal", b"") == b""
        after.pop("arena.db-shm", None)
    assert after == before
    assert not (tmp_path / "images").exists()
