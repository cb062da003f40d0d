"""core.game.inference and core.game.verdicts on counts: the live test is a test martingale,
the live interval holds at every look, the two-way variance is the hand-computed one, and the
verdicts read them as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, t

from core.bench import validate
from core.game import inference
from core.game.inference import ClusterCounts
from core.game.verdicts import (
    DISTINGUISHABLE,
    INDISTINGUISHABLE,
    NO_DATA,
    NOT_ENOUGH_DATA,
    GroupCounts,
    assess,
    decide,
    label,
    needed_text,
)


def group(
    correct: int,
    decided: int,
    cant_tell: int = 0,
    *,
    mode: str = "duel",
    variant: str = "nf4",
    people: int | None = None,
    rng: np.random.Generator | None = None,
) -> GroupCounts:
    """A row whose decided answers come from ``people`` people in turn (default: one each)
    and from 30 generations drawn at random."""
    rng = np.random.default_rng(0) if rng is None else rng
    right = np.zeros(decided, dtype=bool)
    right[rng.permutation(decided)[:correct]] = True
    person = np.arange(decided) % (people or max(decided, 1))
    generations = rng.integers(0, 30, decided)
    return GroupCounts(
        mode,
        variant,
        decided + cant_tell,
        correct,
        cant_tell,
        ClusterCounts.from_labels(person, right),
        ClusterCounts.from_labels(generations, right),
    )


# --- the live test ---------------------------------------------------------------------------


@pytest.mark.parametrize("chance", [0.5, 1 / 3])
@pytest.mark.parametrize("n", [1, 10, 200, 3000])
def test_the_e_value_has_mean_one_under_the_null_exactly(chance, n):
    # E[E_n] = Σ_k P(k | chance) E_n(k): the beta-binomial probabilities, which sum to 1.
    k = np.arange(n + 1)
    terms = binom.logpmf(k, n, chance) + inference.log_e_value(k, n, chance)
    mean = float(np.exp(terms).sum())
    assert mean == pytest.approx(1.0, abs=1e-9)


def test_the_e_value_is_a_martingale_one_answer_at_a_time():
    # E[E_{n+1} | past] = chance · E(k + 1, n + 1) + (1 − chance) · E(k, n + 1) = E(k, n).
    rng = np.random.default_rng(0)
    for chance in (0.5, 1 / 3):
        n = rng.integers(0, 5000, 500).astype(float)
        k = np.floor(rng.random(500) * (n + 1))
        now = inference.log_e_value(k, n, chance)  # in logs: E grows past any float
        right = inference.log_e_value(k + 1, n + 1, chance) - now
        wrong = inference.log_e_value(k, n + 1, chance) - now
        ratio = chance * np.exp(right) + (1 - chance) * np.exp(wrong)
        np.testing.assert_allclose(ratio, 1.0, rtol=1e-9)


@pytest.mark.parametrize("chance", [0.5, 1 / 3])
def test_stopped_at_its_first_crossing_the_e_value_still_averages_at_most_one(chance):
    """Optional stopping over seeds: 4,000 null paths, each stopped when E reaches 20 or
    at 300 answers. The mean of the stopped values stays at most 1 (Monte-Carlo margin:
    the values lie in [0, 40], so the standard error is below 0.1)."""
    rng = np.random.default_rng(7)
    right = rng.random((4000, 300)) < chance
    k = np.cumsum(right, axis=1)
    log_e = inference.log_e_value(k, np.arange(1, 301), chance)
    crossed = log_e >= math.log(20)
    stop = np.where(crossed.any(axis=1), crossed.argmax(axis=1), 299)
    stopped = np.exp(log_e[np.arange(4000), stop])
    assert stopped.mean() <= 1.0 + 3 * stopped.std() / math.sqrt(4000)
    assert (stopped >= 20).mean() <= 1 / 20


def test_a_strong_effect_is_found_quickly():
    first = validate.first_detection(np.random.default_rng(1), 200, 0.8, "duel", 400, people=20)
    assert np.isfinite(first).all()
    assert np.quantile(first, 0.95) <= 120


def test_a_monitored_study_at_chance_is_rarely_called_distinguishable():
    """The fast form of criterion (a): 300 studies, the app's four rows, a look after every
    answer up to 2,000 per mode: fewer than 5% ever say "distinguishable"."""
    chance = {"int8": 0.5, "nf4": 0.5, "trio": 1 / 3}
    share = validate.monitored_family(
        np.random.default_rng(2), 300, 2000, chance, 0.2, "distinguishable"
    )
    assert share < inference.ALPHA


# --- the live interval -----------------------------------------------------------------------


def test_the_live_interval_covers_the_average_success_probability_under_clustering():
    """People of very different skill answer in blocks (a strongly clustered sequence); the
    interval at 5% covers the running average of each answer's success probability at every
    one of 2,000 looks in at least 95% of 1,000 paths."""
    rng = np.random.default_rng(3)
    paths, answers = 1000, 2000
    skill = rng.choice([0.2, 0.5, 0.95], size=(paths, 20))
    p = np.repeat(skill, answers // 20, axis=1)
    x = rng.random((paths, answers)) < p
    n = np.arange(1, answers + 1)
    rate, target = np.cumsum(x, axis=1) / n, np.cumsum(p, axis=1) / n
    half = inference.confidence_halfwidth(n, 0.05)
    missed = (np.abs(rate - target) >= half).any(axis=1)
    assert missed.mean() <= 0.05
    assert inference.confidence_halfwidth(0, 0.05) == math.inf
    assert inference.confidence_halfwidth(2000, 0.05) < inference.confidence_halfwidth(200, 0.05)


def test_the_family_splits_five_percent_evenly():
    test_alpha, interval_alpha = inference.row_alphas(4)
    assert test_alpha == interval_alpha == pytest.approx(0.05 / 8)
    assert inference.e_threshold(test_alpha) == pytest.approx(160)
    with pytest.raises(ValueError, match="at least one row"):
        inference.row_alphas(0)


# --- the descriptive interval ----------------------------------------------------------------


def test_two_way_variance_against_a_hand_computed_example():
    """Six answers (person, generation, right): P2 g1 0, P2 g0 0, P0 g1 0, P1 g0 1, P1 g2 1,
    P0 g2 1; rate 1/2. Residual sums per person: P0 0, P1 +1, P2 −1; per generation: g0 0,
    g1 −1, g2 +1. V_person = 3/2 · 2 / 36 = 1/12; V_generation = 1/12; V_answer =
    (1/2)(1/2)/5 = 1/20; V = 1/12 + 1/12 − 1/20 = 7/60, df = min(3, 3) − 1 = 2."""
    person = np.array([2, 2, 0, 1, 1, 0])
    generation = np.array([1, 0, 1, 0, 2, 2])
    right = np.array([0, 0, 0, 1, 1, 1])
    people = ClusterCounts.from_labels(person, right)
    generations = ClusterCounts.from_labels(generation, right)
    assert inference.one_way_variance(people, 0.5, 6) == pytest.approx(1 / 12)
    assert inference.one_way_variance(generations, 0.5, 6) == pytest.approx(1 / 12)
    assert inference.answer_variance(0.5, 6) == pytest.approx(1 / 20)
    assert inference.two_way_variance(people, generations, 3, 6) == pytest.approx(7 / 60)
    # The t-quantile is the level's, with min(G) − 1 = 2 degrees of freedom:
    # at 50%, t(0.75, 2) = 0.8165, half-width 0.8165 · √(7/60) = 0.2789.
    low, high, df = inference.clustered_interval(people, generations, 3, 6, level=0.5)
    assert df == 2
    assert (low, high) == pytest.approx((0.5 - 0.278887, 0.5 + 0.278887), abs=1e-6)
    low95, high95, _ = inference.clustered_interval(people, generations, 3, 6)
    assert t.ppf(0.975, 2) * math.sqrt(7 / 60) > 0.5 and (low95, high95) == (0.0, 1.0)


def test_two_way_variance_is_never_below_either_one_way_term():
    # Person sums +1, −1, 0 and every generation's sum 0: V_generation = 0, and
    # V_person + 0 − V_answer is below V_person; the guard keeps V_person.
    person = np.array([0, 0, 1, 1, 2, 2])
    generation = np.array([0, 1, 0, 1, 2, 2])
    right = np.array([1, 1, 0, 0, 1, 0])
    people = ClusterCounts.from_labels(person, right)
    generations = ClusterCounts.from_labels(generation, right)
    v_people = inference.one_way_variance(people, 0.5, 6)
    assert inference.one_way_variance(generations, 0.5, 6) == pytest.approx(0)
    assert inference.two_way_variance(people, generations, 3, 6) == pytest.approx(v_people)


def test_per_person_rate_counts_each_person_once():
    # One person right 30 of 30, three people right 1 of 3 each: pooled 33/39 = 0.85, per
    # person (1 + 3 · 1/3) / 4 = 0.5.
    person = np.concatenate([np.zeros(30), np.repeat([1, 2, 3], 3)])
    right = np.concatenate([np.ones(30), np.tile([1, 0, 0], 3)])
    mean, low, high = inference.per_person(ClusterCounts.from_labels(person, right))
    assert mean == pytest.approx(0.5)
    spread = np.std([1, 1 / 3, 1 / 3, 1 / 3], ddof=1)
    half = t.ppf(0.975, 3) * spread / 2
    assert (low, high) == pytest.approx((max(0, 0.5 - half), min(1, 0.5 + half)))


# --- verdicts --------------------------------------------------------------------------------


def test_verdicts_read_the_live_test_and_the_live_interval_as_documented():
    rng = np.random.default_rng(4)
    seen = set()
    for _ in range(60):
        family = []
        for mode, variant in (("trio", "all"), ("duel", "int8"), ("duel", "nf4"), ("duel", "all")):
            chance = 1 / 3 if mode == "trio" else 0.5
            n = int(rng.integers(5, 20000))
            rate = chance + float(rng.choice([0.0, 0.01, 0.08, -0.06]))
            family.append(group(int(rng.binomial(n, rate)), n, mode=mode, variant=variant))
        for e in assess(family):
            assert e.level == 0.95 and e.e_threshold == pytest.approx(160)
            crossed = e.log10_e_value >= math.log10(160)
            excludes = e.ci_low > e.chance or e.ci_high < e.chance
            within = e.chance - e.margin <= e.ci_low and e.ci_high <= e.chance + e.margin
            assert (e.verdict == DISTINGUISHABLE) == (crossed or excludes)
            assert (e.verdict == INDISTINGUISHABLE) == (within and not crossed and not excludes)
            assert (e.verdict == NOT_ENOUGH_DATA) == (not within and not crossed and not excludes)
            assert e.within_margin == within
            assert e.ci_low <= e.rate <= e.ci_high
            seen.add(e.verdict)
    assert seen == {DISTINGUISHABLE, INDISTINGUISHABLE, NOT_ENOUGH_DATA}
    # The interval alone can make a row distinguishable, and the test alone can.
    assert decide(0.0, 0.56, 0.7, 0.5, 0.05, 160) == (DISTINGUISHABLE, False)
    assert decide(3.0, 0.45, 0.7, 0.5, 0.05, 160) == (DISTINGUISHABLE, False)
    assert decide(0.0, 0.46, 0.54, 0.5, 0.05, 160) == (INDISTINGUISHABLE, True)


def test_the_level_does_not_move_as_data_arrive():
    levels = {
        e.level
        for n in (0, 10, 100, 1000)
        for e in assess([group(n // 2, n), group(n, n, variant="int8")])
    }
    assert levels == {0.95}


def test_decided_answers_are_tested_not_answered_ones():
    # Right 60% when deciding, 20% can't tell: judged on all answers 48%, on decided 60%.
    [e] = assess([group(600, 1000, cant_tell=250)])
    assert e.rate == pytest.approx(0.6) and e.spotted_rate == pytest.approx(0.48)
    assert e.cant_tell_share == pytest.approx(0.2)
    assert e.verdict == DISTINGUISHABLE
    [chance] = assess([group(60, 120, cant_tell=80)])
    assert chance.verdict != DISTINGUISHABLE and chance.rate == 0.5


def test_plain_sentences_first():
    [e] = assess([group(20, 37, people=9)])
    assert e.verdict_text == (
        "People can't reliably tell NF4 from BF16 yet: 37 decided answers from 9 people. "
        "Too few people to tell yet."
    )
    assert "to detect a rate of 60% in a duel" in e.needed_text.lower()
    assert "480 decided answers from at least 10 people" in e.needed_text
    [d] = assess([group(700, 1000, people=50)])
    assert d.verdict_text == (
        "People can tell NF4 from BF16: right in 70% of 1,000 decided answers from 50 "
        "people, where chance is 50%."
    )
    assert d.needed_text == ""
    [equal] = assess([group(10000, 20000, people=300)])
    assert equal.verdict == INDISTINGUISHABLE
    assert equal.verdict_text.startswith(
        "People can't tell NF4 from BF16: their rate is within ±5 points of chance (50%)"
    )
    [trio] = assess([group(100, 600, mode="trio", variant="all", people=40)])
    assert trio.verdict == DISTINGUISHABLE and "pick the wrong one" in trio.verdict_text
    assert "live 95% interval" in trio.details_text and "e-value" in trio.details_text


def test_no_answers_and_only_cant_tell():
    empty = GroupCounts("duel", "int8", 0, 0, 0, ClusterCounts.of([]), ClusterCounts.of([]))
    [e] = assess([empty])
    assert e.verdict == NO_DATA and e.log10_e_value is None and e.rate is None
    [c] = assess([group(0, 0, cant_tell=7)])
    assert c.verdict == NO_DATA and c.cant_tell_share == 1.0 and "can't tell" in c.verdict_text


def test_margin_must_be_a_fraction_of_chance():
    with pytest.raises(ValueError, match="margin"):
        assess([group(5, 10)], margin=5)


def test_a_trio_among_five_is_tested_against_one_in_five_and_named_by_its_set():
    """A trio row of five images: chance 1/5 (the same counts are distinguishable against
    1/5 and not against 1/3), named by its variants, with no simulated figure claimed;
    the family's alpha is split over every row given."""
    among = "int8+nf4+fp8-layerwise+torchao-int8"
    rows = [group(60, 200, mode="trio", variant=among, people=40)]
    [five] = assess(rows)
    [three] = assess([group(60, 200, mode="trio", variant="all", people=40)])
    assert five.chance == pytest.approx(0.2) and three.chance == pytest.approx(1 / 3)
    assert five.verdict == DISTINGUISHABLE and three.verdict != DISTINGUISHABLE
    assert "pick the original (BF16) out of five images" in five.verdict_text
    assert five.details_text.startswith(
        "Trio among 5 (LLM.int8, NF4, FP8 layerwise, torchao int8): 30.0%"
    )
    assert label("trio", among) == "Trio among 5 (LLM.int8, NF4, FP8 layerwise, torchao int8)"
    assert label("trio", "all") == "Trio"
    assert label("duel", "all", ["int8", "fp8-layerwise"]) == "LLM.int8 or FP8 layerwise"
    assert label("duel", "all") == "LLM.int8 or NF4"
    assert needed_text("trio", 0.2).startswith("No simulated figure yet for a round of 5")
    assert needed_text("trio", 1 / 3) == needed_text("trio")
    family = [
        group(60, 200, mode="trio", variant=among, people=40),
        *(group(100, 200, variant=v, people=40) for v in ("int8", "nf4", "torchao-int8")),
        group(300, 600, variant="all", people=40),
    ]
    estimates = assess(family)
    assert [e.e_threshold for e in estimates] == pytest.approx([1 / (0.025 / 5)] * 5)
    assert estimates[-1].verdict_text.endswith("decided answers from 40 people.")
    assert "LLM.int8, NF4 or torchao int8" in estimates[-1].details_text
