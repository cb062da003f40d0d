"""The SQL only the simulator and the benchmarks run, kept out of the app's ``Store``.

Each function takes an open ``core.store.storage.Store`` and uses its connection and its
one write transaction (``Database._conn`` / ``_write``), so it keeps every rule the Store
keeps: reads on this thread's connection, writes in one transaction that rolls back
whole. Nothing in the app calls these.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.store.storage import Store


def bulk_insert_rounds_and_guesses(
    store: Store, rounds: Iterable[tuple[Any, ...]], guesses: Iterable[tuple[Any, ...]]
) -> None:
    """Load many rows in one transaction (simulation and benchmarks only).

    ``rounds``: tuples in the column order of the rounds table; ``guesses``: tuples in
    the column order of the guesses table without the id.
    """
    with store._write() as conn:
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB for random-key inserts
        conn.executemany("INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rounds)
        conn.executemany(
            "INSERT INTO guesses (round_id, session_id, generation_id, mode, "
            "compared_variant, answer, variant, correct, cant_tell, seconds, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            guesses,
        )


def guess_check(store: Store, session_prefix: str) -> dict[str, Any]:
    """For a simulation's verification: the round ids guessed by sessions whose id
    starts with ``session_prefix``, and how many rounds have more than one guess."""
    conn = store._conn()
    pattern = session_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    round_ids = [
        r[0]
        for r in conn.execute(
            "SELECT round_id FROM guesses WHERE session_id LIKE ? ESCAPE '\\'",
            (pattern + "%",),
        )
    ]
    (duplicated,) = conn.execute(
        "SELECT count(*) FROM (SELECT round_id FROM guesses GROUP BY round_id HAVING count(*) > 1)"
    ).fetchone()
    return {"round_ids": round_ids, "duplicated": int(duplicated)}
