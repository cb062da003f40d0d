"""core.store.bench_queries: the simulator's bulk load and its check, on a real SQLite file."""

from __future__ import annotations

import json
import sqlite3

import pytest

from core.store import bench_queries
from tests.data_helpers import make_generation, make_store


def _rows(generation_id: int, session: str, n: int, start: int = 0):
    key = json.dumps({"A": "bf16", "B": "nf4"})
    rounds = [
        (f"r{session}{k}", generation_id, "duel", session, "nf4", key, 1.0 + k, 1.0 + k)
        for k in range(start, start + n)
    ]
    guesses = [
        (f"r{session}{k}", session, generation_id, "duel", "nf4", "B", "nf4", 1, 0, 1.0, 2.0 + k)
        for k in range(start, start + n)
    ]
    return rounds, guesses


def test_bulk_load_is_counted_and_checked_by_session_prefix(tmp_path):
    store = make_store(tmp_path)
    gid = store.save_generation(make_generation(0))
    bench_queries.bulk_insert_rounds_and_guesses(store, *_rows(gid, "sim_1", 3))
    bench_queries.bulk_insert_rounds_and_guesses(store, *_rows(gid, "other", 2))
    assert store.counts()["guesses"] == 5
    check = bench_queries.guess_check(store, "sim_")
    assert sorted(check["round_ids"]) == ["rsim_10", "rsim_11", "rsim_12"]
    assert check["duplicated"] == 0
    # "_" in the prefix is a character, not LIKE's any-character wildcard.
    assert bench_queries.guess_check(store, "sim1")["round_ids"] == []


def test_a_failed_bulk_load_writes_nothing(tmp_path):
    store = make_store(tmp_path)
    gid = store.save_generation(make_generation(0))
    rounds, guesses = _rows(gid, "s", 2)
    with pytest.raises(sqlite3.IntegrityError):
        bench_queries.bulk_insert_rounds_and_guesses(store, rounds + rounds[:1], guesses)
    assert store.counts()["rounds"] == 0 and store.counts()["guesses"] == 0
