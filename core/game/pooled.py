"""Verdicts pooled across deployments: ``python -m core.game.stats --from SRC [SRC ...]``.

Each SRC is a sync target (a folder, or ``hf://datasets/OWNER/NAME``, downloaded first)
holding the event files of core.game.sync. DuckDB reads every ``events/*.jsonl`` of every
source in one scan; an event is counted once per (deployment, kind, id), so a source given
twice, or two copies of one target, count once. A last line cut mid-append is skipped.

``PooledCounts`` answers the four count queries the statistics read from a Store
(``guess_groups``, ``decided_by_session``, ``decided_by_generation``, ``counts``) for one
model, so ``core.game.stats.summary`` computes the pooled verdicts with the same code as
for one database. Rounds of different models are never pooled: there is one summary per
model, and a per-deployment breakdown of the headline counts beside it. A generation is
named ``<deployment prefix>-<id>`` (ids restart in every deployment).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from core.errors import SyncTargetError
from core.game.outbox import read_into
from core.game.sync import event_files, read_manifest
from core.store.storage import Tally

logger = logging.getLogger(__name__)

DEPLOYMENT_PREFIX_CHARS = 8
_COLUMNS = "{'kind': 'VARCHAR', 'deployment': 'VARCHAR', 'id': 'VARCHAR', 'row': 'JSON'}"


def load_events(con: duckdb.DuckDBPyConnection, files: Sequence[Path]) -> None:
    """Create the tables ``guesses`` and ``generations`` (one row per id) from ``files``."""
    con.execute(
        'CREATE TEMP TABLE ev AS SELECT kind, deployment, id, "row" FROM read_json(?, '
        f"format = 'newline_delimited', columns = {_COLUMNS}, ignore_errors = true) "
        "WHERE kind IS NOT NULL",
        [[str(f) for f in files]],
    )
    con.execute(
        "CREATE TEMP TABLE generations AS SELECT DISTINCT ON (deployment, id) deployment, "
        "CAST(id AS BIGINT) AS id, \"row\"->>'prompt' AS prompt, \"row\"->>'model' AS model "
        "FROM ev WHERE kind = 'generation' ORDER BY deployment, id"
    )
    con.execute(
        "CREATE TEMP TABLE rounds AS SELECT DISTINCT ON (deployment, id) deployment, id, "
        "CAST(\"row\"->>'generation_id' AS BIGINT) AS generation_id "
        "FROM ev WHERE kind = 'round' ORDER BY deployment, id"
    )
    con.execute(
        "CREATE TEMP TABLE guesses AS SELECT DISTINCT ON (deployment, id) deployment, "
        "CAST(id AS BIGINT) AS id, \"row\"->>'session_id' AS session_id, "
        "CAST(\"row\"->>'generation_id' AS BIGINT) AS generation_id, \"row\"->>'mode' AS mode, "
        "\"row\"->>'compared_variant' AS compared_variant, \"row\"->>'variant' AS variant, "
        "CAST(\"row\"->>'correct' AS INTEGER) AS correct, "
        "CAST(\"row\"->>'cant_tell' AS INTEGER) AS cant_tell "
        "FROM ev WHERE kind = 'guess' ORDER BY deployment, id"
    )
    # Reported or hidden generations (core.game.moderate): each one's latest state.
    con.execute(
        "CREATE TEMP TABLE withdrawn AS SELECT deployment, generation_id FROM ("
        "SELECT DISTINCT ON (deployment, id) deployment, "
        "CAST(\"row\"->>'generation_id' AS BIGINT) AS generation_id, "
        "\"row\"->>'state' AS state, CAST(\"row\"->>'at' AS DOUBLE) AS changed_at "
        "FROM ev WHERE kind = 'moderation' ORDER BY deployment, id) "
        "QUALIFY row_number() OVER "
        "(PARTITION BY deployment, generation_id ORDER BY changed_at DESC) = 1 "
        "AND state IN ('reported', 'hidden')"
    )
    con.execute(
        "CREATE TEMP VIEW played AS SELECT g.*, n.model, n.prompt FROM guesses g "
        "JOIN generations n ON n.deployment = g.deployment AND n.id = g.generation_id "
        "WHERE NOT EXISTS (SELECT 1 FROM withdrawn w WHERE w.deployment = g.deployment "
        "AND w.generation_id = g.generation_id)"
    )


class PooledCounts:
    """The statistics' count queries (as core.store.storage.Store has them) over the
    pooled events of one model, optionally of one deployment."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, model: str, deployment: str | None = None
    ) -> None:
        self.con = con
        self.model = model
        self.deployment = deployment

    def _where(self) -> tuple[str, list[Any]]:
        if self.deployment is None:
            return "model = ?", [self.model]
        return "model = ? AND deployment = ?", [self.model, self.deployment]

    def guess_groups(self) -> list[tuple[str, str | None, str | None, Tally]]:
        where, params = self._where()
        rows = self.con.execute(
            "SELECT mode, compared_variant, variant, count(*), coalesce(sum(correct), 0), "
            f"sum(cant_tell) FROM played WHERE {where} "
            "GROUP BY mode, compared_variant, variant ORDER BY ALL",
            params,
        ).fetchall()
        return [(r[0], r[1], r[2], Tally(int(r[3]), int(r[4]), int(r[5]))) for r in rows]

    def decided_by_session(self) -> list[tuple[str, str, str | None, int, int, int]]:
        where, params = self._where()
        rows = self.con.execute(
            "SELECT mode, session_id, compared_variant, count(*), count(*) - sum(cant_tell), "
            f"coalesce(sum(correct), 0) FROM played WHERE {where} "
            "GROUP BY mode, session_id, compared_variant ORDER BY ALL",
            params,
        ).fetchall()
        return [(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5])) for r in rows]

    def decided_by_generation(self) -> list[tuple[str, str, str, str | None, int, int, int]]:
        where, params = self._where()
        rows = self.con.execute(
            f"SELECT mode, left(deployment, {DEPLOYMENT_PREFIX_CHARS}) || '-' || "
            "generation_id, any_value(prompt), compared_variant, count(*), "
            "count(*) - sum(cant_tell), coalesce(sum(correct), 0) "
            f"FROM played WHERE {where} "
            "GROUP BY mode, deployment, generation_id, compared_variant ORDER BY ALL",
            params,
        ).fetchall()
        return [(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6])) for r in rows]

    def counts(self) -> dict[str, int]:
        """Generations, rounds and guesses of this model, and distinct sessions that
        guessed (images: three or two per generation, not counted here)."""
        where, params = self._where()
        con = self.con
        generations = con.execute(
            f"SELECT count(*) FROM generations WHERE {where}", params
        ).fetchone()
        rounds = con.execute(
            "SELECT count(*) FROM rounds r JOIN generations n ON n.deployment = r.deployment "
            f"AND n.id = r.generation_id WHERE {where.replace('deployment', 'n.deployment')}",
            params,
        ).fetchone()
        guesses = con.execute(
            f"SELECT count(*), count(DISTINCT session_id) FROM played WHERE {where}", params
        ).fetchone()
        assert generations and rounds and guesses
        return {
            "generations": int(generations[0]),
            "rounds": int(rounds[0]),
            "guesses": int(guesses[0]),
            "sessions": int(guesses[1]),
        }


def source_folders(sources: Sequence[str], scratch: Path) -> list[tuple[str, Path]]:
    """(source as given, local folder holding its files) per source; a Hub dataset is
    downloaded under ``scratch``. Raises SyncTargetError for a source with no events."""
    out = []
    for source in sources:
        digest = hashlib.sha256(source.encode()).hexdigest()[:12]
        folder = read_into(source, scratch / digest)
        read_manifest(folder)  # refuses a foreign manifest
        if not event_files(folder):
            raise SyncTargetError(f"{source} holds no events (events/*.jsonl)")
        out.append((source, folder))
    return out


def pooled_summary(
    sources: Sequence[str], *, margin: float, summarize: Any, scratch: Path | None = None
) -> dict[str, Any]:
    """The verdicts of every model over all ``sources`` together, with the per-deployment
    breakdown. ``summarize(counts, margin=...)`` is core.game.stats.summary (a Summary,
    written in its JSON form)."""
    with tempfile.TemporaryDirectory(prefix="spot-pooled-") as tmp:
        folders = source_folders(sources, scratch or Path(tmp))
        files = [f for _, folder in folders for f in event_files(folder)]
        con = duckdb.connect()
        try:
            load_events(con, files)
            models = [
                r[0]
                for r in con.execute("SELECT DISTINCT model FROM generations ORDER BY 1").fetchall()
            ]
            deployments = con.execute(
                "SELECT deployment, model, count(*) FROM played GROUP BY ALL ORDER BY ALL"
            ).fetchall()
            out: dict[str, Any] = {
                "sources": [s for s, _ in folders],
                "models": {
                    m: summarize(PooledCounts(con, m), margin=margin).to_json() for m in models
                },
                "deployments": {},
            }
            for deployment, model, _ in deployments:
                counts = PooledCounts(con, model, deployment)
                out["deployments"].setdefault(deployment, {})[model] = {
                    "counts": counts.counts(),
                    "groups": [
                        {
                            "mode": mode,
                            "compared_variant": compared,
                            "variant": variant,
                            "answered": t.answered,
                            "correct": t.correct,
                            "cant_tell": t.cant_tell,
                        }
                        for mode, compared, variant, t in counts.guess_groups()
                    ],
                }
        finally:
            con.close()
    return out


def print_pooled(parser: Any, sources: Sequence[str], margin: float, summarize: Any) -> int:
    """``core.game.stats --from``: print the pooled summary as JSON; a source that cannot
    be read ends the command with status 2 and one line."""
    try:
        result = pooled_summary(sources, margin=margin, summarize=summarize)
    except (SyncTargetError, duckdb.Error) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
