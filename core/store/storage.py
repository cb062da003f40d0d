"""The SQLite store: schema, migrations and every SQL statement of the project.

One SQLite file (``data/arena.db`` by default) holds generations, their images' figures,
rounds (a session's shuffled presentation of one generation, with the answer key kept
here only) and guesses. Image files live under ``images_dir`` with neutral random names.

Concurrency: the database is in WAL mode, so readers never wait for the writer. Each
thread gets its own connection (``threading.local``); writes inside one process are
serialized by a lock (no busy-wait back-off between our own threads), and across
processes by ``BEGIN IMMEDIATE`` with a busy timeout. ``synchronous=FULL``: a commit is
on disk before it is acknowledged, so an acknowledged guess survives the process being
killed, an OS crash and a power loss (NORMAL would risk the last commits on the latter
two, for about 1.7x the throughput; FULL still clears 500 guesses/s here).

Every statement is parameterized; table and column names come from the constants here.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from PIL import Image

from core.config import VARIANT_NAMES, GenerationSettings, check_variants
from core.errors import (
    DatabaseCorruptError,
    DatabaseError,
    DatabaseMissingError,
    RoundAlreadyGuessedError,
)
from core.records import Generation

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_SECONDS = 10.0
EXPORT_MMAP_BYTES = 1024**3
SQLITE_HEADER = b"SQLite format 3\x00"

# --- Migrations ----------------------------------------------------------------------

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next migration; its name is recorded once it is applied."""
    MIGRATIONS.append(fn)
    return fn


@migration
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


@migration
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


@migration
def m003_verdict_indexes(db: sqlite_utils.Database) -> None:
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


# --- Records read back ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredGeneration:
    """A generation as stored: its prompt, settings and the variants it has images of."""

    id: int
    prompt: str
    settings: GenerationSettings
    model: str
    synthetic: bool
    variants: tuple[str, ...]


@dataclass(frozen=True)
class StoredRound:
    """A round as stored, answer key included (server side only)."""

    id: str
    generation_id: int
    mode: str
    session_id: str
    compared_variant: str | None
    answer_key: dict[str, str]
    created_at: float
    expires_at: float
    guessed: bool


@dataclass(frozen=True)
class NewGuess:
    """A judged guess, ready to be written."""

    round: StoredRound
    answer: str
    variant: str | None
    correct: bool | None
    created_at: float


@dataclass(frozen=True)
class Tally:
    """Answered / correct / can't-tell counts of one group of guesses."""

    answered: int
    correct: int
    cant_tell: int


TABLES: tuple[str, ...] = ("generations", "images", "rounds", "guesses")


def _clean_png(image: Image.Image) -> bytes:
    """PNG bytes of the pixels alone: no text chunks, EXIF, ICC or other metadata."""
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    pixels = Image.frombytes(image.mode, image.size, image.tobytes())
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    return buffer.getvalue()


def _check_sqlite_file(path: Path) -> None:
    """Raise DatabaseCorruptError unless ``path`` reads as a SQLite database.

    Opened read-only, so a damaged file is never modified (no WAL switch, no journal).
    """
    with open(path, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header == b"":
        return  # an empty file is a valid, empty database
    if header != SQLITE_HEADER:
        raise DatabaseCorruptError(f"{path} is not a SQLite database; it was left untouched")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        # e.g. a read-only open of a WAL database whose -shm is gone: not corruption;
        # the read-write open below will tell.
        return
    except sqlite3.DatabaseError as e:
        raise DatabaseCorruptError(f"{path} is damaged ({e}); it was left untouched") from e


class Store:
    """The game's database and image folder. Safe to share between threads."""

    def __init__(self, db_path: Path, images_dir: Path, *, must_exist: bool = False) -> None:
        self.db_path = Path(db_path)
        self.images_dir = Path(images_dir)
        if self.db_path.exists():
            _check_sqlite_file(self.db_path)
        elif must_exist:
            raise DatabaseMissingError(f"no database at {self.db_path}")
        else:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.Lock()
        try:
            self._migrate()
        except sqlite3.DatabaseError as e:
            self.close()
            raise DatabaseCorruptError(f"{self.db_path} could not be read: {e}") from e

    # --- connections and transactions -----------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.db_path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,  # we issue BEGIN / COMMIT ourselves
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several SELECTs."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection (the store is unusable afterwards)."""
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- schema ------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._write() as conn:
            db = sqlite_utils.Database(conn)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS migrations "
                "(name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT name FROM migrations")}
            for fn in MIGRATIONS:
                if fn.__name__ not in applied:
                    logger.info("applying migration %s to %s", fn.__name__, self.db_path)
                    fn(db)
                    conn.execute(
                        "INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                        (fn.__name__, time.time()),
                    )

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT name FROM migrations ORDER BY rowid")]

    def schema(self) -> dict[str, list[str]]:
        """Table name -> column names, in order (what the schema test checks)."""
        db = sqlite_utils.Database(self._conn())
        return {name: [c.name for c in db[name].columns] for name in db.table_names()}

    def integrity_check(self) -> str:
        return self._conn().execute("PRAGMA integrity_check").fetchone()[0]

    # --- generations -------------------------------------------------------------------

    def save_generation(self, gen: Generation) -> int:
        """Write the images as metadata-free PNGs and the rows; return the generation id.

        All or nothing: if any image or row fails, no row is left and every file written
        for this generation is removed.
        """
        variants = check_variants(list(gen.results))
        self.images_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        try:
            image_rows = []
            for name in variants:
                result = gen.results[name]
                data = _clean_png(result.image)
                path = self.images_dir / f"{secrets.token_hex(16)}.png"
                with open(path, "xb") as f:
                    written.append(path)
                    f.write(data)
                image_rows.append(
                    (
                        name,
                        path.name,
                        hashlib.sha256(data).hexdigest(),
                        float(result.seconds),
                        int(result.weight_bytes),
                        int(result.shared_weight_bytes),
                        result.peak_allocated_bytes,
                        result.peak_reserved_bytes,
                        result.peak_rss_bytes,
                        result.psnr,
                        result.ssim,
                    )
                )
            # One modification time for all of a generation's files: a file server sends
            # it as Last-Modified, and write order (BF16 first) must not show through.
            stamp = gen.created_at or time.time()
            for path in written:
                os.utime(path, (stamp, stamp))
            s = gen.settings
            with self._write() as conn:
                cursor = conn.execute(
                    "INSERT INTO generations (prompt, seed, steps, guidance, width, height, "
                    "max_sequence_length, model, device, placement, versions, synthetic, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        gen.prompt,
                        s.seed,
                        s.steps,
                        float(s.guidance),
                        s.width,
                        s.height,
                        s.max_sequence_length,
                        gen.model,
                        gen.device,
                        gen.placement,
                        json.dumps(gen.versions, sort_keys=True),
                        int(gen.synthetic),
                        gen.created_at or time.time(),
                    ),
                )
                generation_id = int(cursor.lastrowid)
                conn.executemany(
                    "INSERT INTO images (generation_id, variant, path, sha256, seconds, "
                    "weight_bytes, shared_weight_bytes, peak_allocated_bytes, "
                    "peak_reserved_bytes, peak_rss_bytes, psnr, ssim) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(generation_id, *row) for row in image_rows],
                )
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return generation_id

    def generation(self, generation_id: int) -> StoredGeneration | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT * FROM generations WHERE id = ?", (generation_id,)
            ).fetchone()
            if row is None:
                return None
            variants = {
                r[0]
                for r in conn.execute(
                    "SELECT variant FROM images WHERE generation_id = ?", (generation_id,)
                )
            }
        return StoredGeneration(
            id=row["id"],
            prompt=row["prompt"],
            settings=GenerationSettings(
                seed=row["seed"],
                steps=row["steps"],
                guidance=row["guidance"],
                width=row["width"],
                height=row["height"],
                max_sequence_length=row["max_sequence_length"],
            ),
            model=row["model"],
            synthetic=bool(row["synthetic"]),
            variants=check_variants(sorted(variants)) if variants else (),
        )

    def image_paths(self, generation_id: int) -> dict[str, Path]:
        """Variant -> absolute path of its PNG."""
        rows = self._conn().execute(
            "SELECT variant, path FROM images WHERE generation_id = ?", (generation_id,)
        )
        return {r["variant"]: self.images_dir / r["path"] for r in rows}

    def image_stats(self, generation_id: int) -> dict[str, dict[str, Any]]:
        """Variant -> its figures (seconds, bytes, peaks, PSNR, SSIM), without the path."""
        rows = self._conn().execute(
            "SELECT variant, seconds, weight_bytes, shared_weight_bytes, peak_allocated_bytes, "
            "peak_reserved_bytes, peak_rss_bytes, psnr, ssim FROM images "
            "WHERE generation_id = ?",
            (generation_id,),
        )
        return {r["variant"]: {k: v for k, v in dict(r).items() if k != "variant"} for r in rows}

    def count_unseen_generations(
        self, session_id: str, required: Sequence[str], any_of: Sequence[str] = ()
    ) -> int:
        sql, params = self._unseen_sql("count(*)", session_id, required, any_of)
        return int(self._conn().execute(sql, params).fetchone()[0])

    def pick_unseen_generation(
        self,
        session_id: str,
        required: Sequence[str],
        any_of: Sequence[str],
        choose: Callable[[int], int],
    ) -> int | None:
        """Id of a generation this session has no round of, having every ``required``
        variant and at least one of ``any_of`` (when given); None when there is none.

        ``choose(n)`` picks an index in 0 … n-1 (the game's injected RNG), so the choice
        is reproducible and needs no list of candidates in Python.
        """
        with self._read() as conn:
            sql, params = self._unseen_sql("count(*)", session_id, required, any_of)
            n = int(conn.execute(sql, params).fetchone()[0])
            if n == 0:
                return None
            sql, params = self._unseen_sql("g.id", session_id, required, any_of)
            row = conn.execute(
                sql + " ORDER BY g.id LIMIT 1 OFFSET ?", (*params, choose(n))
            ).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _unseen_sql(
        what: str, session_id: str, required: Sequence[str], any_of: Sequence[str]
    ) -> tuple[str, list[Any]]:
        sql = (
            f"SELECT {what} FROM generations g WHERE NOT EXISTS "
            "(SELECT 1 FROM rounds r WHERE r.session_id = ? AND r.generation_id = g.id)"
        )
        params: list[Any] = [session_id]
        for variant in required:
            sql += (
                " AND EXISTS (SELECT 1 FROM images i "
                "WHERE i.generation_id = g.id AND i.variant = ?)"
            )
            params.append(variant)
        if any_of:
            marks = ", ".join("?" * len(any_of))
            sql += (
                " AND EXISTS (SELECT 1 FROM images i "
                f"WHERE i.generation_id = g.id AND i.variant IN ({marks}))"
            )
            params.extend(any_of)
        return sql, params

    # --- rounds ------------------------------------------------------------------------

    def insert_round(
        self,
        *,
        generation_id: int,
        mode: str,
        session_id: str,
        compared_variant: str | None,
        answer_key: dict[str, str],
        created_at: float,
        expires_at: float,
        max_recent: int = 0,
        recent_since: float = 0.0,
    ) -> str | None:
        """Insert a round with a fresh unguessable id and return the id.

        When ``max_recent`` > 0 and the session already has that many rounds created at
        or after ``recent_since``, nothing is written and None is returned (the check
        and the insert are one transaction, so concurrent requests cannot overshoot).
        """
        round_id = secrets.token_urlsafe(16)
        with self._write() as conn:
            if max_recent > 0:
                (recent,) = conn.execute(
                    "SELECT count(*) FROM rounds WHERE session_id = ? AND created_at >= ?",
                    (session_id, recent_since),
                ).fetchone()
                if recent >= max_recent:
                    return None
            conn.execute(
                "INSERT INTO rounds (id, generation_id, mode, session_id, compared_variant, "
                "answer_key, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    round_id,
                    generation_id,
                    mode,
                    session_id,
                    compared_variant,
                    json.dumps(answer_key),
                    created_at,
                    expires_at,
                ),
            )
        return round_id

    def count_recent_rounds(self, session_id: str, since: float) -> int:
        return int(
            self._conn()
            .execute(
                "SELECT count(*) FROM rounds WHERE session_id = ? AND created_at >= ?",
                (session_id, since),
            )
            .fetchone()[0]
        )

    def fetch_round(self, round_id: str) -> StoredRound | None:
        row = (
            self._conn()
            .execute(
                "SELECT r.*, EXISTS (SELECT 1 FROM guesses g WHERE g.round_id = r.id) AS guessed "
                "FROM rounds r WHERE r.id = ?",
                (round_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return StoredRound(
            id=row["id"],
            generation_id=row["generation_id"],
            mode=row["mode"],
            session_id=row["session_id"],
            compared_variant=row["compared_variant"],
            answer_key=json.loads(row["answer_key"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            guessed=bool(row["guessed"]),
        )

    # --- guesses -----------------------------------------------------------------------

    def insert_guess(self, guess: NewGuess) -> int:
        """Write the guess and return its id; RoundAlreadyGuessedError if one exists.

        The UNIQUE index on round_id makes this atomic: of any number of concurrent
        guesses on one round, exactly one is written.
        """
        r = guess.round
        try:
            with self._write() as conn:
                cursor = conn.execute(
                    "INSERT INTO guesses (round_id, session_id, generation_id, mode, "
                    "compared_variant, answer, variant, correct, cant_tell, seconds, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.id,
                        r.session_id,
                        r.generation_id,
                        r.mode,
                        r.compared_variant,
                        guess.answer,
                        guess.variant,
                        None if guess.correct is None else int(guess.correct),
                        int(guess.correct is None),
                        max(0.0, guess.created_at - r.created_at),
                        guess.created_at,
                    ),
                )
                return int(cursor.lastrowid)
        except sqlite3.IntegrityError as e:
            if "guesses.round_id" in str(e) or "UNIQUE" in str(e):
                raise RoundAlreadyGuessedError("this round was already answered") from e
            raise DatabaseError(f"could not record the guess: {e}") from e

    def bulk_insert_rounds_and_guesses(
        self, rounds: Iterable[tuple[Any, ...]], guesses: Iterable[tuple[Any, ...]]
    ) -> None:
        """Load many rows in one transaction (simulation and benchmarks only).

        ``rounds``: tuples in the column order of the rounds table; ``guesses``: tuples in
        the column order of the guesses table without the id.
        """
        with self._write() as conn:
            conn.execute("PRAGMA cache_size = -262144")  # 256 MiB for random-key inserts
            conn.executemany("INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rounds)
            conn.executemany(
                "INSERT INTO guesses (round_id, session_id, generation_id, mode, "
                "compared_variant, answer, variant, correct, cant_tell, seconds, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                guesses,
            )

    def session_tally(self, session_id: str) -> tuple[Tally, int, int]:
        """(answered/correct/can't-tell, current streak, best streak) of one session.

        A streak is a run of consecutive correct answers; a wrong answer or a "can't
        tell" ends it.
        """
        with self._read() as conn:
            row = conn.execute(
                "SELECT count(*), coalesce(sum(correct), 0), coalesce(sum(cant_tell), 0) "
                "FROM guesses WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            streaks = conn.execute(
                # Each non-correct guess starts a new group; a group's correct count is
                # the length of the run of correct answers that follows it.
                "WITH runs AS (SELECT correct, sum(CASE WHEN correct = 1 THEN 0 ELSE 1 END) "
                "OVER (ORDER BY id) AS grp FROM guesses WHERE session_id = ?), "
                "lengths AS (SELECT grp, coalesce(sum(correct = 1), 0) AS n "
                "FROM runs GROUP BY grp) "
                "SELECT (SELECT n FROM lengths ORDER BY grp DESC LIMIT 1), max(n) FROM lengths",
                (session_id,),
            ).fetchone()
        return Tally(*row), int(streaks[0] or 0), int(streaks[1] or 0)

    # --- aggregates for statistics (GROUP BY in SQL; small results) ----------------

    def guess_groups(self) -> list[tuple[str, str | None, str | None, Tally]]:
        """(mode, compared variant, designated variant, tally) per group: one scan of a
        covering index, from which every per-mode / per-variant / per-pick figure is summed.

        The compared variant is the duel's quantized one (None in a trio); the designated
        variant is the one the answer named (None for can't tell).
        """
        rows = self._conn().execute(
            "SELECT mode, compared_variant, variant, count(*), coalesce(sum(correct), 0), "
            "sum(cant_tell) FROM guesses GROUP BY mode, compared_variant, variant"
        )
        return [(r[0], r[1], r[2], Tally(r[3], r[4], r[5])) for r in rows]

    def hardest_generations(
        self, mode: str, min_answered: int, limit: int
    ) -> list[tuple[int, str, Tally]]:
        """(generation id, prompt, tally) of the generations least often answered
        correctly in ``mode``, among those with at least ``min_answered`` guesses."""
        rows = self._conn().execute(
            "SELECT t.generation_id, g.prompt, t.answered, t.correct, t.cant_tell FROM "
            "(SELECT generation_id, count(*) AS answered, coalesce(sum(correct), 0) AS correct, "
            "sum(cant_tell) AS cant_tell FROM guesses WHERE mode = ? GROUP BY generation_id "
            "HAVING count(*) >= ?) t JOIN generations g ON g.id = t.generation_id "
            "ORDER BY CAST(t.correct AS REAL) / t.answered, t.answered DESC, t.generation_id "
            "LIMIT ?",
            (mode, min_answered, limit),
        )
        return [(r[0], r[1], Tally(r[2], r[3], r[4])) for r in rows]

    def tally_by_generation(self, generation_id: int) -> list[tuple[str, Tally]]:
        rows = self._conn().execute(
            "SELECT mode, count(*), coalesce(sum(correct), 0), sum(cant_tell) FROM guesses "
            "WHERE generation_id = ? GROUP BY mode ORDER BY mode",
            (generation_id,),
        )
        return [(r[0], Tally(r[1], r[2], r[3])) for r in rows]

    def top_sessions(self, limit: int) -> list[tuple[str, Tally]]:
        rows = self._conn().execute(
            "SELECT session_id, count(*), coalesce(sum(correct), 0), sum(cant_tell) "
            "FROM guesses GROUP BY session_id ORDER BY sum(correct) DESC, count(*) "
            "LIMIT ?",
            (limit,),
        )
        return [(r[0], Tally(r[1], r[2], r[3])) for r in rows]

    # Counts of decided answers for the verdicts (core.game.stats), per player and per
    # prompt. A decided answer is one that is not "can't tell".

    def decided_by_session(self) -> list[tuple[str, str, str | None, int, int, int]]:
        """(mode, session id, compared variant, answered, decided, correct) per session, mode
        and duel variant (None in a trio): one scan of a covering index."""
        rows = self._conn().execute(
            "SELECT mode, session_id, compared_variant, count(*), count(*) - sum(cant_tell), "
            "coalesce(sum(correct), 0) FROM guesses "
            "GROUP BY mode, session_id, compared_variant"
        )
        return [(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5])) for r in rows]

    def decided_by_generation(self) -> list[tuple[str, int, str, str | None, int, int, int]]:
        """(mode, generation id, prompt, compared variant, answered, decided, correct) per
        generation, mode and duel variant (None in a trio): one scan of a covering index."""
        rows = self._conn().execute(
            "SELECT t.mode, t.generation_id, g.prompt, t.compared_variant, t.answered, "
            "t.decided, t.correct FROM (SELECT mode, generation_id, compared_variant, "
            "count(*) AS answered, count(*) - sum(cant_tell) AS decided, "
            "coalesce(sum(correct), 0) AS correct FROM guesses "
            "GROUP BY mode, generation_id, compared_variant) t "
            "JOIN generations g ON g.id = t.generation_id"
        )
        return [(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6])) for r in rows]

    def counts(self) -> dict[str, int]:
        """Rows per table, plus distinct sessions that guessed."""
        conn = self._conn()
        out = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}
        out["sessions"] = int(
            conn.execute("SELECT count(DISTINCT session_id) FROM guesses").fetchone()[0]
        )
        return out

    def guess_check(self, session_prefix: str) -> dict[str, Any]:
        """For a simulation's verification: the round ids guessed by sessions whose id
        starts with ``session_prefix``, and how many rounds have more than one guess."""
        conn = self._conn()
        pattern = session_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        round_ids = [
            r[0]
            for r in conn.execute(
                "SELECT round_id FROM guesses WHERE session_id LIKE ? ESCAPE '\\'",
                (pattern + "%",),
            )
        ]
        (duplicated,) = conn.execute(
            "SELECT count(*) FROM (SELECT round_id FROM guesses GROUP BY round_id "
            "HAVING count(*) > 1)"
        ).fetchone()
        return {"round_ids": round_ids, "duplicated": int(duplicated)}

    def generation_ids(self) -> list[int]:
        return [r[0] for r in self._conn().execute("SELECT id FROM generations ORDER BY id")]

    def variant_costs(self, model: str) -> list[dict[str, Any]]:
        """Per variant, over the real (non-synthetic) generations of ``model``: how many,
        the median seconds and peaks (bytes), and the latest weight bytes.

        Generations cost GPU time, so there are few of them (thousands, not millions);
        their figures are read per variant and the medians taken in Python.
        """
        rows = self._conn().execute(
            "SELECT i.variant, i.seconds, i.weight_bytes, i.shared_weight_bytes, "
            "i.peak_allocated_bytes, i.peak_reserved_bytes, i.peak_rss_bytes "
            "FROM images i JOIN generations g ON g.id = i.generation_id "
            "WHERE g.model = ? AND g.synthetic = 0 ORDER BY g.id",
            (model,),
        )
        by_variant: dict[str, list[sqlite3.Row]] = {}
        for r in rows:
            by_variant.setdefault(r["variant"], []).append(r)

        def median(values: list[float | None]) -> float | None:
            present = [v for v in values if v is not None]
            return statistics.median(present) if present else None

        out = []
        for variant in VARIANT_NAMES:
            group = by_variant.get(variant)
            if not group:
                continue
            out.append(
                {
                    "variant": variant,
                    "generations": len(group),
                    "median_seconds": median([r["seconds"] for r in group]),
                    "weight_bytes": group[-1]["weight_bytes"],
                    "shared_weight_bytes": group[-1]["shared_weight_bytes"],
                    "median_peak_allocated_bytes": median(
                        [r["peak_allocated_bytes"] for r in group]
                    ),
                    "median_peak_reserved_bytes": median([r["peak_reserved_bytes"] for r in group]),
                    "median_peak_rss_bytes": median([r["peak_rss_bytes"] for r in group]),
                }
            )
        return out

    # --- export --------------------------------------------------------------------

    def columns(self, table: str) -> list[str]:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        return [r[1] for r in self._conn().execute(f"PRAGMA table_info({table})")]

    @contextmanager
    def snapshots(self, count: int = 1) -> Iterator[list[Snapshot]]:
        """``count`` read-only views of the same database state, each on its own
        connection (so they can be read from different threads, and a long export does
        not hold this thread's connection in a transaction).

        They are opened while this store's write lock is held, so no write of this
        process falls between them.
        """
        conns = []
        try:
            with self._write_lock:
                for _ in range(count):
                    conn = sqlite3.connect(
                        self.db_path,
                        timeout=BUSY_TIMEOUT_SECONDS,
                        isolation_level=None,
                        check_same_thread=False,
                    )
                    conns.append(conn)
                    # Exporting rounds looks each one up in the guesses index (to hide the
                    # key of unanswered rounds): memory-mapped reads make that ~30% faster.
                    conn.execute(f"PRAGMA mmap_size = {EXPORT_MMAP_BYTES}")
                    conn.execute("BEGIN")
                    # A read transaction starts at its first read: take the snapshot now.
                    conn.execute("SELECT count(*) FROM migrations").fetchone()
            yield [Snapshot(conn) for conn in conns]
        finally:
            for conn in conns:
                conn.close()


class Snapshot:
    """A read transaction over the whole database, for export."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def columns(self, table: str) -> list[str]:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        return [r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")]

    def _select(self, table: str) -> tuple[list[str], str]:
        """The column names of ``table`` and the SQL expression of each, in order.

        The answer key (and the duel's quantized variant) of a round nobody has answered
        yet is replaced by NULL: it must never leave the server.
        """
        columns = self.columns(table)
        if table != "rounds":
            return columns, f"SELECT {{}} FROM {table} ORDER BY rowid"
        return columns, (
            "SELECT {} FROM rounds LEFT JOIN guesses g ON g.round_id = rounds.id "
            "ORDER BY rounds.rowid"
        )

    @staticmethod
    def _expression(table: str, column: str) -> str:
        if table == "rounds" and column in ("answer_key", "compared_variant"):
            return f"CASE WHEN g.round_id IS NOT NULL THEN rounds.{column} END"
        return f"{table}.{column}"

    def rows(self, table: str, batch_size: int = 10_000) -> Iterator[list[tuple]]:
        """Batches of rows of ``table`` in column order, oldest first (keys of unanswered
        rounds NULL)."""
        columns, sql = self._select(table)
        cursor = self._conn.execute(
            sql.format(", ".join(self._expression(table, c) for c in columns))
        )
        while batch := cursor.fetchmany(batch_size):
            yield batch

    def json_rows(self, table: str, batch_size: int = 10_000) -> Iterator[list[str]]:
        """The same rows as ``rows``, each already a JSON object (built by SQLite's
        json_object, far faster than encoding tuples in Python)."""
        columns, sql = self._select(table)
        pairs = ", ".join(f"'{c}', {self._expression(table, c)}" for c in columns)
        cursor = self._conn.execute(sql.format(f"json_object({pairs})"))
        while batch := cursor.fetchmany(batch_size):
            yield [row[0] for row in batch]


def default_images_dir(db_path: Path) -> Path:
    """The images folder that goes with a database when none is given: ``<db dir>/images``."""
    return Path(db_path).parent / "images"
