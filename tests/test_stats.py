"""core.game.stats against independently computed figures (formulas written out here)."""

from __future__ import annotations

import json
import math

import pytest

from core.game.rounds import CANT_TELL
from core.game.stats import (
    DISTINGUISHABLE,
    NO_DATA,
    NOT_DISTINGUISHABLE,
    detection,
    detection_table,
    hardest_prompts,
    session_stats,
    summary,
    trio_picks,
)
from core.store.storage import Tally
from tests.data_helpers import make_game, make_generation, make_store

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return center - half, center + half


def p_greater(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@pytest.mark.parametrize(
    ("k", "n", "chance"), [(20, 30, 0.5), (15, 30, 0.5), (0, 12, 1 / 3), (40, 40, 1 / 3)]
)
def test_detection_matches_the_formulas(k, n, chance):
    mode = "duel" if chance == 0.5 else "trio"
    d = detection(mode, "all", Tally(answered=n, correct=k, cant_tell=2))
    low, high = wilson(k, n)
    assert d.ci_low == pytest.approx(low, abs=1e-9)
    assert d.ci_high == pytest.approx(high, abs=1e-9)
    assert d.p_value == pytest.approx(p_greater(k, n, chance), rel=1e-9)
    assert d.rate == k / n and d.decided == n - 2 and d.decided_rate == k / (n - 2)
    assert d.verdict == (DISTINGUISHABLE if d.p_value < 0.05 else NOT_DISTINGUISHABLE)


def test_no_answers():
    d = detection("duel", "int8", Tally(0, 0, 0))
    assert d.rate is None and d.p_value is None and d.verdict == NO_DATA


def _play(game, store, session, mode, gid, outcome):
    """One round with a forced outcome: True correct, False wrong, None can't tell.
    Returns (compared variant, designated variant)."""
    view = game.new_round(session, mode, gid)
    key = store.fetch_round(view.round_id).answer_key
    target = "bf16" if mode == "trio" else next(v for v in key.values() if v != "bf16")
    right = next(s for s, v in key.items() if v == target)
    wrong = next(s for s, v in key.items() if v != target)
    answer = CANT_TELL if outcome is None else right if outcome else wrong
    game.guess(session, view.round_id, answer)
    compared = None if mode == "trio" else target
    return compared, None if outcome is None else key[answer]


def test_tables_from_stored_guesses(tmp_path):
    store = make_store(tmp_path)
    game = make_game(store, seed=5)
    easy = store.save_generation(make_generation(0))
    hard = store.save_generation(make_generation(1))
    expected = {}  # (mode, variant) -> [answered, correct, cant_tell]
    picks = {"bf16": 0, "int8": 0, "nf4": 0, None: 0}
    plan = [True] * 9 + [False] * 2 + [None]  # easy: mostly right
    hard_plan = [False] * 6 + [True] * 2 + [None] * 2
    for i, (gid, outcome) in enumerate([(easy, o) for o in plan] + [(hard, o) for o in hard_plan]):
        for mode in ("duel", "trio"):
            compared, designated = _play(game, store, f"s{i % 3}", mode, gid, outcome)
            for key in ((mode, compared or "all"), (mode, "all")) if compared else ((mode, "all"),):
                row = expected.setdefault(key, [0, 0, 0])
                row[0] += 1
                row[1] += outcome is True
                row[2] += outcome is None
            if mode == "trio":
                picks[designated] += 1

    table = {(d.mode, d.variant): d for d in detection_table(store)}
    for key, (n, k, c) in expected.items():
        d = table[key]
        assert (d.answered, d.correct, d.cant_tell) == (n, k, c), key
        assert (d.ci_low, d.ci_high) == pytest.approx(wilson(k, n))
        chance = 0.5 if key[0] == "duel" else 1 / 3
        assert d.p_value == pytest.approx(p_greater(k, n, chance))

    tp = trio_picks(store)
    assert tp["answered"] == sum(picks.values())
    assert tp["cant_tell"] == picks[None]
    for v in ("bf16", "int8", "nf4"):
        assert tp["picked_as_original"][v]["count"] == picks[v]

    hardest = hardest_prompts(store, limit=5, min_answered=5, mode="duel")
    assert [h["generation_id"] for h in hardest] == [hard, easy]
    assert hardest[0]["correct"] == 2 and hardest[0]["answered"] == 10
    assert hardest_prompts(store, limit=5, min_answered=11, mode="duel")[0]["generation_id"] == easy
    assert hardest_prompts(store, min_answered=100) == []

    score = session_stats(store, "s0")
    assert score["answered"] == sum(1 for i in range(22) if i % 3 == 0) * 2
    s = summary(store)
    assert json.loads(json.dumps(s)) == s
    assert s["counts"]["guesses"] == 44 and s["counts"]["sessions"] == 3


def test_summary_of_an_empty_database(tmp_path):
    s = summary(make_store(tmp_path))
    assert all(d["verdict"] == NO_DATA for d in s["detection"])
    assert s["counts"]["guesses"] == 0
    json.dumps(s)
