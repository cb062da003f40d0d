"""Three verdicts from counts: distinguishable, indistinguishable within ±m, not enough data.

``assess(groups, margin, rng)`` takes the headline groups shown together (duel per quantized
variant, duel overall, trio) and returns one ``Estimate`` each. For every group:

1. rate = correct / decided; its exact test against chance (two-sided, see core.game.inference);
2. a bootstrap over players (sessions) and one over generations give two design effects,
   and Tarone's test, one per clustering, says whether answers spread more between players
   (or prompts) than independent answers would (level ``CLUSTERING_TEST_LEVEL``). The larger
   design effect among the clusterings the test finds turns n into an effective size, and
   the headline interval and p-value are the exact ones at that size. When the test finds
   none, the headline is the plain binomial interval, and the note says so, with the
   bootstrap interval beside it whenever a bootstrap is wider;
3. Holm's correction runs over the family's headline p-values, and every interval of the
   family is shown at the one level 1 − a* at which it excludes chance exactly when Holm
   rejects its test (95% when every test is rejected, 1 − 0.05 / 4 when none is);
4. the verdict reads the headline interval [lo, hi] only:
   chance outside it -> "distinguishable"; inside chance ± margin -> "indistinguishable
   within ±m points"; otherwise "not enough data yet", with about how many more decided
   answers would settle it at the current estimate (power 80%).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from core.config import MODE_SPECS, QUANTIZED_VARIANTS, VARIANTS
from core.game import inference
from core.game.inference import ALPHA, ClusterCounts

DISTINGUISHABLE = "distinguishable"
INDISTINGUISHABLE = "indistinguishable"
NOT_ENOUGH_DATA = "not_enough_data"
NO_DATA = "no_data"
ALL_VARIANTS = "all"
DEFAULT_MARGIN = 0.05  # ±5 points of chance
CANT_TELL_LEVEL = 0.95


@dataclass(frozen=True)
class GroupCounts:
    """The counts of one headline group: totals and the same answers by cluster."""

    mode: str
    variant: str  # the duel's quantized variant, or "all"
    answered: int
    correct: int
    cant_tell: int
    sessions: ClusterCounts
    generations: ClusterCounts

    @property
    def decided(self) -> int:
        return self.answered - self.cant_tell


@dataclass(frozen=True)
class Estimate:
    """Everything shown about one headline group. Rates are fractions (0…1)."""

    mode: str
    variant: str
    answered: int
    decided: int
    correct: int
    cant_tell: int
    chance: float
    margin: float
    rate: float | None  # correct / decided: the tested rate
    spotted_rate: float | None  # correct / answered: descriptive only
    cant_tell_share: float | None
    cant_tell_ci_low: float | None  # 95% exact interval of the can't-tell share
    cant_tell_ci_high: float | None
    level: float | None  # confidence level of every interval below (Holm, see module doc)
    ci_low: float | None  # the headline interval: exact, at the effective size
    ci_high: float | None
    binomial_ci_low: float | None  # exact interval as if all answers were independent
    binomial_ci_high: float | None
    sessions: int
    session_design_effect: float | None
    session_ci_low: float | None  # percentile interval of the bootstrap over players
    session_ci_high: float | None
    generations: int
    generation_design_effect: float | None
    generation_ci_low: float | None  # percentile interval of the bootstrap over generations
    generation_ci_high: float | None
    session_dispersion_p: float | None  # Tarone's test of extra-binomial spread by player
    generation_dispersion_p: float | None  # … by generation
    design_effect: float | None  # the one applied to the headline (1: none found)
    clustered_by: str | None  # "players", "prompts" or None
    effective_decided: float | None  # decided / design effect, Korn–Graubard
    p_value_binomial: float | None  # exact two-sided test, answers taken as independent
    p_value: float | None  # the same test at the effective size (the headline)
    p_holm: float | None  # Holm-adjusted headline p-value within the family
    verdict: str
    within_margin: bool | None  # the headline interval lies inside chance ± margin
    more_decided_needed: int | None  # for "not enough data": about how many more
    verdict_text: str
    clustering_note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Pass1:
    group: GroupCounts
    rate: float
    p_binomial: float
    p_value: float
    effective: float
    session_deff: float
    generation_deff: float
    session_dispersion: float
    generation_dispersion: float
    design_effect: float
    clustered_by: str | None
    session_rates: np.ndarray
    generation_rates: np.ndarray


def _first_pass(
    group: GroupCounts, rng: np.random.Generator, replicates: int, clustering_level: float
) -> _Pass1:
    k, n = group.correct, group.decided
    chance = MODE_SPECS[group.mode].chance
    session_rates = inference.bootstrap_rates(group.sessions, rng, replicates)
    generation_rates = inference.bootstrap_rates(group.generations, rng, replicates)
    session_deff = inference.design_effect(session_rates, group.sessions.count, k, n)
    generation_deff = inference.design_effect(generation_rates, group.generations.count, k, n)
    session_dispersion = inference.tarone_p_value(group.sessions, k, n)
    generation_dispersion = inference.tarone_p_value(group.generations, k, n)
    # A clustering widens the headline only when Tarone's test finds extra-binomial spread
    # along it (at ``clustering_level``); of those, the larger design effect sets it. Never
    # narrower than the binomial (Korn & Graubard truncate the design effect at 1).
    found = [
        (deff, name, counts)
        for deff, name, counts, spread_p in (
            (session_deff, "players", group.sessions, session_dispersion),
            (generation_deff, "prompts", group.generations, generation_dispersion),
        )
        if deff > 1.0 and spread_p < clustering_level
    ]
    deff, clustered_by, widest = max(found, key=lambda f: f[0]) if found else (1.0, None, None)
    effective = float(n)
    if widest is not None:
        df = inference.variance_clusters(widest, n, deff) - 1.0
        effective = inference.effective_size(n, deff, df)
    rate = k / n
    return _Pass1(
        group=group,
        rate=rate,
        p_binomial=inference.exact_p_value(k, n, chance),
        p_value=inference.exact_p_value(rate * effective, effective, chance),
        effective=effective,
        session_deff=session_deff,
        generation_deff=generation_deff,
        session_dispersion=session_dispersion,
        generation_dispersion=generation_dispersion,
        design_effect=deff,
        clustered_by=clustered_by,
        session_rates=session_rates,
        generation_rates=generation_rates,
    )


def label(mode: str, variant: str) -> str:
    """A group's name at the head of its verdict: "Trio", "NF4", "LLM.int8 or NF4"."""
    if mode == "trio":
        return "Trio"
    if variant == ALL_VARIANTS:
        return " or ".join(VARIANTS[v].label for v in QUANTIZED_VARIANTS)
    return VARIANTS[variant].label


def _pct(x: float, digits: int = 0) -> str:
    return f"{100 * x:.{digits}f}"


def _level_text(level: float) -> str:
    return f"{100 * level:.4g}%"


def _text(
    mode: str,
    variant: str,
    *,
    rate: float,
    decided: int,
    chance: float,
    low: float,
    high: float,
    level: float,
    verdict: str,
    margin: float,
    more: int | None,
) -> str:
    what = "pick the original" if mode == "trio" else "spot the quantized image"
    digits = 1 if high - low < 0.03 else 0  # a narrow interval would read "50–50%"
    head = (
        f"{label(mode, variant)} — people {what} in {_pct(rate, digits)}% of decided {mode}s "
        f"({_level_text(level)} CI {_pct(low, digits)}–{_pct(high, digits)}%, "
        f"n = {decided:,}, chance {_pct(chance)}%)"
    )
    points = f"±{100 * margin:.3g} points of chance"
    if verdict == DISTINGUISHABLE:
        tail = ": distinguishable"
        if high < chance:
            tail += " (people pick the wrong one more often than chance)"
        if low >= chance - margin and high <= chance + margin:
            tail += f", though only by less than {points} (equivalent within the margin)"
        return head + tail + "."
    if verdict == INDISTINGUISHABLE:
        return head + f": indistinguishable within {points}."
    settle = (
        f"more than {inference.MAX_MORE:,} more decided answers would be needed to settle it"
        if more is None
        else f"about {more:,} more decided answers would settle it"
    )
    return head + f": not enough data yet — {settle}."


def _interval_text(interval: tuple[float, float]) -> str:
    return f"{_pct(interval[0], 1)}–{_pct(interval[1], 1)}%"


def _clustering_note(
    first: _Pass1,
    binomial: tuple[float, float],
    bootstraps: dict[str, tuple[float, float]],
    clustering_level: float,
) -> str:
    """Says in words which interval is the headline and, when they differ, why."""
    level = f"p < {clustering_level:g}"
    if first.clustered_by is not None:
        dispersion = (
            first.session_dispersion
            if first.clustered_by == "players"
            else first.generation_dispersion
        )
        return (
            f"Answers vary by {first.clustered_by} (design effect {first.design_effect:.2f}, "
            f"Tarone's test of extra-binomial spread p = {dispersion:.2g}, {level}): the "
            f"headline interval is the exact one at an effective {first.effective:.0f} of "
            f"{first.group.decided} decided answers, wider than the binomial "
            f"{_interval_text(binomial)}."
        )
    wider = [
        (name, deff, p)
        for name, deff, p in (
            ("players", first.session_deff, first.session_dispersion),
            ("prompts", first.generation_deff, first.generation_dispersion),
        )
        if deff > 1.0
    ]
    if not wider:
        return (
            "No more spread between players or between prompts than independent answers "
            f"would show (design effects {first.session_deff:.2f} and "
            f"{first.generation_deff:.2f}): the headline interval is the binomial one."
        )
    parts = "; ".join(
        f"over {name} {_interval_text(bootstraps[name])} (design effect {deff:.2f}, "
        f"Tarone's test p = {p:.2g})"
        for name, deff, p in wider
    )
    return (
        f"The bootstrap intervals differ from the binomial {_interval_text(binomial)}: {parts}. "
        f"Tarone's test does not find more spread than independent answers would show "
        f"({level} needed), so the headline interval is the binomial one."
    )


def _no_data(group: GroupCounts, chance: float, margin: float) -> Estimate:
    share = group.cant_tell / group.answered if group.answered else None
    ct = (
        inference.exact_interval(group.cant_tell, group.answered, CANT_TELL_LEVEL)
        if group.answered
        else (None, None)
    )
    what = "no answers yet" if group.answered == 0 else "only can't-tell answers so far"
    return Estimate(
        group.mode, group.variant, group.answered, 0, 0, group.cant_tell, chance, margin,
        None, 0.0 if group.answered else None, share, ct[0], ct[1], None, None, None, None,
        None, group.sessions.count, None, None, None, group.generations.count, None, None,
        None, None, None, None, None, None, None, None, None, NO_DATA, None, None,
        f"{label(group.mode, group.variant)}: {what}.", "",
    )  # fmt: skip


def assess(
    groups: Sequence[GroupCounts],
    margin: float = DEFAULT_MARGIN,
    rng: np.random.Generator | None = None,
    *,
    alpha: float = ALPHA,
    replicates: int = inference.BOOTSTRAP_REPLICATES,
    with_more_needed: bool = True,
    clustering_level: float = inference.CLUSTERING_TEST_LEVEL,
) -> list[Estimate]:
    """The estimates of a family of headline groups shown together, in the order given.

    ``rng`` drives the bootstraps (default: a fixed seed, so a summary is reproducible).
    ``with_more_needed=False`` skips the power search (simulations that do not show it).
    ``clustering_level``: the level of Tarone's test at which a clustering widens the headline
    (the validation's ``--clustering-level`` measures what another level would cost).
    """
    if not 0.0 < margin < 0.5:
        raise ValueError(f"the margin must be between 0 and 0.5 (a fraction), got {margin}")
    rng = np.random.default_rng(0) if rng is None else rng
    firsts = {
        i: _first_pass(g, rng, replicates, clustering_level)
        for i, g in enumerate(groups)
        if g.decided > 0
    }
    tested = sorted(firsts)
    p_values = [firsts[i].p_value for i in tested]
    adjusted = dict(zip(tested, inference.holm(p_values), strict=True))
    level = 1.0 - inference.holm_level(p_values, alpha) if p_values else None
    out = []
    for i, group in enumerate(groups):
        chance = MODE_SPECS[group.mode].chance
        if i not in firsts:
            out.append(_no_data(group, chance, margin))
            continue
        first = firsts[i]
        assert level is not None
        k, n = group.correct, group.decided
        low, high = inference.exact_interval(first.rate * first.effective, first.effective, level)
        within = low >= chance - margin and high <= chance + margin
        if low > chance or high < chance:
            verdict = DISTINGUISHABLE
        elif within:
            verdict = INDISTINGUISHABLE
        else:
            verdict = NOT_ENOUGH_DATA
        more = None
        if verdict == NOT_ENOUGH_DATA and with_more_needed:
            needed = inference.decided_needed(first.rate, chance, margin, level)
            if needed is not None:
                # ``needed`` counts effective answers: scale back to decided ones.
                more = max(1, math.ceil(needed * n / first.effective) - n)
        binomial = inference.exact_interval(k, n, level)
        session = inference.percentile_interval(first.session_rates, level)
        generation = inference.percentile_interval(first.generation_rates, level)
        cant_tell = inference.exact_interval(group.cant_tell, group.answered, CANT_TELL_LEVEL)
        out.append(
            Estimate(
                mode=group.mode,
                variant=group.variant,
                answered=group.answered,
                decided=n,
                correct=k,
                cant_tell=group.cant_tell,
                chance=chance,
                margin=margin,
                rate=first.rate,
                spotted_rate=k / group.answered,
                cant_tell_share=group.cant_tell / group.answered,
                cant_tell_ci_low=cant_tell[0],
                cant_tell_ci_high=cant_tell[1],
                level=level,
                ci_low=low,
                ci_high=high,
                binomial_ci_low=binomial[0],
                binomial_ci_high=binomial[1],
                sessions=group.sessions.count,
                session_design_effect=first.session_deff,
                session_ci_low=session[0],
                session_ci_high=session[1],
                generations=group.generations.count,
                generation_design_effect=first.generation_deff,
                generation_ci_low=generation[0],
                generation_ci_high=generation[1],
                session_dispersion_p=first.session_dispersion,
                generation_dispersion_p=first.generation_dispersion,
                design_effect=first.design_effect,
                clustered_by=first.clustered_by,
                effective_decided=first.effective,
                p_value_binomial=first.p_binomial,
                p_value=first.p_value,
                p_holm=adjusted[i],
                verdict=verdict,
                within_margin=within,
                more_decided_needed=more,
                verdict_text=_text(
                    group.mode,
                    group.variant,
                    rate=first.rate,
                    decided=n,
                    chance=chance,
                    low=low,
                    high=high,
                    level=level,
                    verdict=verdict,
                    margin=margin,
                    more=more,
                ),
                clustering_note=_clustering_note(
                    first, binomial, {"players": session, "prompts": generation}, clustering_level
                ),
            )
        )
    return out
