"""Validate the verdicts on simulated players with known truth, used the way the app is used.

``python -m core.bench.simulate --validate [--studies S] [--fast] [--json] [--seed N]`` runs
the criteria of the statistics issues (24's (a)–(e) first), prints one row per figure with
its machine-readable name, the figure and its bound, and exits 1 if any figure misses.

The live figures (a), (b), (e) follow whole paths of answers: the live test and the live
interval depend on a row's (correct, decided) only, so a path of 10,000 answers is one
cumulative sum, and "look after every answer" checks every prefix. They call the same
functions as core.game.verdicts (``inference.log_e_value``, ``confidence_halfwidth``,
``row_alphas``, ``verdicts.decide``'s rule, vectorised); the app's family is its four
headline rows (trio; duel int8, NF4, and both). The descriptive figures (c), (d) go through
``verdicts.assess`` on the per-person and per-generation counts SQL would return.

``fast=True`` (the CI) runs fewer studies and loosens every bound by three Monte-Carlo
standard errors of a share at that bound, √(b (1 − b) / studies): never tuned to pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binom

from core.config import MODE_SPECS
from core.game import inference
from core.game.inference import ClusterCounts
from core.game.verdicts import DEFAULT_MARGIN, GroupCounts, assess

FAMILY_ROWS = 4  # the app's headline rows: trio; duel int8, NF4, both
GENERATIONS = 40
ROUNDS_PER_PLAYER_MEAN = 10
MC_ERRORS = 3.0  # how many Monte-Carlo standard errors the fast run loosens a bound by
CHUNK = 100  # studies per vectorised block (memory: CHUNK × path length floats)


# --- the figures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One measured figure: ``name`` is machine-readable (a script reads it), ``bound``
    None means shown for information."""

    name: str
    criterion: str
    setting: str
    value: float
    bound: float | None
    at_least: bool  # True: value must be >= bound; False: <= bound
    studies: int
    unit: str = "share"  # "share" (0…1) or "answers"

    def loosened(self, fast: bool) -> float | None:
        if self.bound is None or not fast or self.unit != "share":
            return self.bound
        error = MC_ERRORS * math.sqrt(self.bound * (1 - self.bound) / self.studies)
        return self.bound - error if self.at_least else self.bound + error

    def holds(self, fast: bool) -> bool:
        bound = self.loosened(fast)
        if bound is None:
            return True
        return self.value >= bound if self.at_least else self.value <= bound

    def to_dict(self, fast: bool) -> dict[str, Any]:
        return {**asdict(self), "bound_used": self.loosened(fast), "holds": self.holds(fast)}


# --- live paths (vectorised) -----------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """The app's per-row levels for a family of ``rows``."""

    rows: int = FAMILY_ROWS
    alpha: float = inference.ALPHA

    @property
    def test_alpha(self) -> float:
        return inference.row_alphas(self.rows, self.alpha)[0]

    @property
    def interval_alpha(self) -> float:
        return inference.row_alphas(self.rows, self.alpha)[1]


def live_states(
    right: np.ndarray, chance: float, family: Family, margin: float = DEFAULT_MARGIN
) -> tuple[np.ndarray, np.ndarray]:
    """(distinguishable, within ±margin) after every decided answer of each path.

    ``right``: studies × answers booleans, the decided answers of one row in order (pad a
    shorter path with anything and ignore the tail). The rule is verdicts.decide's."""
    k = np.cumsum(right, axis=1, dtype=np.float64)
    n = np.arange(1, right.shape[1] + 1, dtype=np.float64)
    log_e = inference.log_e_value(k, n, chance)
    half = inference.confidence_halfwidth(n, family.interval_alpha)
    rate = k / n
    low, high = np.maximum(rate - half, 0.0), np.minimum(rate + half, 1.0)
    distinguishable = (
        (log_e >= math.log(inference.e_threshold(family.test_alpha)))
        | (low > chance)
        | (high < chance)
    )
    within = (low >= chance - margin) & (high <= chance + margin)
    return distinguishable, within


def _rows_of_a_study(
    rng: np.random.Generator, studies: int, answers: int, rates: dict[str, float], cant_tell: float
) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Per row: (mode, right, decided mask) over ``answers`` answers in each mode, studies
    × n. Answers of a mode kept per variant (the duel) go to int8 or NF4 at random; "all"
    is both. The modes are drawn duel first, the order the published figures used."""
    out = {}
    for mode in ("duel", "trio"):
        decided = rng.random((studies, answers)) >= cant_tell
        if MODE_SPECS[mode].per_variant:
            is_int8 = rng.random((studies, answers)) < 0.5
            p = np.where(is_int8, rates["int8"], rates["nf4"])
            right = rng.random((studies, answers)) < p
            out["int8"] = (mode, right, decided & is_int8)
            out["nf4"] = (mode, right, decided & ~is_int8)
            out["all"] = (mode, right, decided)
        else:
            out[mode] = (mode, rng.random((studies, answers)) < rates[mode], decided)
    return out


def _compact(right: np.ndarray, decided: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decided answers of each path moved to its front (order kept), and how many."""
    order = np.argsort(~decided, axis=1, kind="stable")
    return np.take_along_axis(right, order, axis=1), decided.sum(axis=1)


def _ever(states: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Whether each path's state holds at some look within its own length."""
    mask = np.arange(states.shape[1])[None, :] < lengths[:, None]
    return (states & mask).any(axis=1)


def monitored_family(
    rng: np.random.Generator,
    studies: int,
    answers: int,
    rates: dict[str, float],
    cant_tell: float,
    what: str,
    margin: float = DEFAULT_MARGIN,
) -> float:
    """Share of studies where, looking after every answer (``answers`` per mode), any of
    the app's four rows is ever "distinguishable" (``what="distinguishable"``) or ever
    "within ±margin" (``what="within"``)."""
    family = Family()
    hits = 0
    for start in range(0, studies, CHUNK):
        size = min(CHUNK, studies - start)
        any_row = np.zeros(size, dtype=bool)
        rows = _rows_of_a_study(rng, size, answers, rates, cant_tell)
        for mode, right, decided in rows.values():
            chance = MODE_SPECS[mode].chance
            path, lengths = _compact(right, decided)
            distinguishable, within = live_states(path, chance, family, margin)
            any_row |= _ever(distinguishable if what == "distinguishable" else within, lengths)
        hits += int(any_row.sum())
    return hits / studies


def equivalence_first(
    rng: np.random.Generator, studies: int, answers: int, margin: float = DEFAULT_MARGIN
) -> np.ndarray:
    """Per study, the decided answer at which a duel row whose true rate is exactly chance
    first says "within ±margin" (the app's family levels; inf if not within ``answers``)."""
    out = []
    for start in range(0, studies, CHUNK):
        size = min(CHUNK, studies - start)
        _, within = live_states(rng.random((size, answers)) < 0.5, 0.5, Family(), margin)
        out.append(np.where(within.any(axis=1), within.argmax(axis=1) + 1, np.inf))
    return np.concatenate(out)


def single_row_false_alarms(rng: np.random.Generator, studies: int, answers: int) -> float:
    """One duel row alone (a family of one: the live test at 5% and the interval at 5%),
    at chance, every decided answer up to ``answers``: share ever "distinguishable"."""
    family = Family(rows=1)
    hits = 0
    for start in range(0, studies, CHUNK):
        size = min(CHUNK, studies - start)
        distinguishable, _ = live_states(rng.random((size, answers)) < 0.5, 0.5, family)
        hits += int(distinguishable.any(axis=1).sum())
    return hits / studies


def first_detection(
    rng: np.random.Generator, studies: int, rate: float, mode: str, longest: int, people: int
) -> np.ndarray:
    """Per study, the decided answer at which the row is first "distinguishable" in the
    app's family (inf if not within ``longest``). ``people`` people answer in turn (each
    ``longest / people`` answers), each with their own rate: ``rate`` + N(0, 0.07²)."""
    chance = MODE_SPECS[mode].chance
    out = []
    for start in range(0, studies, CHUNK):
        size = min(CHUNK, studies - start)
        per_person = np.clip(rate + 0.07 * rng.standard_normal((size, people)), 0.0, 1.0)
        person = np.minimum(np.arange(longest) * people // longest, people - 1)
        right = rng.random((size, longest)) < per_person[:, person]
        distinguishable, _ = live_states(right, chance, Family())
        first = np.where(distinguishable.any(axis=1), distinguishable.argmax(axis=1) + 1, np.inf)
        out.append(first)
    return np.concatenate(out)


def answers_needed(
    rng: np.random.Generator, studies: int, rate: float, mode: str, power: float = 0.8
) -> float:
    """The decided answers by which ``power`` of simulated studies are first called
    "distinguishable": the app's family of four, 200 people of 10 answers each with their
    own rates (``rate`` + N(0, 0.07²)), as in criterion (e); inf when beyond 2,000."""
    first = first_detection(rng, studies, rate, mode, 2000, people=200)
    return float(np.quantile(first, power))


def fixed_n_needed(rate: float, chance: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """The smallest n at which the exact central binomial test at ``alpha``, looked at once,
    rejects with probability ``power`` when the true rate is ``rate`` (for comparison)."""
    for n in range(2, 100_000):
        k = np.arange(n + 1)
        p = np.minimum(1.0, 2.0 * np.minimum(binom.cdf(k, n, chance), binom.sf(k - 1, n, chance)))
        if binom.pmf(k, n, rate)[p <= alpha].sum() >= power:
            return n
    raise ValueError(f"no n below 100,000 reaches power {power} at rate {rate}")


# --- descriptive (one look, clustered) -------------------------------------------------------


def _group(
    person: np.ndarray, generation: np.ndarray, decided: np.ndarray, right: np.ndarray
) -> GroupCounts:
    """A duel row's counts as SQL would return them (per person, per generation)."""
    correct = right & decided
    return GroupCounts(
        "duel",
        "nf4",
        int(decided.size),
        int(correct.sum()),
        int((~decided).sum()),
        ClusterCounts.from_labels(person[decided], correct[decided]),
        ClusterCounts.from_labels(generation[decided], correct[decided]),
        ClusterCounts.from_labels(person, ~decided),
        ClusterCounts.from_labels(generation, ~decided),
    )


def _share(
    studies: int, outcome: Callable[[np.random.Generator], Any], rng: np.random.Generator
) -> np.ndarray:
    return np.mean([outcome(rng) for _ in range(studies)], axis=0)


def reload_coverage(rng: np.random.Generator, studies: int) -> np.ndarray:
    """(c) 10 people × 150 answers, a reload (a new page-load id) every 10 answers; each
    person's rate 0.6 + N(0, 0.07²) and their can't-tell share 0.2 ± 0.15 (uniform); 40
    prompts. Coverage of the population's 0.6 (per answer and per person) and 0.2 by the
    one-look intervals clustered by person (the app), and, for information, of 0.6 when
    clustered by page load (as before people were kept across reloads)."""
    people, each = 10, 150
    person = np.repeat(np.arange(people), each)
    page_load = person * 100 + np.tile(np.arange(each) // 10, people)

    def study(rng: np.random.Generator) -> tuple[bool, bool, bool, bool]:
        rates = np.clip(0.6 + 0.07 * rng.standard_normal(people), 0, 1)[person]
        cant = rng.uniform(0.05, 0.35, people)[person]
        generation = rng.integers(0, GENERATIONS, person.size)
        decided = rng.random(person.size) >= cant
        right = rng.random(person.size) < rates
        [e] = assess([_group(person, generation, decided, right)])
        [by_load] = assess([_group(page_load, generation, decided, right)])
        return (
            e.clustered_ci_low <= 0.6 <= e.clustered_ci_high,
            e.per_person_ci_low <= 0.6 <= e.per_person_ci_high,
            e.cant_tell_ci_low <= 0.2 <= e.cant_tell_ci_high,
            by_load.clustered_ci_low <= 0.6 <= by_load.clustered_ci_high,
        )

    return _share(studies, study, rng)


def players_for(rng: np.random.Generator, answered: int) -> np.ndarray:
    """A person label per answer: people answer 1 + Poisson(9) rounds each, in a row."""
    sizes = 1 + rng.poisson(ROUNDS_PER_PLAYER_MEAN - 1, size=answered)
    return np.repeat(np.arange(answered), sizes)[:answered]


def crossed_coverage(rng: np.random.Generator, studies: int) -> np.ndarray:
    """(d) 2,000 duel answers, people of 1 + Poisson(9) answers crossed with 40 prompts; a
    person's and a prompt's effects are N(0, 0.07²) each around 0.6, 20% can't tell.
    Coverage of 0.6 by the two-way interval (the app) and, for information, by the same
    interval clustered by person alone (prompts ignored)."""
    answered = 2000

    def study(rng: np.random.Generator) -> tuple[bool, bool]:
        person = players_for(rng, answered)
        generation = rng.integers(0, GENERATIONS, answered)
        effects = 0.07 * rng.standard_normal(person.max() + 1)
        prompt = 0.07 * rng.standard_normal(GENERATIONS)
        rates = np.clip(0.6 + effects[person] + prompt[generation], 0, 1)
        decided = rng.random(answered) >= 0.2
        right = rng.random(answered) < rates
        group = _group(person, generation, decided, right)
        [e] = assess([group])
        k, n = group.correct, group.decided
        variance = inference.one_way_variance(group.sessions, k / n, n)
        low, high = inference.t_interval(k / n, variance, group.sessions.count - 1)
        return e.clustered_ci_low <= 0.6 <= e.clustered_ci_high, low <= 0.6 <= high

    return _share(studies, study, rng)


# --- all of it -------------------------------------------------------------------------------


def figures(studies: int, seed: int = 0) -> list[Figure]:
    """Every figure of the validation, each from its own seeded generator."""
    rngs = iter(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(16))
    m = DEFAULT_MARGIN
    chance = {"int8": 0.5, "nf4": 0.5, "trio": 1 / 3}
    out = [
        Figure(
            "a_monitoring_false_alarms",
            "(a) continuous monitoring, nobody can tell",
            "4 rows, 20% can't tell, look after every answer, 10,000 answers per mode; "
            "share of studies ever 'distinguishable'",
            monitored_family(next(rngs), studies, 10_000, chance, 0.2, "distinguishable"),
            0.05,
            False,
            studies,
        ),
        Figure(
            "a_single_row_false_alarms",
            "(a) for information",
            "one duel row alone at 5%, every decided answer up to 10,000",
            single_row_false_alarms(next(rngs), studies, 10_000),
            None,
            False,
            studies,
        ),
    ]
    edge = {"int8": 0.5 + m, "nf4": 0.5 + m, "trio": 1 / 3 - m}
    out.append(
        Figure(
            "b_margin_edge_false_within",
            "(b) monitoring at the margin's edge",
            "every row at chance ± 5 points, 20% can't tell, look after every answer, "
            "20,000 answers per mode; share ever 'within ±5 points'",
            monitored_family(next(rngs), studies, 20_000, edge, 0.2, "within"),
            0.05,
            False,
            studies,
        )
    )
    out.append(
        Figure(
            "b_equivalence_answers_for_80_percent",
            "(b) for information",
            "a duel row exactly at chance: decided answers by which 80% of studies say "
            "'within ±5 points'",
            float(np.quantile(equivalence_first(next(rngs), studies, 8000), 0.8)),
            None,
            True,
            studies,
            unit="answers",
        )
    )
    per_answer, per_person, cant_tell, by_load = reload_coverage(next(rngs), studies)
    reload = "10 people × 150 answers, a reload every 10 answers"
    out += [
        Figure(
            "c_reload_coverage",
            "(c) reloads: one-look interval, per answer, clustered by person",
            reload,
            float(per_answer),
            0.93,
            True,
            studies,
        ),
        Figure(
            "c_reload_per_person_coverage",
            "(c) for information",
            reload + ": per-person interval",
            float(per_person),
            None,
            True,
            studies,
        ),
        Figure(
            "c_reload_cant_tell_coverage",
            "(c) for information",
            reload + ": can't-tell share (people's habits 0.2 ± 0.15)",
            float(cant_tell),
            None,
            True,
            studies,
        ),
        Figure(
            "c_reload_by_page_load_coverage",
            "(c) for information",
            reload + ": clustered by page load instead (as before)",
            float(by_load),
            None,
            True,
            studies,
        ),
    ]
    two_way, person_only = crossed_coverage(next(rngs), studies)
    crossed = "2,000 answers, people crossed with 40 prompts, spread 0.07 each"
    out += [
        Figure(
            "d_crossed_coverage",
            "(d) people × prompts: one-look two-way interval",
            crossed,
            float(two_way),
            0.93,
            True,
            studies,
        ),
        Figure(
            "d_crossed_person_only_coverage",
            "(d) for information",
            crossed + ": clustered by person only",
            float(person_only),
            None,
            True,
            studies,
        ),
    ]
    first = first_detection(next(rngs), studies, 0.6, "duel", 2000, people=200)
    out += [
        Figure(
            "e_power",
            "(e) power: duel rate 0.60",
            "2,000 decided answers from 200 people (spread 0.07), app's family of 4; "
            "share called 'distinguishable'",
            float(np.isfinite(first).mean()),
            0.80,
            True,
            studies,
        ),
        Figure(
            "e_answers_for_80_percent",
            "(e) for information",
            "decided answers by which 80% of those studies were called",
            float(np.quantile(first, 0.8)),
            None,
            True,
            studies,
            unit="answers",
        ),
        Figure(
            "e_fixed_n_answers_for_80_percent",
            "(e) for information",
            "the same power from one look at a fixed n: exact binomial test at 5%, one row",
            float(fixed_n_needed(0.6, 0.5)),
            None,
            True,
            studies,
            unit="answers",
        ),
    ]
    return out


def table(rows: list[Figure], fast: bool) -> str:
    """A Markdown table of the figures: name, criterion, setting, value, bound, holds."""
    lines = [
        "| name | criterion | setting | measured | bound | holds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for f in rows:
        bound = f.loosened(fast)
        if f.unit == "answers":
            value, bound_text = f"{f.value:,.0f}", "—"
        else:
            value = f"{f.value:.1%}"
            bound_text = "—" if bound is None else f"{'≥' if f.at_least else '≤'} {bound:.1%}"
        holds = "—" if bound is None else ("yes" if f.holds(fast) else "**NO**")
        lines.append(
            f"| `{f.name}` | {f.criterion} | {f.setting} | {value} | {bound_text} | {holds} |"
        )
    return "\n".join(lines)
