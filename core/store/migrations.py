"""The schema as named, ordered migrations, and the check that a file is ours to migrate.

The migrations are a ``sqlite_utils.migrations.Migrations`` set (recorded in sqlite-utils'
``_sqlite_migrations`` table). Databases made before that record their migrations in a
``migrations`` table of our own (name, applied_at REAL); ``bridge_legacy_record`` moves
those records into sqlite-utils' table, in the same transaction as the migrations that
follow, so an existing database upgrades in place.

``judge`` decides, from a read-only connection and without writing anything, whether a
file is *empty* (no tables: ours to create), *ours* (exactly our tables, at a migration
this version knows), *foreign* (anything else) or *newer* (our record names a migration
this version does not know). Only the first two may be written.
"""

from __future__ import annotations

import datetime
import enum
import sqlite3

import sqlite_utils
from sqlite_utils.migrations import Migrations

from core.errors import ForeignDatabaseError, NewerDatabaseError

MIGRATIONS = Migrations("spot")
RECORD_TABLE = Migrations.migrations_table  # "_sqlite_migrations"
LEGACY_RECORD_TABLE = "migrations"  # (name TEXT PRIMARY KEY, applied_at REAL)
DATA_TABLES: tuple[str, ...] = ("generations", "images", "rounds", "guesses")


@MIGRATIONS()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["generations"].create(
        {
            "id": int,
            "prompt": str,
            "seed": int,
            "steps": int,
            "guidance": float,
            "width": int,
            "height": int,
            "max_sequence_length": int,
            "model": str,
            "device": str,
            "placement": str,
            "versions": str,
            "synthetic": int,
            "created_at": float,
        },
        pk="id",
        not_null=[
            "prompt",
            "seed",
            "steps",
            "guidance",
            "width",
            "height",
            "max_sequence_length",
            "model",
            "device",
            "placement",
            "versions",
            "synthetic",
            "created_at",
        ],
    )
    db["images"].create(
        {
            "generation_id": int,
            "variant": str,
            "path": str,
            "sha256": str,
            "seconds": float,
            "weight_bytes": int,
            "shared_weight_bytes": int,
            "peak_allocated_bytes": int,
            "peak_reserved_bytes": int,
            "peak_rss_bytes": int,
            "psnr": float,
            "ssim": float,
        },
        pk=("generation_id", "variant"),
        foreign_keys=[("generation_id", "generations", "id")],
        not_null=["generation_id", "variant", "path", "sha256", "seconds", "weight_bytes"],
    )
    db["rounds"].create(
        {
            "id": str,
            "generation_id": int,
            "mode": str,
            "session_id": str,
            # The quantized variant of a duel (NULL in a trio); copied to guesses for stats.
            "compared_variant": str,
            "answer_key": str,
            "created_at": float,
            "expires_at": float,
        },
        pk="id",
        foreign_keys=[("generation_id", "generations", "id")],
        not_null=[
            "generation_id",
            "mode",
            "session_id",
            "answer_key",
            "created_at",
            "expires_at",
        ],
    )
    db["guesses"].create(
        {
            "id": int,
            "round_id": str,
            # Copies of the round's immutable fields, so statistics scan one table.
            "session_id": str,
            "generation_id": int,
            "mode": str,
            "compared_variant": str,
            "answer": str,
            "variant": str,
            "correct": int,
            "cant_tell": int,
            "seconds": float,
            "created_at": float,
        },
        pk="id",
        foreign_keys=[("round_id", "rounds", "id"), ("generation_id", "generations", "id")],
        not_null=[
            "round_id",
            "session_id",
            "generation_id",
            "mode",
            "answer",
            "cant_tell",
            "seconds",
            "created_at",
        ],
    )
    # One guess per round, enforced by the database itself.
    db["guesses"].create_index(["round_id"], index_name="guesses_round_id", unique=True)
    # Pool and rate-limit queries: a session's rounds, by generation and by time.
    db["rounds"].create_index(
        ["session_id", "generation_id"], index_name="rounds_session_generation"
    )
    db["rounds"].create_index(["session_id", "created_at"], index_name="rounds_session_created")
    # Score and streak of one session, in guess order.
    db["guesses"].create_index(["session_id", "id"], index_name="guesses_session")
    # Per-prompt statistics.
    db["guesses"].create_index(["generation_id", "mode"], index_name="guesses_generation")


@MIGRATIONS()
def m002_covering_indexes(db: sqlite_utils.Database) -> None:
    # Statistics over a million guesses read covering indexes instead of the table.
    db.execute("DROP INDEX guesses_generation")
    db.execute("DROP INDEX guesses_session")
    db["guesses"].create_index(
        ["mode", "compared_variant", "variant", "correct", "cant_tell"],
        index_name="guesses_groups",
    )
    db["guesses"].create_index(
        ["mode", "generation_id", "correct", "cant_tell"], index_name="guesses_generation"
    )
    db["guesses"].create_index(
        ["session_id", "id", "correct", "cant_tell"], index_name="guesses_session"
    )


@MIGRATIONS()
def m003_memory_per_variant(db: sqlite_utils.Database) -> None:
    # Honest memory per variant (core.records.VariantResult): the activation peak above
    # what was allocated just before the call, and the standalone-equivalent peak (GPU;
    # NULL on the CPU and in older rows); the resident total of all loaded weights.
    db["images"].add_column("activation_peak_bytes", int)
    db["images"].add_column("standalone_peak_bytes", int)
    db["generations"].add_column("resident_weight_bytes", int)


@MIGRATIONS()
def m004_verdict_indexes(db: sqlite_utils.Database) -> None:
    # The verdicts count decided answers per player and per generation, by mode and duel
    # variant: covering indexes in that order keep a million guesses under a second
    # (without them each count looked every guess up in the table).
    db.execute("DROP INDEX guesses_generation")
    db["guesses"].create_index(
        ["mode", "generation_id", "compared_variant", "correct", "cant_tell"],
        index_name="guesses_generation",
    )
    db["guesses"].create_index(
        ["mode", "session_id", "compared_variant", "correct", "cant_tell"],
        index_name="guesses_mode_session",
    )


@MIGRATIONS()
def m005_out_of_domain(db: sqlite_utils.Database) -> None:
    # 1 for a generation whose prompt its model cannot draw (a micro prompt with words or
    # symbols outside its vocabulary, stored before prompts were checked): it leaves the
    # ready pool and the verdicts (Store.mark_out_of_domain).
    db["generations"].add_column("out_of_domain", int, not_null_default=0)


@MIGRATIONS()
def m006_pool_and_moderation(db: sqlite_utils.Database) -> None:
    # A generation imported from a pool made elsewhere (core.game.pool) names where it came
    # from: "<deployment>:<generation id there>" (NULL: made here). Unique, so an import
    # that runs again adds nothing.
    db["generations"].add_column("origin", str)
    db["generations"].create_index(["origin"], index_name="generations_origin", unique=True)
    # Moderation (core.game.moderate): NULL, "reported" (a player reported a round of it:
    # out of the pool and the verdicts at once), "hidden" (an operator confirmed) or
    # "restored" (an operator put it back); when it last changed (seconds since the epoch).
    db["generations"].add_column("moderation", str)
    db["generations"].add_column("moderated_at", float)


@MIGRATIONS()
def m007_perceptual(db: sqlite_utils.Database) -> None:
    # The mean LDR-FLIP error of each quantized image against its generation's BF16 image
    # (core.engine.perceptual, at core.records.FLIP_PPD pixels per degree). NULL for BF16
    # itself and for every image stored before this migration: "not measured".
    db["images"].add_column("flip_mean", float)


def migration_names() -> list[str]:
    """Every migration this version knows, in the order they apply."""
    return [m.name for m in MIGRATIONS._migrations]


class Standing(enum.Enum):
    """What ``judge`` found a database to be."""

    EMPTY = "empty"  # no tables: ours to create
    OURS = "ours"  # our tables at a migration this version knows (maybe older)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }


def _applied(conn: sqlite3.Connection, tables: set[str]) -> list[str]:
    """Migration names recorded in this database, in the order they were applied."""
    names: list[str] = []
    if LEGACY_RECORD_TABLE in tables:
        names += [
            r[0] for r in conn.execute(f"SELECT name FROM {LEGACY_RECORD_TABLE} ORDER BY rowid")
        ]
    if RECORD_TABLE in tables:
        names += [
            r[0]
            for r in conn.execute(
                f"SELECT name FROM {RECORD_TABLE} WHERE migration_set = ? ORDER BY rowid",
                (MIGRATIONS.name,),
            )
        ]
    return names


def column_types(conn: sqlite3.Connection, table: str) -> dict[str, tuple[str, bool, int]]:
    """Column name -> (declared type, NOT NULL, position in the primary key), in order."""
    return {
        r[1]: (r[2].upper(), bool(r[3]), r[5]) for r in conn.execute(f"PRAGMA table_info({table})")
    }


def reference_schema(applied: int) -> dict[str, dict[str, tuple[str, bool, int]]]:
    """The data tables' columns of a database built by the first ``applied`` migrations."""
    db = sqlite_utils.Database(memory=True)
    names = migration_names()
    MIGRATIONS.apply(db, stop_before=names[applied:])
    return {t: column_types(db.conn, t) for t in _tables(db.conn) if t in DATA_TABLES}


def judge(conn: sqlite3.Connection, where: str) -> Standing:
    """Decide whether the database behind ``conn`` may be written by this version.

    Raises ForeignDatabaseError (tables, columns or a migration record that are not ours)
    or NewerDatabaseError (a migration this version does not know). Reads only.
    """
    tables = _tables(conn)
    if not tables:
        return Standing.EMPTY
    known = migration_names()
    try:
        applied = _applied(conn, tables)
    except sqlite3.OperationalError:  # a "migrations" table of some other program
        applied = []
    if not set(applied) & set(known):
        raise ForeignDatabaseError(
            f"{where} holds tables that are not this game's ({', '.join(sorted(tables))}); "
            "it was left untouched"
        )
    unknown = [n for n in applied if n not in known]
    if unknown:
        raise NewerDatabaseError(
            f"{where} was migrated by a newer version ({', '.join(unknown)}); "
            "it was left untouched: upgrade this program"
        )
    if applied != known[: len(applied)]:
        raise ForeignDatabaseError(
            f"{where} records migrations out of order ({', '.join(applied)}); it was left untouched"
        )
    expected = reference_schema(len(applied))
    found = {t: column_types(conn, t) for t in tables if t in DATA_TABLES}
    extra = tables - set(DATA_TABLES) - {RECORD_TABLE, LEGACY_RECORD_TABLE}
    if extra or found != expected:
        changed = {t for t in expected.keys() | found.keys() if expected.get(t) != found.get(t)}
        differ = sorted(extra | changed)
        raise ForeignDatabaseError(
            f"{where} does not have this game's schema at {applied[-1]} "
            f"(differs in {', '.join(differ)}); it was left untouched"
        )
    return Standing.OURS


def bridge_legacy_record(db: sqlite_utils.Database) -> None:
    """Move the records of our older ``migrations`` table into sqlite-utils' table.

    Call inside the write transaction that applies the pending migrations.
    """
    if LEGACY_RECORD_TABLE not in db.table_names():
        return
    MIGRATIONS.ensure_migrations_table(db)
    rows = db.execute(f"SELECT name, applied_at FROM {LEGACY_RECORD_TABLE} ORDER BY rowid")
    db[RECORD_TABLE].insert_all(
        {
            "migration_set": MIGRATIONS.name,
            "name": name,
            "applied_at": str(datetime.datetime.fromtimestamp(at, datetime.UTC)),
        }
        for name, at in rows.fetchall()
    )
    db.execute(f"DROP TABLE {LEGACY_RECORD_TABLE}")


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Bridge the legacy record and apply every pending migration; return their names.

    The caller holds the write transaction: the whole upgrade commits or none of it.
    """
    bridge_legacy_record(db)
    pending = [m.name for m in MIGRATIONS.pending(db)]
    MIGRATIONS.apply(db)
    return pending


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    """The migrations recorded in this database, in order."""
    return _applied(conn, _tables(conn))
