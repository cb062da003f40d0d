"""The statistics of a verdict, on counts alone (no database): pure functions of numbers.

core.game.stats reads the counts from SQL and calls these; core.bench.validate calls the same
functions on simulated players (vectorised over whole paths of answers), so what is validated
is what the app shows.

Every proportion here is correct / decided (a "can't tell" is not a decided answer).

* **The live test** (``log_e_value``): a beta-mixture likelihood ratio against "nobody can
  tell", H0: every decided answer is right with probability ``chance`` given everything
  before it. The server's uniform shuffle makes H0 exact whoever plays and whatever the
  prompt, so under H0 the mixture E_n = ∫ Π (p/p0)^x ((1 − p)/(1 − p0))^(1 − x) dBeta(p)
  = B(a + k, b + n − k) / B(a, b) / (p0^k (1 − p0)^(n − k)) is a nonnegative martingale
  with mean 1, and by Ville's inequality P(E_n ≥ 1/a at any n) ≤ a: the test is valid
  however often anyone looks, and whatever the clustering. The prior Beta(c p0, c (1 − p0))
  is centred on chance, so an effect in either direction raises E_n. It depends on (k, n)
  only, so the verdict does not depend on the answers' order.
* **The live interval** (``confidence_halfwidth``): a confidence sequence for the average,
  over the decided answers so far, of each answer's probability of being right given the
  past. Each answer lies in [0, 1], so exp(λ S_n − λ² n / 8), S_n = Σ (x_i − μ_i), is a
  supermartingale (Hoeffding's lemma, conditionally); a normal mixture over λ gives the
  two-sided boundary |S_n| < √(2 (n/4 + ρ) log(√((n/4 + ρ)/ρ) / a)) at every n at once
  (Robbins 1970; Howard et al. 2021). It needs no independence: clustering by person or by
  prompt cannot break it. What it covers is the average success probability *of the answers
  given*, whoever gave them; the population of people is the descriptive interval's job.
* **The descriptive interval** (``two_way_variance``): one look, fixed n. Two-way
  cluster-robust variance of the pooled rate (Cameron, Gelbach & Miller 2011), by person and
  by generation: V = V_person + V_generation − V_answer, each one-way term with its G/(G − 1)
  factor; t-quantile at the level shown with min(G_person, G_generation) − 1 degrees of
  freedom. The intersection of a person and a generation is taken as one answer (a person
  meets a generation once per mode; a repeated pair makes the interval slightly wider, not
  narrower). The per-person estimand, the mean of people's own rates, gets the spread of those
  rates over √G.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import betaln
from scipy.stats import t

ALPHA = 0.05  # the family's error: every live claim on the page holds together at 95%
LEVEL = 1.0 - ALPHA  # the one confidence level shown, whatever the data
# Half of the family's alpha goes to the live tests, half to the live intervals (both split
# evenly over the headline rows): a false "distinguishable" and a false "within ±m" on any
# row, at any look, together happen with probability at most ALPHA.
TEST_SHARE = 0.5
# The mixing prior Beta(c p0, c (1 − p0)) of the live test: c = 20 puts its standard
# deviation near 0.1 around chance (duel 0.109, trio 0.103), the size of effect the
# product asks about (a duel rate of 60%).
PRIOR_STRENGTH = 20.0
# The normal mixture of the live interval is tightest near this many decided answers.
INTERVAL_TUNED_FOR = 2000
# Fewer people (or prompts) than this: "too few people to tell yet" (the clustered interval
# has too few degrees of freedom, and one person's habits could carry a row).
MIN_PEOPLE = 10


@dataclass(frozen=True)
class ClusterCounts:
    """Clusters (people or generations) of one group, as distinct (k, n) pairs.

    ``correct[i]`` and ``decided[i]`` are one cluster's counts (k of n) and ``clusters[i]``
    how many clusters have exactly those counts (SQL returns them so, whatever the number of
    clusters). For the can't-tell share the same shape holds (can't tell, answered).
    """

    correct: np.ndarray
    decided: np.ndarray
    clusters: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[tuple[int, int, int]]) -> ClusterCounts:
        """From (k, n, clusters) rows; clusters with n = 0 are dropped."""
        kept = [r for r in rows if r[1] > 0 and r[2] > 0]
        arrays = np.array(kept, dtype=np.int64).reshape(-1, 3)
        return cls(arrays[:, 0], arrays[:, 1], arrays[:, 2])

    @classmethod
    def from_labels(cls, labels: np.ndarray, correct: np.ndarray) -> ClusterCounts:
        """From one answer per element: its cluster label and 1/0 (numpy)."""
        _, index = np.unique(labels, return_inverse=True)
        k = np.bincount(index, weights=correct).astype(np.int64)
        n = np.bincount(index).astype(np.int64)
        pairs, counts = np.unique(np.stack([k, n], axis=1), axis=0, return_counts=True)
        return cls(pairs[:, 0], pairs[:, 1], counts.astype(np.int64))

    @property
    def count(self) -> int:
        return int(self.clusters.sum())


# --- the live test ---------------------------------------------------------------------------


def row_alphas(rows: int, alpha: float = ALPHA) -> tuple[float, float]:
    """(test alpha, interval alpha) of each of ``rows`` headline rows: the family's alpha,
    TEST_SHARE of it to the tests, the rest to the intervals, each split evenly."""
    if rows < 1:
        raise ValueError(f"a family needs at least one row, got {rows}")
    return alpha * TEST_SHARE / rows, alpha * (1.0 - TEST_SHARE) / rows


def log_e_value(
    k: np.ndarray | float, n: np.ndarray | float, chance: float, strength: float = PRIOR_STRENGTH
) -> np.ndarray | float:
    """log E_n of k right of n decided answers against ``chance`` (elementwise on arrays):
    the beta-mixture likelihood ratio, prior Beta(c p0, c (1 − p0)). 0 when n = 0."""
    a, b = strength * chance, strength * (1.0 - chance)
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    out = (
        betaln(a + k, b + n - k)
        - betaln(a, b)
        - k * math.log(chance)
        - (n - k) * math.log1p(-chance)
    )
    return out if out.ndim else float(out)


def e_threshold(test_alpha: float) -> float:
    """The bar the e-value must reach: 1 / alpha (Ville's inequality)."""
    return 1.0 / test_alpha


# --- the live interval -----------------------------------------------------------------------


def mixture_rho(alpha: float, tuned_for: int = INTERVAL_TUNED_FOR) -> float:
    """The normal mixture's precision ρ that makes the boundary tightest near ``tuned_for``
    decided answers (Howard et al. 2021, eq. (4.4)'s approximation)."""
    v = tuned_for / 4.0
    log_term = 2.0 * math.log(1.0 / alpha)
    return v / (log_term + math.log1p(log_term))


def confidence_halfwidth(
    n: np.ndarray | float, alpha: float, tuned_for: int = INTERVAL_TUNED_FOR
) -> np.ndarray | float:
    """Half-width (a fraction) of the live interval after n decided answers: with
    probability ≥ 1 − alpha, at every n at once, |rate − average success probability| is
    below it. Infinite at n = 0."""
    n = np.asarray(n, dtype=np.float64)
    rho = mixture_rho(alpha, tuned_for)
    v = n / 4.0 + rho
    bound = np.sqrt(2.0 * v * np.log(np.sqrt(v / rho) / alpha))
    with np.errstate(divide="ignore"):
        out = np.where(n > 0, bound / np.maximum(n, 1.0), np.inf)
    return out if out.ndim else float(out)


# --- descriptive: one look, clustered --------------------------------------------------------


def one_way_variance(counts: ClusterCounts, rate: float, n: int) -> float:
    """Cluster-robust variance of the pooled rate k / n over one clustering:
    G/(G − 1) · Σ_g (k_g − rate · n_g)² / n² (0 with fewer than 2 clusters)."""
    g = counts.count
    if g < 2 or n <= 0:
        return 0.0
    residual = counts.correct - rate * counts.decided
    return g / (g - 1) * float((counts.clusters * residual * residual).sum()) / (n * n)


def answer_variance(rate: float, n: int) -> float:
    """The one-way variance with every answer its own cluster: rate (1 − rate) / (n − 1)."""
    return rate * (1.0 - rate) / (n - 1) if n > 1 else 0.0


def two_way_variance(people: ClusterCounts, generations: ClusterCounts, k: int, n: int) -> float:
    """Cameron–Gelbach–Miller two-way variance of k / n: V_people + V_generations − V_answers.

    The scalar estimate can fall below either one-way term (or below 0) when one
    clustering's estimated correlation is negative by chance; it is never taken below the
    larger one-way term (a conservative guard)."""
    rate = k / n
    v_people = one_way_variance(people, rate, n)
    v_generations = one_way_variance(generations, rate, n)
    combined = v_people + v_generations - answer_variance(rate, n)
    return max(combined, v_people, v_generations)


def t_interval(
    estimate: float, variance: float, df: float, level: float = LEVEL
) -> tuple[float, float]:
    """estimate ± t(df) · √variance at ``level`` (two-sided), clipped to [0, 1]."""
    if df < 1:
        return 0.0, 1.0
    half = float(t.ppf(0.5 + level / 2.0, df)) * math.sqrt(max(variance, 0.0))
    return max(0.0, estimate - half), min(1.0, estimate + half)


def clustered_interval(
    people: ClusterCounts, generations: ClusterCounts, k: int, n: int, level: float = LEVEL
) -> tuple[float, float, int]:
    """(low, high, df) of the per-answer rate's two-way clustered interval."""
    df = min(people.count, generations.count) - 1
    low, high = t_interval(k / n, two_way_variance(people, generations, k, n), df, level)
    return low, high, df


def per_person(people: ClusterCounts, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean of people's own rates, low, high): each person counts once, however many
    answers they gave; t-interval over people (G − 1 degrees of freedom)."""
    g = people.count
    rates = people.correct / people.decided
    mean = float((people.clusters * rates).sum()) / g
    if g < 2:
        return mean, 0.0, 1.0
    spread = float((people.clusters * (rates - mean) ** 2).sum()) / (g - 1)
    low, high = t_interval(mean, spread / g, g - 1, level)
    return mean, low, high
