"""core.game.inference and core.game.verdicts on counts, against scipy and written-out rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest, norm

from core.game import inference
from core.game.inference import ClusterCounts
from core.game.verdicts import (
    DISTINGUISHABLE,
    INDISTINGUISHABLE,
    NO_DATA,
    NOT_ENOUGH_DATA,
    GroupCounts,
    assess,
)


def group(
    correct: int,
    decided: int,
    cant_tell: int = 0,
    *,
    mode: str = "duel",
    variant: str = "nf4",
    per_player: int = 1,
    rng: np.random.Generator | None = None,
) -> GroupCounts:
    """A group whose decided answers come from players of ``per_player`` answers each and
    from generations drawn at random: no clustering in truth."""
    rng = np.random.default_rng(0) if rng is None else rng
    right = np.zeros(decided, dtype=bool)
    right[rng.permutation(decided)[:correct]] = True
    players = np.arange(decided) // per_player
    generations = rng.integers(0, 30, decided)
    return GroupCounts(
        mode,
        variant,
        decided + cant_tell,
        correct,
        cant_tell,
        ClusterCounts.from_labels(players, right),
        ClusterCounts.from_labels(generations, right),
    )


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (113, 200), (115, 200)])
@pytest.mark.parametrize("chance", [0.5, 1 / 3])
def test_exact_interval_and_test_are_scipys_clopper_pearson_and_central_test(k, n, chance):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert inference.exact_interval(k, n, 0.95) == pytest.approx((ci.low, ci.high), abs=1e-9)
    central = min(1.0, 2 * min(binom.cdf(k, n, chance), binom.sf(k - 1, n, chance)))
    assert inference.exact_p_value(k, n, chance) == pytest.approx(central, rel=1e-9, abs=1e-12)


def test_interval_excludes_chance_exactly_when_the_test_rejects():
    rng = np.random.default_rng(1)
    for _ in range(3000):
        n = float(rng.uniform(1, 400)) if rng.random() < 0.5 else int(rng.integers(1, 400))
        k = float(rng.uniform(0, n)) if isinstance(n, float) else int(rng.integers(0, n + 1))
        chance = float(rng.choice([0.5, 1 / 3]))
        level = float(rng.choice([0.95, 0.9875, 0.99]))
        low, high = inference.exact_interval(k, n, level)
        p = inference.exact_p_value(k, n, chance)
        if abs(p - (1 - level)) < 1e-9:
            continue  # on the boundary itself, rounding decides
        assert (low > chance or high < chance) == (p < 1 - level), (k, n, chance, level)


def test_holm_adjusted_p_values_and_its_common_level():
    assert inference.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert inference.holm([0.2]) == [0.2]
    assert inference.holm_level([0.01, 0.04, 0.03]) == pytest.approx(0.025)
    assert inference.holm_level([0.5, 0.6]) == pytest.approx(0.025)  # Bonferroni
    assert inference.holm_level([0.001, 0.002]) == pytest.approx(0.05)
    rng = np.random.default_rng(2)
    for _ in range(2000):
        ps = list(rng.uniform(0, 0.08, int(rng.integers(1, 6))) ** rng.uniform(0.5, 2))
        level = inference.holm_level(ps)
        for p, adjusted in zip(ps, inference.holm(ps), strict=True):
            assert (p < level) == (adjusted <= 0.05) or math.isclose(p, level)


def test_decided_answers_are_tested_not_answered_ones():
    # The example: right 60% when deciding, 20% can't tell. Judged on all answers
    # (96 of 200 = 48%) nothing shows; on the 160 decided (60%) it does.
    [e] = assess([group(96, 160, cant_tell=40)])
    assert e.rate == pytest.approx(0.6) and e.spotted_rate == pytest.approx(0.48)
    assert e.cant_tell_share == pytest.approx(0.2)
    assert e.cant_tell_ci_low < 0.2 < e.cant_tell_ci_high
    assert e.p_value_binomial == pytest.approx(inference.exact_p_value(96, 160, 0.5))
    assert e.p_value_binomial < 0.02
    # A chance player who says "can't tell" often is not penalised: 50% of decided.
    [chance] = assess([group(60, 120, cant_tell=80)])
    assert chance.verdict != DISTINGUISHABLE and chance.rate == 0.5


def test_distinguishable_is_shown_exactly_when_the_interval_excludes_chance():
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(60):
        family = []
        for mode, variant in (("trio", "all"), ("duel", "int8"), ("duel", "nf4"), ("duel", "all")):
            chance = 1 / 3 if mode == "trio" else 0.5
            n = int(rng.integers(5, 4000))
            rate = chance + float(rng.choice([0.0, 0.03, 0.08, -0.06]))
            k = int(rng.binomial(n, rate))
            family.append(group(k, n, mode=mode, variant=variant, per_player=3, rng=rng))
        for e in assess(family, rng=rng, with_more_needed=False):
            excludes = e.ci_low > e.chance or e.ci_high < e.chance
            within = e.chance - e.margin <= e.ci_low and e.ci_high <= e.chance + e.margin
            assert (e.verdict == DISTINGUISHABLE) == excludes
            assert (e.verdict == DISTINGUISHABLE) == (e.p_holm <= 0.05)
            assert (e.verdict == INDISTINGUISHABLE) == (within and not excludes)
            assert (e.verdict == NOT_ENOUGH_DATA) == (not within and not excludes)
            assert e.within_margin == within
            assert e.ci_low <= e.binomial_ci_low + 1e-12 and e.binomial_ci_high <= e.ci_high + 1e-12
            seen.add(e.verdict)
    assert seen == {DISTINGUISHABLE, INDISTINGUISHABLE, NOT_ENOUGH_DATA}


def test_the_family_shares_one_holm_level():
    strong, null = group(150, 200), group(100, 200, variant="int8")
    a, b = assess([strong, null])
    assert a.level == b.level == pytest.approx(1 - 0.05 / 1)  # Holm rejects one, stops at 1
    c, d = assess([null, group(101, 200, variant="int8")])
    assert c.level == d.level == pytest.approx(1 - 0.05 / 2)  # nothing rejected: Bonferroni
    assert c.p_holm == pytest.approx(min(1, 2 * min(c.p_value, d.p_value)))


def test_verdict_in_plain_words_with_n():
    [e] = assess([group(143, 210)])
    assert e.verdict == DISTINGUISHABLE
    assert e.verdict_text.startswith("NF4 — people spot the quantized image in 68% of decided")
    assert "n = 210, chance 50%): distinguishable." in e.verdict_text
    [equal] = assess([group(2000, 4000)])
    assert equal.verdict == INDISTINGUISHABLE
    assert equal.verdict_text.endswith("indistinguishable within ±5 points of chance.")


def test_not_enough_data_says_how_many_more_answers_would_settle_it():
    [e] = assess([group(12, 20)])
    assert e.verdict == NOT_ENOUGH_DATA and e.more_decided_needed > 0
    assert f"about {e.more_decided_needed:,} more decided answers" in e.verdict_text
    # At the current rate, that many more make a settled verdict likely (power 80%).
    total = e.decided + e.more_decided_needed
    assert inference.settle_probability(total, 0.6, 0.5, 0.05, e.level) >= 0.8
    assert inference.settle_probability(total * 0.7, 0.6, 0.5, 0.05, e.level) < 0.8


def test_clustered_players_widen_the_headline_interval():
    rng = np.random.default_rng(4)
    # 5 players hold most answers, with very different rates.
    rates = [0.3, 0.9, 0.5, 0.85, 0.35]
    players = np.repeat(np.arange(5), 200)
    right = rng.random(1000) < np.repeat(rates, 200)
    g = GroupCounts(
        "duel",
        "nf4",
        1000,
        int(right.sum()),
        0,
        ClusterCounts.from_labels(players, right),
        ClusterCounts.from_labels(rng.integers(0, 50, 1000), right),
    )
    [e] = assess([g])
    assert e.clustered_by == "players" and e.session_design_effect > 5
    assert e.effective_decided < 200 and e.session_dispersion_p < 1e-6
    assert e.ci_high - e.ci_low > 2 * (e.binomial_ci_high - e.binomial_ci_low)
    assert "players" in e.clustering_note


def test_no_answers_and_only_cant_tell():
    empty = GroupCounts("duel", "int8", 0, 0, 0, ClusterCounts.of([]), ClusterCounts.of([]))
    [e] = assess([empty])
    assert e.verdict == NO_DATA and e.p_value is None and e.rate is None
    [c] = assess([group(0, 0, cant_tell=7)])
    assert c.verdict == NO_DATA and c.cant_tell_share == 1.0 and "can't-tell" in c.verdict_text
    both = assess([empty, group(150, 200)])
    assert both[1].level == pytest.approx(0.95) and both[0].p_holm is None


def test_margin_must_be_a_fraction_of_chance():
    with pytest.raises(ValueError, match="margin"):
        assess([group(5, 10)], margin=5)


def test_tarones_test_against_its_formula_and_its_size_under_independence():
    rng = np.random.default_rng(5)
    # Written out: players of 4 answers with rates 0.2 and 0.8 spread far more than chance.
    players = np.repeat(np.arange(20), 4)
    right = np.tile([1, 0, 0, 0, 1, 1, 1, 0], 10).astype(bool)
    counts = ClusterCounts.from_labels(players, right)
    k, n = int(right.sum()), 80
    per_player = right.reshape(20, 4).sum(axis=1)
    s = ((per_player - 0.5 * 4) ** 2).sum() / 0.25
    z = (s - n) / math.sqrt(2 * 20 * 4 * 3)
    assert inference.tarone_p_value(counts, k, n) == pytest.approx(float(norm.sf(z)))
    # One answer per cluster: nothing to test.
    assert inference.tarone_p_value(ClusterCounts.from_labels(np.arange(9), right[:9]), 4, 9) == 1
    # Independent answers: the test rejects at 5% about 5% of the time (400 data sets).
    rejected = 0
    for _ in range(400):
        right = rng.random(200) < 0.6
        c = ClusterCounts.from_labels(np.arange(200) // 8, right)
        rejected += inference.tarone_p_value(c, int(right.sum()), 200) < 0.05
    assert 0.02 <= rejected / 400 <= 0.09


def test_variance_clusters_is_kish_without_spread_and_falls_to_the_heavy_clusters():
    players = np.concatenate([np.repeat(np.arange(5), 100), 5 + np.repeat(np.arange(50), 10)])
    counts = ClusterCounts.from_labels(players, np.zeros(1000))
    assert inference.variance_clusters(counts, 1000, 1.0) == pytest.approx(counts.effective_count)
    assert counts.effective_count == pytest.approx(1000**2 / (5 * 100**2 + 50 * 10**2))
    # A design effect of 3 here means the 5 heavy players carry most of the variance.
    assert 5 < inference.variance_clusters(counts, 1000, 3.0) < 9


def test_a_wider_bootstrap_without_clustering_keeps_the_binomial_headline_and_says_so():
    # Independent answers whose player bootstrap happens to be wider than the binomial one,
    # yet not significantly: the headline stays binomial and the note says they differ.
    for seed in range(50):
        g = group(130, 200, per_player=8, rng=np.random.default_rng(seed))
        [e] = assess([g])
        if e.session_design_effect > 1.1 and e.session_dispersion_p >= 0.05:
            break
    else:
        pytest.fail("no data set with a wider, non-significant player bootstrap")
    assert e.clustered_by is None and e.design_effect == 1.0 and e.effective_decided == 200
    assert (e.ci_low, e.ci_high) == (e.binomial_ci_low, e.binomial_ci_high)
    assert "The bootstrap intervals differ from the binomial" in e.clustering_note
    assert "over players" in e.clustering_note and "the binomial one" in e.clustering_note
    # The pre-test's level decides: at a level the test meets, the same data are widened.
    [w] = assess([g], clustering_level=0.99)
    assert w.clustered_by == "players" and w.effective_decided < 200
    assert w.ci_high - w.ci_low > e.ci_high - e.ci_low
    assert "Answers vary by players" in w.clustering_note and "p < 0.99" in w.clustering_note
