"""Validate the verdicts on simulated players with known truth.

``python -m core.bench.simulate --validate [--studies 500] [--seed 0] [--clustering-level 0.05]``
runs each criterion of
the statistics issue on ``studies`` simulated studies, prints one table row per figure and
exits 1 if any figure misses its bound. Every study goes through ``core.game.verdicts.assess``,
the same code the Results tab and summary.json use, on the same kind of counts SQL returns
(per-player and per-generation tallies); only the counting is done with numpy here.

How a simulated study is played (unless a criterion says otherwise): each player answers
1 + Poisson(9) rounds (10 on average), each round shows one of 40 generations drawn
uniformly; a player says "can't tell" with a fixed probability and otherwise is right with
the accuracy of the criterion. A duel round compares BF16 with int8 or NF4 at random.

``fast=True`` (the CI test) runs fewer studies and loosens every bound by three Monte-Carlo
standard errors of a share at that bound, sqrt(b (1 − b) / studies): never tuned to pass.
The binomial interval's shortfall in criterion 5 is not loosened (that would make it vacuous).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.game.inference import CLUSTERING_TEST_LEVEL, ClusterCounts
from core.game.verdicts import (
    DEFAULT_MARGIN,
    DISTINGUISHABLE,
    GroupCounts,
    assess,
)

ROUNDS_PER_PLAYER_MEAN = 10
GENERATIONS = 40
MC_ERRORS = 3.0  # how many Monte-Carlo standard errors the fast run loosens a bound by


@dataclass(frozen=True)
class Answers:
    """One simulated study's answers of one group: per answer its player, generation,
    whether it was decided and whether it was right."""

    player: np.ndarray
    generation: np.ndarray
    decided: np.ndarray
    correct: np.ndarray

    def subset(self, mask: np.ndarray) -> Answers:
        return Answers(
            self.player[mask], self.generation[mask], self.decided[mask], self.correct[mask]
        )

    def counts(self, mode: str, variant: str) -> GroupCounts:
        d = self.decided
        return GroupCounts(
            mode=mode,
            variant=variant,
            answered=int(d.size),
            correct=int(self.correct[d].sum()),
            cant_tell=int((~d).sum()),
            sessions=ClusterCounts.from_labels(self.player[d], self.correct[d]),
            generations=ClusterCounts.from_labels(self.generation[d], self.correct[d]),
        )


def players_for(rng: np.random.Generator, answered: int) -> np.ndarray:
    """A player label per answer: players answer 1 + Poisson(9) rounds each, in a row."""
    sizes = 1 + rng.poisson(ROUNDS_PER_PLAYER_MEAN - 1, size=answered)
    return np.repeat(np.arange(answered), sizes)[:answered]


def play(
    rng: np.random.Generator,
    answered: int,
    accuracy: float | np.ndarray,
    cant_tell: float,
    player: np.ndarray | None = None,
) -> Answers:
    """``answered`` answers; ``accuracy`` is P(right | decided), one value or one per answer."""
    player = players_for(rng, answered) if player is None else player
    decided = rng.random(answered) >= cant_tell
    correct = (rng.random(answered) < accuracy) & decided
    return Answers(player, rng.integers(0, GENERATIONS, answered), decided, correct)


def play_decided(
    rng: np.random.Generator, decided: int, accuracy: float, cant_tell: float
) -> Answers:
    """Answers until exactly ``decided`` of them are decided (can't-tell ones come on top)."""
    answered = (
        decided + int(rng.negative_binomial(decided, 1.0 - cant_tell)) if cant_tell else decided
    )
    answers = play(rng, answered, accuracy, 0.0)
    order = rng.permutation(answered)
    is_decided = np.zeros(answered, dtype=bool)
    is_decided[order[:decided]] = True
    correct = answers.correct & is_decided
    return Answers(answers.player, answers.generation, is_decided, correct)


# --- one figure per criterion ----------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    criterion: str
    setting: str
    value: float
    bound: float | None  # None: shown for information, no bound
    at_least: bool  # True: value must be >= bound; False: <= bound
    studies: int
    # False for a figure that shows a shortfall rather than validates a definition:
    # loosening "the binomial interval covers at most 90%" would only make it vacuous.
    loosen: bool = True

    def loosened(self, fast: bool) -> float | None:
        if self.bound is None or not fast or not self.loosen:
            return self.bound
        error = MC_ERRORS * math.sqrt(self.bound * (1 - self.bound) / self.studies)
        return self.bound - error if self.at_least else self.bound + error

    def holds(self, fast: bool) -> bool:
        bound = self.loosened(fast)
        if bound is None:
            return True
        return self.value >= bound if self.at_least else self.value <= bound


def _share(
    studies: int, outcome: Callable[[np.random.Generator], bool], rng: np.random.Generator
) -> float:
    return sum(outcome(rng) for _ in range(studies)) / studies


def false_alarms(
    rng: np.random.Generator, studies: int, cant_tell: float, level: float = CLUSTERING_TEST_LEVEL
) -> float:
    """Chance players, the app's four headline tests (duel int8, NF4, all; trio), Holm:
    share of studies where any of them says "distinguishable"."""

    def study(rng: np.random.Generator) -> bool:
        duel = play(rng, 400, 0.5, cant_tell)
        int8 = rng.random(400) < 0.5
        trio = play(rng, 200, 1 / 3, cant_tell)
        family = [
            duel.subset(int8).counts("duel", "int8"),
            duel.subset(~int8).counts("duel", "nf4"),
            duel.counts("duel", "all"),
            trio.counts("trio", "all"),
        ]
        estimates = assess(family, rng=rng, with_more_needed=False, clustering_level=level)
        return any(e.verdict == DISTINGUISHABLE for e in estimates)

    return _share(studies, study, rng)


def power(
    rng: np.random.Generator, studies: int, level: float = CLUSTERING_TEST_LEVEL
) -> tuple[float, float]:
    """60% right when deciding, 20% can't tell, 200 decided duel answers: the shares of
    studies flagged "distinguishable" by the headline interval and by the binomial one
    alone (what ignoring clustering would give; for information)."""
    headline = binomial = 0
    for _ in range(studies):
        group = play_decided(rng, 200, 0.6, 0.2).counts("duel", "nf4")
        e = assess([group], rng=rng, with_more_needed=False, clustering_level=level)[0]
        headline += e.verdict == DISTINGUISHABLE
        binomial += e.binomial_ci_low > 0.5 or e.binomial_ci_high < 0.5
    return headline / studies, binomial / studies


def coverage(
    rng: np.random.Generator,
    studies: int,
    rate: float,
    decided: int,
    level: float = CLUSTERING_TEST_LEVEL,
) -> float:
    """Share of studies whose headline 95% interval holds the true rate (duel, independent)."""

    def study(rng: np.random.Generator) -> bool:
        e = assess(
            [play_decided(rng, decided, rate, 0.0).counts("duel", "nf4")],
            rng=rng,
            with_more_needed=False,
            clustering_level=level,
        )[0]
        return e.ci_low <= rate <= e.ci_high

    return _share(studies, study, rng)


def equivalence(
    rng: np.random.Generator,
    studies: int,
    offset: float | None,
    margin: float = DEFAULT_MARGIN,
    level: float = CLUSTERING_TEST_LEVEL,
) -> float:
    """Duel, 2000 decided: share of studies saying "indistinguishable within ±margin" when
    the true rate is chance + offset (``offset=None``: drawn uniformly in ±margin/2)."""

    def study(rng: np.random.Generator) -> bool:
        shift = rng.uniform(-margin / 2, margin / 2) if offset is None else offset
        group = play_decided(rng, 2000, 0.5 + shift, 0.0).counts("duel", "nf4")
        e = assess([group], margin, rng=rng, with_more_needed=False, clustering_level=level)[0]
        return bool(e.within_margin)

    return _share(studies, study, rng)


def clustered_coverage(
    rng: np.random.Generator, studies: int, level: float = CLUSTERING_TEST_LEVEL
) -> tuple[float, float]:
    """5 players hold half of 1000 decided duel answers (100 each); the other half comes
    from players of 10 answers each. Every player's accuracy is drawn uniformly in
    0.65 ± 0.15; the population rate is 0.65. Returns the shares of studies whose
    headline and whose binomial interval hold 0.65."""
    population = 0.65
    heavy, light = 5, 50
    player = np.concatenate(
        [np.repeat(np.arange(heavy), 100), heavy + np.repeat(np.arange(light), 10)]
    )
    hits = {"headline": 0, "binomial": 0}
    for _ in range(studies):
        accuracy = rng.uniform(population - 0.15, population + 0.15, heavy + light)[player]
        group = play(rng, player.size, accuracy, 0.0, player=player).counts("duel", "nf4")
        e = assess([group], rng=rng, with_more_needed=False, clustering_level=level)[0]
        hits["headline"] += e.ci_low <= population <= e.ci_high
        hits["binomial"] += e.binomial_ci_low <= population <= e.binomial_ci_high
    return hits["headline"] / studies, hits["binomial"] / studies


def figures(
    studies: int, seed: int = 0, clustering_level: float = CLUSTERING_TEST_LEVEL
) -> list[Figure]:
    """Every figure of the validation, each from its own seeded generator; ``clustering_level``
    is the level of Tarone's test at which a clustering widens the headline."""
    rngs = iter(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(32))
    out = []
    for cant_tell in (0.0, 0.2, 0.4):
        out.append(
            Figure(
                "1 chance players flagged (any of 4 headline tests, Holm)",
                f"can't tell {cant_tell:.0%}",
                false_alarms(next(rngs), studies, cant_tell, clustering_level),
                0.05,
                False,
                studies,
            )
        )
    headline, binomial = power(next(rngs), studies, clustering_level)
    out.append(
        Figure(
            "2 power (one headline test, no family: 95% level)",
            "60% right when deciding, 20% can't tell, n = 200 decided",
            headline,
            0.75,
            True,
            studies,
        )
    )
    out.append(
        Figure(
            "2 (for information)",
            "the same studies, binomial interval alone (ignores clustering)",
            binomial,
            None,
            True,
            studies,
        )
    )
    for rate in (0.5, 0.6, 0.8):
        for n in (50, 200, 1000):
            out.append(
                Figure(
                    "3 interval coverage",
                    f"true rate {rate}, n = {n}",
                    coverage(next(rngs), studies, rate, n, clustering_level),
                    0.93,
                    True,
                    studies,
                )
            )
    m = DEFAULT_MARGIN
    out.append(
        Figure(
            "4 indistinguishable within ±m (m = 5 points), n = 2000",
            "true rate uniform in chance ± m/2",
            equivalence(next(rngs), studies, None, level=clustering_level),
            0.80,
            True,
            studies,
        )
    )
    for offset in (0.0, m / 4, m / 2):
        out.append(
            Figure(
                "4 (for information)",
                f"true rate chance + {100 * offset:.3g} points",
                equivalence(next(rngs), studies, offset, level=clustering_level),
                None,
                True,
                studies,
            )
        )
    headline, binomial = clustered_coverage(next(rngs), studies, clustering_level)
    out.append(
        Figure(
            "5 clustered coverage (5 players hold half the answers)",
            "headline interval (clustered where Tarone's test finds it)",
            headline,
            0.90,
            True,
            studies,
        )
    )
    out.append(
        Figure(
            "5 clustered coverage (5 players hold half the answers)",
            "binomial interval (must fall short of 90%)",
            binomial,
            0.90,
            False,
            studies,
            loosen=False,
        )
    )
    return out


def table(rows: list[Figure], fast: bool) -> str:
    """A Markdown table of the figures: criterion, setting, value, bound, holds."""
    lines = [
        "| criterion | setting | measured | bound | holds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in rows:
        bound = f.loosened(fast)
        bound_text = "—" if bound is None else f"{'≥' if f.at_least else '≤'} {bound:.1%}"
        holds = "—" if bound is None else ("yes" if f.holds(fast) else "**NO**")
        lines.append(f"| {f.criterion} | {f.setting} | {f.value:.1%} | {bound_text} | {holds} |")
    return "\n".join(lines)
