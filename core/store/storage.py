"""The SQLite store: every SQL statement of the game, behind one ``Store``.

One SQLite file (``data/arena.db`` by default) holds generations, their images' figures,
rounds (a session's shuffled presentation of one generation, with the answer key kept
here only) and guesses. Opening, checking, connections and transactions are in
``core.store.database``, the schema in ``core.store.migrations``, the image files in
``core.store.images``.

Every statement is parameterized; table and column names come from the constants here.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from core.config import VARIANT_NAMES, check_variants
from core.errors import AnswerCapError, DatabaseError, RoundAlreadyGuessedError
from core.limits import GenerationSettings
from core.records import IMAGE_FIGURES, IMAGE_METRICS, Generation
from core.store.database import Database
from core.store.images import ImageWriter
from core.store.migrations import DATA_TABLES

logger = logging.getLogger(__name__)

TABLES: tuple[str, ...] = DATA_TABLES
# Moderation (core.game.moderate): a generation that was reported or hidden is not served,
# and its guesses are left out of the verdicts.
WITHDRAWN = ("reported", "hidden")
SERVED_SQL = " AND coalesce(g.moderation, '') NOT IN ('reported', 'hidden')"
COUNTED_SQL = (
    "generation_id NOT IN (SELECT id FROM generations WHERE moderation IN ('reported', 'hidden'))"
)
# The guesses the verdicts count: none on a generation marked out of domain (a prompt its
# model cannot draw), whatever the statistics do with them. The condition is added only
# when some generation is marked (Store._counted): without it the GROUP BYs read their
# covering indexes alone, as before (the filter needs each guess's generation_id).
IN_DOMAIN = "generation_id NOT IN (SELECT id FROM generations WHERE out_of_domain = 1)"


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


class Store(Database):
    """The game's database and image folder: every SQL statement of the game.

    Opening it judges, upgrades and checks the file (``core.store.database.Database``).
    """

    def __init__(
        self,
        db_path: Path,
        images_dir: Path,
        *,
        must_exist: bool = False,
        max_pages: int | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        super().__init__(db_path, must_exist=must_exist, max_pages=max_pages)

    def __enter__(self) -> Store:
        return self

    # --- generations -------------------------------------------------------------------

    def save_generation(self, gen: Generation) -> int:
        """Write the images as metadata-free PNGs and the rows; return the generation id.

        All or nothing: if any image or row fails, no row is left and every file written
        for this generation is removed.
        """
        variants = check_variants(list(gen.results))
        stamp = gen.created_at or time.time()
        with ImageWriter(self.images_dir) as files:
            image_rows = []
            for name in variants:
                result = gen.results[name]
                written = files.write(result.image)
                image_rows.append((name, written.name, written.sha256, *result.figures()))
            files.stamp(stamp)
            s = gen.settings
            with self._write() as conn:
                cursor = conn.execute(
                    "INSERT INTO generations (prompt, seed, steps, guidance, width, height, "
                    "max_sequence_length, model, device, placement, versions, synthetic, "
                    "created_at, resident_weight_bytes) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        stamp,
                        gen.resident_weight_bytes,
                    ),
                )
                generation_id = int(cursor.lastrowid)
                columns = ("generation_id", "variant", "path", "sha256", *IMAGE_FIGURES)
                conn.executemany(
                    f"INSERT INTO images ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})",
                    [(generation_id, *row) for row in image_rows],
                )
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
            f"SELECT variant, {', '.join(IMAGE_FIGURES)} FROM images WHERE generation_id = ?",
            (generation_id,),
        )
        return {r["variant"]: {k: v for k, v in dict(r).items() if k != "variant"} for r in rows}

    def mark_out_of_domain(self, model: str, covers: Callable[[str, int], bool]) -> int:
        """Mark each stored generation of ``model`` out of domain exactly when
        ``covers(prompt, max_sequence_length)`` is False (a prompt the model cannot draw),
        and in domain otherwise; return how many are out of domain now.

        A marked generation leaves the ready pool and the verdicts' counts. Run at start-up
        by the app (``Arena``); prompts are few (one per generation) and read once.
        """
        rows = self._conn().execute(
            "SELECT id, prompt, max_sequence_length, out_of_domain FROM generations "
            "WHERE model = ?",
            (model,),
        )
        flags = [
            (int(not covers(r["prompt"], r["max_sequence_length"])), r["id"], r["out_of_domain"])
            for r in rows.fetchall()
        ]
        changed = [(flag, gid) for flag, gid, was in flags if flag != was]
        if changed:  # nothing is written when every mark is already right
            with self._write() as conn:
                conn.executemany("UPDATE generations SET out_of_domain = ? WHERE id = ?", changed)
        return sum(flag for flag, _, _ in flags)

    def out_of_domain_counts(self) -> tuple[int, int]:
        """(generations marked out of domain, guesses on them): what the ready pool and the
        verdicts leave out."""
        row = (
            self._conn()
            .execute(
                "SELECT (SELECT count(*) FROM generations WHERE out_of_domain = 1), "
                f"(SELECT count(*) FROM guesses WHERE NOT ({IN_DOMAIN}))"
            )
            .fetchone()
        )
        return int(row[0]), int(row[1])

    # A generation is *seen* by a session (a person) once the session has a round of it that
    # was answered, or that can still be answered at ``now``: an open round is restored,
    # not served twice, and a round left unanswered until it expired is served again with
    # a fresh shuffle (its answer was never shown). With ``now`` None every round counts.

    def count_unseen_generations(
        self,
        session_id: str,
        required: Sequence[str],
        any_of: Sequence[str] = (),
        *,
        now: float | None = None,
    ) -> int:
        sql, params = self._unseen_sql("count(*)", session_id, required, any_of, now)
        return int(self._conn().execute(sql, params).fetchone()[0])

    def count_playable_generations(
        self,
        session_id: str,
        required: Sequence[str],
        any_of: Sequence[str] = (),
        *,
        now: float | None = None,
    ) -> tuple[int, int]:
        """(generations having every ``required`` variant and one of ``any_of`` when given,
        how many of them this session has not seen at ``now``), read in one statement."""
        where, params = self._variants_sql(required, any_of)
        seen, seen_params = self._seen_sql(session_id, now)
        row = (
            self._conn()
            .execute(
                f"SELECT count(*), coalesce(sum(NOT EXISTS ({seen})), 0) "
                f"FROM generations g WHERE 1{where}",
                [*seen_params, *params],
            )
            .fetchone()
        )
        return int(row[0]), int(row[1])

    def pick_unseen_generation(
        self,
        session_id: str,
        required: Sequence[str],
        any_of: Sequence[str],
        choose: Callable[[int], int],
        *,
        now: float | None = None,
    ) -> int | None:
        """Id of a generation this session has not seen at ``now``, having every
        ``required`` variant and at least one of ``any_of`` (when given); None when there
        is none.

        ``choose(n)`` picks an index in 0 … n-1 (the game's injected RNG), so the choice
        is reproducible and needs no list of candidates in Python.
        """
        with self._read() as conn:
            sql, params = self._unseen_sql("count(*)", session_id, required, any_of, now)
            n = int(conn.execute(sql, params).fetchone()[0])
            if n == 0:
                return None
            sql, params = self._unseen_sql("g.id", session_id, required, any_of, now)
            row = conn.execute(
                sql + " ORDER BY g.id LIMIT 1 OFFSET ?", (*params, choose(n))
            ).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _seen_sql(session_id: str, now: float | None) -> tuple[str, list[Any]]:
        """A subquery that finds a row when ``session_id`` has seen generation ``g``."""
        sql = "SELECT 1 FROM rounds r WHERE r.session_id = ? AND r.generation_id = g.id"
        if now is None:
            return sql, [session_id]
        return (
            sql + " AND (r.expires_at > ? OR EXISTS "
            "(SELECT 1 FROM guesses x WHERE x.round_id = r.id))",
            [session_id, now],
        )

    @staticmethod
    def _unseen_sql(
        what: str,
        session_id: str,
        required: Sequence[str],
        any_of: Sequence[str],
        now: float | None = None,
    ) -> tuple[str, list[Any]]:
        where, params = Store._variants_sql(required, any_of)
        seen, seen_params = Store._seen_sql(session_id, now)
        sql = f"SELECT {what} FROM generations g WHERE NOT EXISTS ({seen})" + where
        return sql, [*seen_params, *params]

    @staticmethod
    def _variants_sql(required: Sequence[str], any_of: Sequence[str]) -> tuple[str, list[Any]]:
        """SQL conditions, each starting with AND, on generation ``g``: it is served (not
        reported nor hidden), not out of domain, has every ``required`` variant, and one of
        ``any_of`` when given."""
        # A generation marked out of domain (mark_out_of_domain) is never a ready round.
        sql = SERVED_SQL + " AND g.out_of_domain = 0"
        params: list[Any] = []
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

    def latest_open_round(self, session_id: str, now: float) -> StoredRound | None:
        """The session's most recent round that is unanswered and still open at ``now``
        (a page reload restores it); None when there is none."""
        row = (
            self._conn()
            .execute(
                "SELECT r.id FROM rounds r WHERE r.session_id = ? AND r.expires_at > ? "
                "AND NOT EXISTS (SELECT 1 FROM guesses x WHERE x.round_id = r.id) "
                "ORDER BY r.created_at DESC LIMIT 1",
                (session_id, now),
            )
            .fetchone()
        )
        return None if row is None else self.fetch_round(row[0])

    # --- guesses -----------------------------------------------------------------------

    def answers_since(self, session_id: str, since: float) -> int:
        """How many guesses the session made at or after ``since`` (seconds, epoch)."""
        row = (
            self._conn()
            .execute(
                "SELECT count(*) FROM guesses WHERE session_id = ? AND created_at >= ?",
                (session_id, since),
            )
            .fetchone()
        )
        return int(row[0])

    def insert_guess(
        self, guess: NewGuess, *, max_answers: int = 0, answers_since: float = 0.0
    ) -> int:
        """Write the guess and return its id; RoundAlreadyGuessedError if one exists.

        The UNIQUE index on round_id makes this atomic: of any number of concurrent
        guesses on one round, exactly one is written. When ``max_answers`` > 0 and the
        round's session already has that many guesses made at or after ``answers_since``,
        nothing is written and AnswerCapError is raised (the count and the insert are one
        transaction, so concurrent guesses cannot overshoot).
        """
        r = guess.round
        try:
            with self._write() as conn:
                if max_answers > 0:
                    (given,) = conn.execute(
                        "SELECT count(*) FROM guesses WHERE session_id = ? AND created_at >= ?",
                        (r.session_id, answers_since),
                    ).fetchone()
                    if given >= max_answers:
                        raise AnswerCapError(f"at most {max_answers} answers a day per person")
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
            f"sum(cant_tell) FROM guesses{self._counted()} "
            "GROUP BY mode, compared_variant, variant"
        )
        return [(r[0], r[1], r[2], Tally(r[3], r[4], r[5])) for r in rows]

    # Counts of decided answers for the verdicts (core.game.stats), per player and per
    # prompt. A decided answer is one that is not "can't tell".

    def decided_by_session(self) -> list[tuple[str, str, str | None, int, int, int]]:
        """(mode, session id, compared variant, answered, decided, correct) per session, mode
        and duel variant (None in a trio): one scan of a covering index."""
        rows = self._conn().execute(
            "SELECT mode, session_id, compared_variant, count(*), count(*) - sum(cant_tell), "
            f"coalesce(sum(correct), 0) FROM guesses{self._counted()} "
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
            f"coalesce(sum(correct), 0) AS correct FROM guesses{self._counted()} "
            "GROUP BY mode, generation_id, compared_variant) t "
            "JOIN generations g ON g.id = t.generation_id"
        )
        return [(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6])) for r in rows]

    # The metric model (core.game.metric_model): decided duel answers beside the figures
    # of their quantized image against BF16 (records.IMAGE_METRICS).

    def _duel_answers_sql(self, duels: Sequence[str]) -> str:
        """FROM guesses WHERE: the decided answers in the modes ``duels`` (those with a
        compared variant) that the verdicts count; takes ``duels`` as its parameters."""
        counted = self._counted()
        return (
            f"FROM guesses{counted}{' AND' if counted else ' WHERE'} "
            f"mode IN ({', '.join('?' * len(duels))}) "
            "AND compared_variant IS NOT NULL AND cant_tell = 0"
        )

    def metric_batches(self, duels: Sequence[str], batch: int) -> tuple[int, int]:
        """(decided duel answers the verdicts count, the guess id of the last one in whole
        ``batch``es of them, by id; 0 when there is no whole batch yet)."""
        conn = self._conn()
        where = self._duel_answers_sql(duels)
        (total,) = conn.execute(f"SELECT count(*) {where}", duels).fetchone()
        whole = int(total) // batch * batch
        if whole == 0:
            return int(total), 0
        # Counted back from the newest (the rowid order, no index: it stops after fewer than
        # ``batch`` answers instead of sorting every id).
        (last,) = conn.execute(
            f"SELECT id {where.replace('FROM guesses', 'FROM guesses NOT INDEXED', 1)} "
            "ORDER BY id DESC LIMIT 1 OFFSET ?",
            (*duels, int(total) - whole),
        ).fetchone()
        return int(total), int(last)

    def metric_people(self, duels: Sequence[str], last_id: int) -> list[tuple[str, int]]:
        """(session id, decided duel answers up to guess ``last_id``) per person, over the
        answers the verdicts count: one GROUP BY over a covering index, so a sample of whole
        people can be chosen before any answer is read."""
        rows = self._conn().execute(
            f"SELECT session_id, count(*) {self._duel_answers_sql(duels)} AND id <= ? "
            "GROUP BY session_id ORDER BY session_id",
            (*duels, last_id),
        )
        return [(r[0], int(r[1])) for r in rows]

    def metric_answers(
        self, duels: Sequence[str], last_id: int, people: Sequence[str] | None = None
    ) -> list[tuple[str, int, tuple[float | None, ...]]]:
        """(session id, correct 1/0, the IMAGE_METRICS values of the duel's quantized image,
        None where not measured) per decided duel answer up to guess ``last_id`` the
        verdicts count, in guess order; only those of ``people`` when given (read through
        the per-session index)."""
        figures = ", ".join(f"i.{name}" for name in IMAGE_METRICS)
        only, args = "", ()
        if people is not None:
            only, args = (
                " AND session_id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(people)),),
            )
        rows = self._conn().execute(
            f"SELECT g.session_id, g.correct, {figures} FROM (SELECT id, session_id, "
            f"generation_id, compared_variant, correct {self._duel_answers_sql(duels)} "
            f"AND id <= ?{only}) g "
            "JOIN images i ON i.generation_id = g.generation_id AND i.variant = g.compared_variant "
            "ORDER BY g.id",
            (*duels, last_id, *args),
        )
        return [(r[0], int(r[1]), tuple(r[2:])) for r in rows]

    def measured_images(self, reference: str) -> list[tuple[int, str, tuple[float | None, ...]]]:
        """(generation id, variant, IMAGE_METRICS values or None) of every image but
        ``reference``'s, by generation id and variant (simulated players draw from them)."""
        rows = self._conn().execute(
            f"SELECT generation_id, variant, {', '.join(IMAGE_METRICS)} FROM images "
            "WHERE variant != ? ORDER BY generation_id, variant",
            (reference,),
        )
        return [(int(r[0]), r[1], tuple(r[2:])) for r in rows]

    def image_metric_means(
        self, reference: str, batch: int = 1
    ) -> tuple[list[dict[str, Any]], int, int]:
        """(rows, generations included, generations counted): per variant but ``reference``
        (by name), over the images of the first whole ``batch``es of the generations the
        verdicts count (by id), a row with ``images``, and per name in IMAGE_METRICS its
        ``<name>_count`` (images with a finite value) and ``<name>_mean`` (None when none);
        ``identical``: images equal to BF16 (PSNR infinite, left out of PSNR's mean).

        With ``batch`` > 1 the means move only when ``batch`` more generations are in, so
        two looks at them never tell one new generation's figures."""
        conn = self._conn()
        counted = f"{COUNTED_SQL.replace('generation_id', 'id', 1)} AND out_of_domain = 0"
        (total,) = conn.execute(f"SELECT count(*) FROM generations WHERE {counted}").fetchone()
        included = int(total) // batch * batch
        finite = "abs({0}) < 1e308"
        parts = [
            f"sum({finite.format(n)}), avg(CASE WHEN {finite.format(n)} THEN {n} END)"
            for n in IMAGE_METRICS
        ]
        rows = conn.execute(
            f"SELECT i.variant, count(*), sum(abs(i.psnr) >= 1e308), {', '.join(parts)} "
            "FROM images i WHERE i.variant != ? AND i.generation_id IN "
            f"(SELECT id FROM generations WHERE {counted} ORDER BY id LIMIT ?) "
            "GROUP BY i.variant ORDER BY i.variant",
            (reference, included),
        )
        out = []
        for r in rows:
            variant = r[0]
            entry: dict[str, Any] = {"variant": variant, "images": int(r[1])}
            for k, name in enumerate(IMAGE_METRICS):
                entry[f"{name}_count"] = int(r[3 + 2 * k] or 0)
                entry[f"{name}_mean"] = r[4 + 2 * k]
            entry["identical"] = int(r[2] or 0)
            out.append(entry)
        return out, included, int(total)

    def counts(self) -> dict[str, int]:
        """Rows per table, plus distinct sessions that guessed."""
        conn = self._conn()
        out = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}
        out["sessions"] = int(
            conn.execute("SELECT count(DISTINCT session_id) FROM guesses").fetchone()[0]
        )
        return out

    def variant_costs(self, model: str) -> list[dict[str, Any]]:
        """Per variant, over the real (non-synthetic) generations of ``model`` made here (not
        imported from a pool): how many,
        the median seconds and peaks (bytes), and the latest weight bytes.

        Generations cost GPU time, so there are few of them (thousands, not millions);
        their figures are read per variant and the medians taken in Python.
        """
        rows = self._conn().execute(
            "SELECT i.variant, i.seconds, i.weight_bytes, i.shared_weight_bytes, "
            "i.peak_allocated_bytes, i.peak_reserved_bytes, i.peak_rss_bytes, "
            "i.activation_peak_bytes, i.standalone_peak_bytes, g.resident_weight_bytes "
            "FROM images i JOIN generations g ON g.id = i.generation_id "
            "WHERE g.model = ? AND g.synthetic = 0 AND g.origin IS NULL ORDER BY g.id",
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
                    "median_activation_peak_bytes": median(
                        [r["activation_peak_bytes"] for r in group]
                    ),
                    "median_standalone_peak_bytes": median(
                        [r["standalone_peak_bytes"] for r in group]
                    ),
                    "resident_weight_bytes": group[-1]["resident_weight_bytes"],
                }
            )
        return out

    # --- sync: rows out and in (core.game.sync) ----------------------------------------
    # Whole rows as dicts, read after the write that made them was committed, and the
    # restore that writes them back with their ids kept.

    def row_of(self, table: str, key: object) -> dict[str, Any] | None:
        """The row of ``table`` whose primary key is ``key`` (generations, rounds, guesses),
        as a dict of column -> value; None when there is none."""
        if table not in ("generations", "rounds", "guesses"):
            raise ValueError(f"no single-key table {table!r}")
        row = self._conn().execute(f"SELECT * FROM {table} WHERE id = ?", (key,)).fetchone()
        return None if row is None else dict(row)

    def image_rows(self, generation_id: int) -> list[dict[str, Any]]:
        """Every image row of a generation, whole (path and hash included), by variant."""
        rows = self._conn().execute(
            "SELECT * FROM images WHERE generation_id = ? ORDER BY variant", (generation_id,)
        )
        return [dict(r) for r in rows]

    def is_empty(self) -> bool:
        """Whether no data table holds a row (a database a restore may fill)."""
        conn = self._conn()
        return not any(
            conn.execute(f"SELECT EXISTS (SELECT 1 FROM {t})").fetchone()[0] for t in TABLES
        )

    def restore_rows(self, rows: dict[str, Sequence[dict[str, Any]]]) -> dict[str, int]:
        """Write whole rows back, ids kept, in one transaction; return the rows added per
        table. A row whose key (or a guess's round) is already there is skipped, so
        replaying the same rows twice changes nothing.

        ``rows``: table -> rows as dicts of column -> value, for the data tables; every
        column named must be one of the table's (DatabaseError otherwise, nothing written).
        Tables are written parents first (generations, images, rounds, guesses).
        """
        added: dict[str, int] = {}
        try:
            return self._restore_rows(rows, added)
        except sqlite3.IntegrityError as e:
            raise DatabaseError(
                f"the rows do not fit this database ({e}); nothing was restored"
            ) from None

    def _restore_rows(
        self, rows: dict[str, Sequence[dict[str, Any]]], added: dict[str, int]
    ) -> dict[str, int]:
        with self._write() as conn:
            for table in TABLES:
                added[table] = 0
                columns = _columns(conn, table)  # once per table, not per restored row
                for row in rows.get(table, ()):
                    cursor = _insert(
                        conn, table, row, columns=columns, or_ignore=True, outcome="restored"
                    )
                    added[table] += cursor.rowcount
        return added

    # --- pool: generations made elsewhere (core.game.pool) --------------------------------

    def import_generation(
        self, row: dict[str, Any], images: Sequence[tuple[dict[str, Any], Image.Image]], origin: str
    ) -> int | None:
        """Store a generation made elsewhere under a new id, its images rewritten as clean
        PNGs with neutral names, its figures kept; ``origin`` names it where it was made
        ("<deployment>:<id>"). None (nothing written) when that origin is already here.

        ``row``: the generation's columns there (its id and origin are not kept);
        ``images``: (image row there, its picture) per variant.
        """
        with ImageWriter(self.images_dir) as files:
            image_rows = []
            for figures, image in images:
                written = files.write(image)
                kept = {k: v for k, v in figures.items() if k not in ("generation_id", "file")}
                image_rows.append({**kept, "path": written.name, "sha256": written.sha256})
            files.stamp(float(row.get("created_at") or time.time()))
            with self._write() as conn:
                if conn.execute("SELECT 1 FROM generations WHERE origin = ?", (origin,)).fetchone():
                    files.discard()
                    return None
                generation = {k: v for k, v in row.items() if k not in ("id", "origin")}
                generation["origin"] = origin
                generation_id = int(_insert(conn, "generations", generation).lastrowid)
                for image_row in image_rows:
                    _insert(conn, "images", {**image_row, "generation_id": generation_id})
        return generation_id

    def generation_origin(self, generation_id: int) -> str | None:
        """Where a generation was made: None here, else "<deployment>:<id>"."""
        row = (
            self._conn()
            .execute("SELECT origin FROM generations WHERE id = ?", (generation_id,))
            .fetchone()
        )
        return None if row is None else row[0]

    def costs_elsewhere(self) -> list[dict[str, Any]]:
        """Per model, device and variant, over the generations imported from a pool: how
        many, and the median seconds per image and standalone / reserved peaks (bytes)."""
        rows = self._conn().execute(
            "SELECT g.model, g.device, i.variant, i.seconds, i.standalone_peak_bytes, "
            "i.peak_reserved_bytes FROM images i JOIN generations g ON g.id = i.generation_id "
            "WHERE g.origin IS NOT NULL ORDER BY g.model, g.device, g.id"
        )
        groups: dict[tuple[str, str, str], list[sqlite3.Row]] = {}
        for r in rows:
            groups.setdefault((r[0], r[1], r[2]), []).append(r)

        def median(values: list[float | None]) -> float | None:
            present = [v for v in values if v is not None]
            return statistics.median(present) if present else None

        return [
            {
                "model": model,
                "device": device,
                "variant": variant,
                "generations": len(group),
                "median_seconds": median([r[3] for r in group]),
                "median_standalone_peak_bytes": median([r[4] for r in group]),
                "median_peak_reserved_bytes": median([r[5] for r in group]),
            }
            for (model, device, variant), group in groups.items()
        ]

    def made_prompts(self, model: str) -> set[tuple[str, int]]:
        """(prompt, seed) of every generation of ``model`` stored here (a pool's resume)."""
        rows = self._conn().execute(
            "SELECT prompt, seed FROM generations WHERE model = ?", (model,)
        )
        return {(r[0], int(r[1])) for r in rows}

    # --- moderation (core.game.moderate) ------------------------------------------------

    def round_generation(self, round_id: str) -> int | None:
        row = (
            self._conn()
            .execute("SELECT generation_id FROM rounds WHERE id = ?", (round_id,))
            .fetchone()
        )
        return None if row is None else int(row[0])

    def set_moderation(self, generation_id: int, state: str, at: float) -> bool:
        """Set a generation's moderation state ("reported", "hidden" or "restored");
        False when there is no such generation."""
        if state not in (*WITHDRAWN, "restored"):
            raise ValueError(f"no moderation state {state!r}")
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE generations SET moderation = ?, moderated_at = ? WHERE id = ?",
                (state, at, generation_id),
            )
        return cursor.rowcount == 1

    def moderation_list(self) -> list[dict[str, Any]]:
        """Every generation with a moderation state, latest change first: id, prompt,
        state, when, and its rounds' ids (a reported round is one of them)."""
        rows = self._conn().execute(
            "SELECT g.id, g.prompt, g.moderation, g.moderated_at, "
            "(SELECT group_concat(r.id, ' ') FROM rounds r WHERE r.generation_id = g.id) "
            "FROM generations g WHERE g.moderation IS NOT NULL "
            "ORDER BY g.moderated_at DESC, g.id"
        )
        return [
            {
                "generation_id": r[0],
                "prompt": r[1],
                "state": r[2],
                "at": r[3],
                "rounds": (r[4] or "").split(),
            }
            for r in rows
        ]

    def _counted(self) -> str:
        """The WHERE clause that leaves out of the verdicts the guesses on reported or hidden
        generations and on generations out of their model's domain, or "" when there is
        none (then the covering indexes answer alone; the filter needs each guess's
        generation_id)."""
        withdrawn, out_of_domain = (
            self._conn()
            .execute(
                "SELECT EXISTS (SELECT 1 FROM generations "
                "WHERE moderation IN ('reported', 'hidden')), "
                "EXISTS (SELECT 1 FROM generations WHERE out_of_domain = 1)"
            )
            .fetchone()
        )
        conditions = [
            sql for sql, on in ((COUNTED_SQL, withdrawn), (IN_DOMAIN, out_of_domain)) if on
        ]
        return f" WHERE {' AND '.join(conditions)}" if conditions else ""

    def count_withdrawn(self) -> dict[str, int]:
        """Generations out of the pool and the verdicts, and the guesses left out with them."""
        conn = self._conn()
        (generations,) = conn.execute(
            "SELECT count(*) FROM generations WHERE moderation IN ('reported', 'hidden')"
        ).fetchone()
        (guesses,) = conn.execute(
            f"SELECT count(*) FROM guesses WHERE NOT ({COUNTED_SQL})"
        ).fetchone()
        return {"generations": int(generations), "guesses": int(guesses)}


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """The column names of ``table``, from the live schema."""
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _insert(
    conn: sqlite3.Connection,
    table: str,
    row: dict[str, Any],
    *,
    columns: Sequence[str] | None = None,
    or_ignore: bool = False,
    outcome: str = "written",
) -> sqlite3.Cursor:
    """INSERT one row given as a dict; every key must be a column of ``table`` (``columns``,
    read from the schema when None), else DatabaseError ("nothing was <outcome>").
    ``or_ignore``: a row whose key is already there is skipped (rowcount 0)."""
    if columns is None:
        columns = _columns(conn, table)
    unknown = [c for c in row if c not in columns]
    if unknown:
        raise DatabaseError(
            f"a {table} row names columns this database does not have "
            f"({', '.join(sorted(unknown))[:200]}); nothing was {outcome}"
        )
    names = list(row)
    verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
    return conn.execute(
        f"{verb} INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [row[c] for c in names],
    )


def default_images_dir(db_path: Path) -> Path:
    """The images folder that goes with a database when none is given: ``<db dir>/images``."""
    return Path(db_path).parent / "images"
