"""core.game.stats: the counts SQL returns, recounted in Python from the stored rows, and the
summary, rankings and verdicts built on them."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter, defaultdict

import pytest

from core.bench.simulate import build_parser, bulk_load
from core.game import inference
from core.game.rounds import CANT_TELL
from core.game.stats import (
    NO_DATA,
    detection_table,
    hardest_prompts,
    headline_groups,
    session_stats,
    summary,
    top_players,
    trio_picks,
)
from tests.data_helpers import make_game, make_generation, make_store


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
        assert (d.answered, d.correct, d.cant_tell, d.decided) == (n, k, c, n - c), key
        assert d.rate == k / (n - c)
        half = inference.confidence_halfwidth(n - c, inference.row_alphas(4)[1])
        assert (d.ci_low, d.ci_high) == pytest.approx(
            (max(0, d.rate - half), min(1, d.rate + half))
        )
        assert d.people == 3 and d.level == 0.95

    tp = trio_picks(store)
    assert tp.answered == sum(picks.values())
    assert tp.cant_tell == picks[None]
    for v in ("bf16", "int8", "nf4"):
        assert tp.picked_as_original[v].count == picks[v]

    hardest = hardest_prompts(store, limit=5, min_decided=5, mode="duel")
    assert [h.generation_id for h in hardest] == [hard, easy]
    assert hardest[0].correct == 2 and hardest[0].decided == 8
    assert hardest_prompts(store, limit=5, min_decided=9, mode="duel")[0].generation_id == easy
    assert hardest_prompts(store, min_decided=100) == []

    score = session_stats(store, "s0")
    assert score["answered"] == sum(1 for i in range(22) if i % 3 == 0) * 2
    s = summary(store)
    assert json.loads(json.dumps(s.to_json())) == s.to_json()
    assert "costs" not in s.to_json()  # a deployment's costs only where it adds them
    assert s.with_costs([]).to_json()["costs"] == []
    assert s.counts["guesses"] == 44 and s.counts["sessions"] == 3


def _bulk(tmp_path, *argv):
    store = make_store(tmp_path)
    bulk_load(store, build_parser().parse_args(["--generations", "7", "--seed", "2", *argv]))
    return store


def _guess_rows(store):
    with store.snapshot() as snap:
        return [row for batch in snap.batches("guesses") for row in batch.to_pylist()]


def test_cluster_counts_match_a_recount_of_the_rows(tmp_path):
    store = _bulk(
        tmp_path, "--bulk-guesses", "3000", "--mode", "both", "--cant-tell", "0.2",
        "--accuracy", "bf16=0.5,int8=0.55,nf4=0.7",
    )  # fmt: skip
    rows = _guess_rows(store)
    for column, clusters in (("session_id", "sessions"), ("generation_id", "generations")):
        for g in headline_groups(store):
            mine = [
                r for r in rows
                if r["mode"] == g.mode and g.variant in ("all", r["compared_variant"])
            ]  # fmt: skip
            assert g.answered == len(mine)
            assert g.cant_tell == sum(r["cant_tell"] for r in mine)
            per = defaultdict(lambda: [0, 0])
            per_cant_tell = defaultdict(lambda: [0, 0])
            for r in mine:
                per_cant_tell[r[column]][0] += r["cant_tell"]
                per_cant_tell[r[column]][1] += 1
                if not r["cant_tell"]:
                    per[r[column]][0] += r["correct"]
                    per[r[column]][1] += 1
            for counts, expected in (
                (getattr(g, clusters), per),
                (getattr(g, f"{clusters}_cant_tell"), per_cant_tell),
            ):
                got = {
                    (int(k), int(n)): int(c)
                    for k, n, c in zip(counts.correct, counts.decided, counts.clusters, strict=True)
                }
                assert got == dict(Counter(tuple(v) for v in expected.values())), (
                    g.mode, g.variant, column,
                )  # fmt: skip


def test_rankings_are_by_interval_bound_with_deterministic_ties(tmp_path):
    store = make_store(tmp_path)
    game = make_game(store, seed=1)
    gids = [store.save_generation(make_generation(i)) for i in range(5)]
    # (generation, right, wrong): two exact ties, a tiny sample at 0%, a big one at 30%.
    plan = {gids[0]: (3, 7), gids[1]: (3, 7), gids[2]: (0, 2), gids[3]: (30, 70), gids[4]: (6, 4)}
    session = 0
    for gid, (right, wrong) in plan.items():
        for outcome in [True] * right + [False] * wrong:
            _play(game, store, f"p{session % 7}", "duel", gid, outcome)
            session += 1
    hardest = hardest_prompts(store, limit=10, min_decided=1, mode="duel")
    # 30/100 has the lowest upper bound; the two 3/10 tie on everything but their id; the
    # 0/2 prompt, lowest rate of all, ranks behind them: its interval reaches 84%.
    assert [h.generation_id for h in hardest] == [gids[3], gids[0], gids[1], gids[2], gids[4]]
    bounds = [h.ci_high for h in hardest]
    assert bounds == sorted(bounds)
    assert summary(store).hardest_prompts["duel"] == hardest_prompts(store, min_decided=5)

    # Players with equal counts are ordered by session id; better lower bounds first.
    top = top_players(store, limit=10, min_decided=1, mode="duel")
    lows = [t.ci_low for t in top]
    assert lows == sorted(lows, reverse=True)
    for a, b in itertools.pairwise(top):
        if (a.ci_low, a.rate, a.decided) == (b.ci_low, b.rate, b.decided):
            assert a.session_id < b.session_id
    assert top == top_players(store, limit=10, min_decided=1, mode="duel")


def test_summary_reports_the_family_and_the_margin(tmp_path):
    store = _bulk(
        tmp_path, "--bulk-guesses", "4000", "--mode", "both", "--accuracy", "bf16=0.6,nf4=0.75"
    )
    s = summary(store, margin=0.1)
    assert s.definitions["margin"] == 0.1 and s.definitions["level"] == 0.95
    assert "e-process" in s.definitions["live_test"]
    family = s.family
    assert family["rows"] == ["trio all", "duel int8", "duel nf4", "duel all"]
    assert family["test_alpha_per_row"] == family["interval_alpha_per_row"] == 0.05 / 8
    assert family["e_threshold"] == pytest.approx(160)
    assert s.answers_needed["duel"]["rate"] == 0.6
    rows = {(e.mode, e.variant): e for e in s.estimates}
    nf4 = rows[("duel", "nf4")]
    assert nf4.verdict == "distinguishable" and nf4.log10_e_value > 10
    assert nf4.verdict_text.startswith("People can tell NF4 from BF16: right in 7")
    assert rows[("duel", "int8")].margin == 0.1
    assert all(e.level == 0.95 for e in s.estimates)
    assert s == summary(store, margin=0.1)  # the same data, the same summary
    assert s.to_json()["detection"] == [e.to_dict() for e in s.estimates]


def test_summary_of_an_empty_database(tmp_path):
    s = summary(make_store(tmp_path))
    assert all(e.verdict == NO_DATA for e in s.estimates)
    assert s.counts["guesses"] == 0 and s.family["level"] == 0.95
    json.dumps(s.to_json())


FOUR = ("bf16", "int8", "nf4", "fp8-layerwise")


def test_each_comparison_has_its_own_row_with_its_own_chance(tmp_path):
    """Rounds played by a game of three variants and by one of four, in one database: the
    mission's trio (chance 1/3) and the trio among 4 (chance 1/4) are two rows, each duel
    variant one row plus the duel over all of them, and the family's 5% is split over
    the six rows."""
    from core.bench.simulate import synthetic_generation

    store = make_store(tmp_path)
    three, four = make_game(store, seed=1), make_game(store, seed=2, variants=FOUR)
    gid = store.save_generation(synthetic_generation(0, random.Random(0), 16, FOUR))
    expected: Counter[tuple[str, str]] = Counter()
    for i in range(12):
        for game, among in ((three, "all"), (four, "int8+nf4+fp8-layerwise")):
            _play(game, store, f"p{i}-{among}", "trio", gid, i % 3 != 0)
            expected[("trio", among)] += 1
        compared, _ = _play(four, store, f"d{i}", "duel", gid, i % 2 == 0)
        expected[("duel", compared)] += 1
        expected[("duel", "all")] += 1

    s = summary(store)
    keys = [(e.mode, e.variant) for e in s.estimates]
    duels = [v for v in FOUR[1:] if ("duel", v) in expected]
    assert keys == [
        ("trio", "all"),
        ("trio", "int8+nf4+fp8-layerwise"),
        *[("duel", v) for v in duels],
        ("duel", "all"),
    ]
    assert set(duels) == {"int8", "nf4", "fp8-layerwise"}  # 12 duels drew all three
    rows = {(e.mode, e.variant): e for e in s.estimates}
    for key, answered in expected.items():
        assert rows[key].answered == answered, key
    assert rows[("trio", "all")].chance == pytest.approx(1 / 3)
    assert rows[("trio", "int8+nf4+fp8-layerwise")].chance == pytest.approx(1 / 4)
    assert all(rows[("duel", v)].chance == 0.5 for v in (*duels, "all"))
    assert rows[("trio", "all")].correct == 8 and rows[("trio", "all")].cant_tell == 0
    assert s.family["test_alpha_per_row"] == pytest.approx(0.05 / 2 / 6)
    assert s.family["e_threshold"] == pytest.approx(240)
    assert "out of four images" in rows[("trio", "int8+nf4+fp8-layerwise")].verdict_text
    assert "out of three images" in rows[("trio", "all")].verdict_text
    assert rows[("duel", "all")].details_text.startswith("LLM.int8, NF4 or FP8 layerwise: ")
    assert s.family["rows"][1] == "trio int8+nf4+fp8-layerwise"
    # One image set played in trios of 3 and of 4: its chance is theirs, weighted.
    [hardest] = hardest_prompts(store, min_decided=1, mode="trio")
    assert hardest.decided == 24 and hardest.chance == pytest.approx((12 / 3 + 12 / 4) / 24)
    # The loaded variants' rows show before anyone has answered them.
    empty = summary(make_store(tmp_path / "empty"), variants=("bf16", "nf4", "torchao-int8"))
    assert [(e.mode, e.variant) for e in empty.estimates] == [
        ("trio", "nf4+torchao-int8"),
        ("duel", "nf4"),
        ("duel", "torchao-int8"),
        ("duel", "all"),
    ]
    assert [e.verdict for e in empty.estimates] == [NO_DATA] * 4
    assert list(empty.picks.picked_as_original) == ["bf16", "nf4", "torchao-int8"]


def test_without_loaded_variants_the_rows_are_the_stored_comparisons(tmp_path):
    """The export and ``python -m core.game.stats`` load nothing: a database played only
    among four has that trio's row alone, no empty rows of the default game; an empty
    database has the default game's four."""
    from core.bench.simulate import synthetic_generation

    store = make_store(tmp_path)
    four = make_game(store, seed=2, variants=FOUR)
    gid = store.save_generation(synthetic_generation(0, random.Random(0), 16, FOUR))
    _play(four, store, "p", "trio", gid, True)
    assert summary(store).family["rows"] == ["trio int8+nf4+fp8-layerwise"]
    empty = summary(make_store(tmp_path / "empty"))
    assert empty.family["rows"] == ["trio all", "duel int8", "duel nf4", "duel all"]
