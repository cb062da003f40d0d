"""core.game.rounds: shuffles, one guess per round, rejections that write nothing, scores."""

from __future__ import annotations

import dataclasses
import random
import threading
from collections import Counter

import pytest
from scipy.stats import chisquare

from core.config import MODE_SPECS
from core.errors import (
    ForeignRoundError,
    GenerationNotFoundError,
    IncompleteGenerationError,
    InvalidAnswerError,
    InvalidInputError,
    InvalidModeError,
    InvalidSessionError,
    NoReadyRoundError,
    RateLimitedError,
    RoundAlreadyGuessedError,
    RoundExpiredError,
    RoundNotFoundError,
)
from core.game.rounds import CANT_TELL, ReadyRounds, RoundView
from tests.data_helpers import Clock, make_game, make_generation, make_store


@pytest.fixture
def store(tmp_path):
    with make_store(tmp_path) as s:
        yield s


@pytest.fixture
def gid(store):
    return store.save_generation(make_generation())


def test_round_view_reveals_nothing_about_the_slots(store, gid):
    game = make_game(store)
    view = game.new_round("alice", "trio", gid)
    assert [f.name for f in dataclasses.fields(RoundView)] == [
        "round_id",
        "mode",
        "question",
        "slots",
        "image_paths",
        "prompt",
        "settings",
    ]
    assert view.slots == ("A", "B", "C") and view.question == "Which one is the original (BF16)?"
    assert len(view.round_id) >= 20
    key = store.fetch_round(view.round_id).answer_key
    paths = store.image_paths(gid)
    assert view.image_paths == tuple(paths[key[s]] for s in view.slots)
    text = repr(view)
    for variant in ("bf16", "int8", "nf4"):
        assert variant not in text
    duel = game.new_round("alice", "duel", gid)
    assert duel.slots == ("A", "B") and duel.question == "Which one is quantized?"


def test_trio_shuffle_is_uniform(store, gid):
    game = make_game(store, seed=1)
    orders = Counter()
    for i in range(1800):
        view = game.new_round(f"s{i}", "trio", gid)
        orders[tuple(store.fetch_round(view.round_id).answer_key.values())] += 1
    assert len(orders) == 6
    assert chisquare(list(orders.values())).pvalue > 0.001


def test_duel_shuffle_and_variant_choice_are_uniform(store, gid):
    game = make_game(store, seed=2)
    cells = Counter()
    for i in range(1200):
        view = game.new_round(f"s{i}", "duel", gid)
        cells[tuple(store.fetch_round(view.round_id).answer_key.values())] += 1
    assert set(cells) == {
        ("bf16", "int8"),
        ("int8", "bf16"),
        ("bf16", "nf4"),
        ("nf4", "bf16"),
    }
    assert chisquare(list(cells.values())).pvalue > 0.001


def test_guess_reveals_and_scores(store, gid):
    game = make_game(store)
    view = game.new_round("alice", "duel", gid)
    key = store.fetch_round(view.round_id).answer_key
    quantized = next(s for s, v in key.items() if v != "bf16")
    reveal = game.guess("alice", view.round_id, quantized)
    assert reveal.correct is True and reveal.correct_slot == quantized
    assert reveal.slot_variants == key and reveal.designated_variant == key[quantized]
    assert set(reveal.variant_stats) == {"bf16", "int8", "nf4"}
    assert {"seconds", "weight_bytes", "peak_rss_bytes", "psnr", "ssim"} <= set(
        reveal.variant_stats["nf4"]
    )
    assert reveal.score.answered == 1 and reveal.score.correct == 1 and reveal.score.streak == 1

    view = game.new_round("alice", "trio", gid)
    reveal = game.guess("alice", view.round_id, CANT_TELL)
    assert reveal.correct is None and reveal.designated_variant is None
    assert reveal.score.cant_tell == 1 and reveal.score.streak == 0
    row = store._conn().execute("SELECT * FROM guesses WHERE round_id = ?", (view.round_id,))
    row = dict(row.fetchone())
    assert row["correct"] is None and row["cant_tell"] == 1 and row["variant"] is None


def test_streaks(store, gid):
    game = make_game(store)
    plan = [True, True, False, True, None, True, True, True, False, True]
    for i, outcome in enumerate(plan):
        view = game.new_round("bob", "trio", gid)
        key = store.fetch_round(view.round_id).answer_key
        right = next(s for s, v in key.items() if v == "bf16")
        wrong = next(s for s, v in key.items() if v != "bf16")
        answer = CANT_TELL if outcome is None else right if outcome else wrong
        reveal = game.guess("bob", view.round_id, answer)
        assert reveal.correct is outcome, i
    score = game.session_score("bob")
    assert (score.answered, score.correct, score.cant_tell) == (10, 7, 1)
    assert (score.streak, score.best_streak) == (1, 3)
    fresh = game.session_score("nobody")
    assert (fresh.answered, fresh.streak, fresh.best_streak) == (0, 0, 0)


def _guess_count(store) -> int:
    return store.counts()["guesses"]


def test_rejected_guesses_write_nothing(store, gid):
    clock = Clock()
    game = make_game(store, clock=clock, round_ttl_seconds=600)
    view = game.new_round("alice", "duel", gid)

    for bad in ("C", "Z", "", "a", None, 1, ["A"], "cant tell"):
        with pytest.raises(InvalidAnswerError):
            game.guess("alice", view.round_id, bad)
    with pytest.raises(RoundNotFoundError):
        game.guess("alice", "forged-round-id-AAAAAAAAAAAA", "A")
    with pytest.raises(RoundNotFoundError):
        game.guess("alice", None, "A")
    with pytest.raises(ForeignRoundError) as foreign:
        game.guess("mallory", view.round_id, "A")
    assert isinstance(foreign.value, RoundNotFoundError)
    assert str(foreign.value) == "no such round"
    with pytest.raises(InvalidSessionError):
        game.guess("", view.round_id, "A")
    assert _guess_count(store) == 0

    game.guess("alice", view.round_id, "A")
    assert _guess_count(store) == 1
    with pytest.raises(RoundAlreadyGuessedError):
        game.guess("alice", view.round_id, "B")
    assert _guess_count(store) == 1

    late = game.new_round("alice", "trio", gid)
    clock.now += 601
    with pytest.raises(RoundExpiredError):
        game.guess("alice", late.round_id, "A")
    assert _guess_count(store) == 1


@pytest.mark.parametrize("session", ["", " x", "x\n", "a" * 129, None, 7, "tab\there"])
def test_invalid_session_ids(store, gid, session):
    with pytest.raises(InvalidSessionError):
        make_game(store).new_round(session, "duel", gid)
    assert store.counts()["rounds"] == 0


@pytest.mark.parametrize("mode", ["", "Trio", "solo", None, 3])
def test_invalid_modes(store, gid, mode):
    with pytest.raises(InvalidModeError) as e:
        make_game(store).new_round("alice", mode, gid)
    assert isinstance(e.value, InvalidInputError)
    assert store.counts()["rounds"] == 0


def test_pool_serves_unseen_generations_that_fit_the_mode(store):
    game = make_game(store)
    full = store.save_generation(make_generation(0))
    duel_only = store.save_generation(make_generation(1, ("bf16", "int8")))
    store.save_generation(make_generation(2, ("bf16",)))  # fits no mode
    assert game.has_ready_round("carol", "trio") and game.has_ready_round("carol", "duel")

    trio = game.new_round("carol", "trio")
    assert store.fetch_round(trio.round_id).generation_id == full
    assert not game.has_ready_round("carol", "trio")
    with pytest.raises(NoReadyRoundError):
        game.new_round("carol", "trio")
    view = game.new_round("carol", "duel")  # only duel_only is unseen and fits a duel
    assert store.fetch_round(view.round_id).generation_id == duel_only
    assert store.fetch_round(view.round_id).compared_variant == "int8"
    assert not game.has_ready_round("carol", "duel")
    with pytest.raises(NoReadyRoundError):
        game.new_round("carol", "duel")
    assert game.has_ready_round("dave", "duel")  # another session's pool is untouched


def test_ready_rounds_tell_a_fresh_pool_from_a_played_one(store):
    game = make_game(store)
    assert game.ready_rounds("erin", "trio") == ReadyRounds(playable=0, unseen=0)
    store.save_generation(make_generation(0))
    store.save_generation(make_generation(1, ("bf16", "int8")))  # a duel's, not a trio's
    assert game.ready_rounds("erin", "trio") == ReadyRounds(playable=1, unseen=1)
    assert game.ready_rounds("erin", "duel") == ReadyRounds(playable=2, unseen=2)
    game.new_round("erin", "trio")
    assert game.ready_rounds("erin", "trio") == ReadyRounds(playable=1, unseen=0)
    # The trio's generation was seen in a trio: it is not offered as a duel either.
    assert game.ready_rounds("erin", "duel") == ReadyRounds(playable=2, unseen=1)
    assert game.ready_rounds("frank", "trio") == ReadyRounds(playable=1, unseen=1)
    with pytest.raises(InvalidModeError):
        game.ready_rounds("erin", "solo")


def test_named_generation_must_exist_and_fit(store):
    game = make_game(store)
    partial = store.save_generation(make_generation(0, ("bf16", "int8")))
    with pytest.raises(IncompleteGenerationError):
        game.new_round("alice", "trio", partial)
    with pytest.raises(GenerationNotFoundError):
        game.new_round("alice", "duel", 999)
    with pytest.raises(GenerationNotFoundError):
        game.new_round("alice", "duel", "1")
    assert store.counts()["rounds"] == 0


def test_rate_limit_per_session_per_minute(store, gid):
    clock = Clock()
    game = make_game(store, clock=clock, rounds_per_minute=3)
    for _ in range(3):
        game.new_round("alice", "duel", gid)
    with pytest.raises(RateLimitedError):
        game.new_round("alice", "duel", gid)
    assert store.counts()["rounds"] == 3
    game.new_round("bob", "duel", gid)  # per session
    clock.now += 61
    game.new_round("alice", "duel", gid)
    assert store.counts()["rounds"] == 5


def test_fifty_threads_guessing_one_round_at_once(store, gid):
    game = make_game(store)
    view = game.new_round("alice", "duel", gid)
    barrier = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            game.guess("alice", view.round_id, "AB"[i % 2])
            result = "accepted"
        except RoundAlreadyGuessedError:
            result = "already"
        except Exception as e:  # pragma: no cover - reported by the assertion
            result = repr(e)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(outcomes) == {"accepted": 1, "already": 49}
    assert _guess_count(store) == 1


# Answer keys of rounds 0..5 of make_game(seed=7), recorded before ModeSpec drew them.
PINNED_TRIO = [
    "A=nf4 B=bf16 C=int8",
    "A=nf4 B=bf16 C=int8",
    "A=int8 B=nf4 C=bf16",
    "A=nf4 B=bf16 C=int8",
    "A=int8 B=bf16 C=nf4",
    "A=int8 B=nf4 C=bf16",
]
PINNED_DUEL = [
    "A=nf4 B=bf16",
    "A=nf4 B=bf16",
    "A=int8 B=bf16",
    "A=nf4 B=bf16",
    "A=int8 B=bf16",
    "A=bf16 B=int8",
]


def _answer_keys(store, gid, mode: str, n: int = 6) -> list[str]:
    game = make_game(store, seed=7)
    keys = []
    for i in range(n):
        key = store.fetch_round(game.new_round(f"pin{i}", mode, gid).round_id).answer_key
        keys.append(" ".join(f"{slot}={variant}" for slot, variant in key.items()))
    return keys


def test_seeded_answer_keys_of_the_default_game_are_pinned(store, gid):
    """The same seed gives the same shuffles as before modes drew their own variants."""
    assert _answer_keys(store, gid, "trio") == PINNED_TRIO
    assert _answer_keys(store, gid, "duel") == PINNED_DUEL


FOUR = ("bf16", "int8", "nf4", "fp8-layerwise")


@pytest.fixture
def four_variants():
    """Four loaded variants: the default trio and a fourth from the registry."""
    return FOUR


def _four_variant_generation(index: int = 0):
    gen = make_generation(index)
    nf4 = gen.results["nf4"]
    gen.results["fp8-layerwise"] = dataclasses.replace(
        nf4, variant="fp8-layerwise", image=nf4.image.point(lambda v: min(255, v + 9))
    )
    return gen


def test_a_trio_of_four_loaded_variants_finds_the_original_among_four(store, four_variants):
    """With four variants loaded, a trio shows BF16 and all three others on A…D (find the
    original among 4): BF16 lands on every slot, each answer key names a correct slot,
    and the round is kept under its set of variants; a duel pairs BF16 with one of them."""
    gid = store.save_generation(_four_variant_generation())
    game = make_game(store, seed=3, variants=four_variants)
    bf16_slots = Counter()
    for i in range(120):
        view = game.new_round(f"t{i}", "trio", gid)
        stored = store.fetch_round(view.round_id)
        key = stored.answer_key
        assert view.slots == tuple(key) == ("A", "B", "C", "D")
        assert sorted(key.values()) == sorted(FOUR)
        assert stored.compared_variant == "int8+nf4+fp8-layerwise"
        bf16_slot = next(s for s, v in key.items() if v == "bf16")
        bf16_slots[bf16_slot] += 1
        reveal = game.guess(f"t{i}", view.round_id, bf16_slot)
        assert reveal.correct is True and reveal.correct_slot == bf16_slot
        assert reveal.slot_variants == key
    assert set(bf16_slots) == {"A", "B", "C", "D"}
    duels = Counter()
    for i in range(60):
        duel = game.new_round(f"d{i}", "duel", gid)
        stored = store.fetch_round(duel.round_id)
        assert len(stored.answer_key) == 2 and "bf16" in stored.answer_key.values()
        duels[stored.compared_variant] += 1
    assert set(duels) == {"int8", "nf4", "fp8-layerwise"}


def test_a_trio_needs_every_loaded_variant(store, four_variants):
    """A stored generation lacking one of the loaded variants is not a trio's."""
    game = make_game(store, variants=four_variants)
    three = store.save_generation(make_generation(0))
    assert not game.has_ready_round("zoe", "trio") and game.has_ready_round("zoe", "duel")
    with pytest.raises(IncompleteGenerationError):
        game.new_round("zoe", "trio", three)


def test_slot_letters_follow_the_slot_count():
    assert MODE_SPECS["trio"].slot_labels == ("A", "B", "C")
    assert MODE_SPECS["duel"].slot_labels == ("A", "B")
    wide = dataclasses.replace(MODE_SPECS["duel"], others=4, target="reference")
    assert wide.slot_labels == ("A", "B", "C", "D", "E")
    with pytest.raises(ValueError):
        dataclasses.replace(MODE_SPECS["trio"], others=0)
    with pytest.raises(ValueError):  # "which one is quantized?" needs exactly one shown
        dataclasses.replace(MODE_SPECS["duel"], others=2)


@pytest.mark.parametrize(
    "variants",
    [
        ("bf16", "int8"),
        ("bf16", "int8", "nf4"),
        ("bf16", "int8", "nf4", "fp8-layerwise"),
        ("bf16", "int8", "nf4", "fp8-layerwise", "torchao-int8"),
    ],
)
def test_a_trio_shows_k_slots_with_chance_one_in_k(variants):
    """The trio shows BF16 and every loaded quantized variant: k slots A…, chance 1/k, kept
    under its set (None for the mission's trio); the duel always shows 2, chance 1/2."""
    trio, duel = MODE_SPECS["trio"], MODE_SPECS["duel"]
    k = len(variants)
    assert trio.slots_for(variants) == k and duel.slots_for(variants) == 2
    key = trio.draw(variants, random.Random(k))
    assert tuple(key) == tuple("ABCDE"[:k]) and sorted(key.values()) == sorted(variants)
    assert key[trio.correct_slot(key)] == "bf16"
    compared = trio.compared_variant(key)
    assert compared == (None if variants == ("bf16", "int8", "nf4") else "+".join(variants[1:]))
    assert trio.chance_of(compared) == pytest.approx(1 / k)
    assert duel.chance_of(duel.compared_variant(duel.draw(variants, random.Random(0)))) == 0.5


def test_a_mode_never_draws_a_round_without_bf16_or_with_too_few_others():
    rng = random.Random(0)
    with pytest.raises(IncompleteGenerationError):
        MODE_SPECS["duel"].draw(["int8", "nf4"], rng)
    with pytest.raises(IncompleteGenerationError):
        MODE_SPECS["trio"].draw(["bf16"], rng)
    with pytest.raises(IncompleteGenerationError):
        MODE_SPECS["trio"].draw(["int8", "nf4", "fp8-layerwise"], rng)
    with pytest.raises(IncompleteGenerationError):
        MODE_SPECS["trio"].correct_slot({"A": "int8", "B": "nf4"})
    key = MODE_SPECS["duel"].draw(["bf16", "int8"], rng)
    assert MODE_SPECS["duel"].target_variant(key) == "int8"
    assert MODE_SPECS["duel"].compared_variant(key) == "int8"
    assert MODE_SPECS["trio"].compared_variant({"A": "bf16", "B": "int8", "C": "nf4"}) is None
