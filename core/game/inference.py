"""The statistics of a verdict, on counts alone (no database): pure functions of numbers.

core.game.stats reads the counts from SQL and calls these; core.bench.validate calls the same
functions on counts of simulated players, so what is validated is what the app shows.

Every proportion here is correct / decided (a "can't tell" is not a decided answer), and
every interval is **two-sided**: a rate credibly *below* chance also shows that people tell
the images apart (they pick the wrong one consistently), so both directions count.

* Exact interval: Clopper–Pearson, written with the beta distribution so that it also takes
  the non-whole "effective" counts of a clustered sample (Korn & Graubard 1998).
* Test: the exact central binomial test, p = min(1, 2 · min(P(X ≤ k), P(X ≥ k))): it rejects
  at level a exactly when the level-(1 − a) Clopper–Pearson interval excludes chance.
* Clustering: a bootstrap over clusters (players, or generations) resamples whole clusters;
  its variance over the binomial one is the design effect ``deff``. Tarone's score test of
  extra-binomial spread (one-sided, the locally most powerful test of an intra-cluster
  correlation above 0) decides whether the data show clustering at all; when it does, the
  clustered interval is the exact interval at the effective size n / deff, with Satterthwaite's
  degrees of freedom of the clustered variance.
* Holm: the adjusted p-values of a family, and the one confidence level at which every
  interval of the family excludes chance exactly when Holm rejects that test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, binom, norm, t

ALPHA = 0.05
# Level of Tarone's test that decides whether a clustering widens the headline (one test per
# clustering: players, generations). Under independent answers the headline is widened in
# about 1 − 0.95² ≈ 10% of data sets; see README "Clustering" for what this level costs.
CLUSTERING_TEST_LEVEL = 0.05
BOOTSTRAP_REPLICATES = 2000
# Beyond this many more decided answers the power search stops and says "more than".
MAX_MORE = 10_000_000
TARGET_POWER = 0.8


@dataclass(frozen=True)
class ClusterCounts:
    """Clusters (players or generations) of one group, as distinct (correct, decided) pairs.

    ``correct[i]`` and ``decided[i]`` are one cluster's counts and ``clusters[i]`` how many
    clusters have exactly those counts (SQL returns them so; resampling clusters with
    replacement is then a multinomial draw over the pairs, whatever the number of clusters).
    """

    correct: np.ndarray
    decided: np.ndarray
    clusters: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[tuple[int, int, int]]) -> ClusterCounts:
        """From (correct, decided, clusters) rows; clusters with no decided answer are dropped."""
        kept = [r for r in rows if r[1] > 0 and r[2] > 0]
        arrays = np.array(kept, dtype=np.int64).reshape(-1, 3)
        return cls(arrays[:, 0], arrays[:, 1], arrays[:, 2])

    @classmethod
    def from_labels(cls, labels: np.ndarray, correct: np.ndarray) -> ClusterCounts:
        """From one decided answer per element: its cluster label and 1/0 correct (numpy)."""
        _, index = np.unique(labels, return_inverse=True)
        k = np.bincount(index, weights=correct).astype(np.int64)
        n = np.bincount(index).astype(np.int64)
        pairs, counts = np.unique(np.stack([k, n], axis=1), axis=0, return_counts=True)
        return cls(pairs[:, 0], pairs[:, 1], counts.astype(np.int64))

    @property
    def count(self) -> int:
        return int(self.clusters.sum())

    @property
    def effective_count(self) -> float:
        """Kish's effective number of clusters, (Σ n_j)² / Σ n_j²: 5 players holding half of
        the answers make it small even when many others played."""
        total = float((self.clusters * self.decided).sum())
        squares = float((self.clusters * self.decided.astype(np.float64) ** 2).sum())
        return total * total / squares if squares else 0.0


def exact_interval(k: float, n: float, level: float) -> tuple[float, float]:
    """Two-sided Clopper–Pearson interval of k successes in n trials (k, n may be non-whole)."""
    if n <= 0:
        raise ValueError(f"an interval needs n > 0 trials, got {n}")
    tail = (1.0 - level) / 2.0
    low = 0.0 if k <= 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k >= n else float(beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high


def exact_p_value(k: float, n: float, chance: float) -> float:
    """Exact central two-sided binomial p-value of k in n against ``chance`` (k, n may be
    non-whole): the dual of ``exact_interval``."""
    if n <= 0:
        raise ValueError(f"a test needs n > 0 trials, got {n}")
    at_least = 1.0 if k <= 0 else float(beta.cdf(chance, k, n - k + 1))  # P(X >= k)
    at_most = 1.0 if k >= n else float(beta.cdf(1.0 - chance, n - k, k + 1))  # P(X <= k)
    return min(1.0, 2.0 * min(at_least, at_most))


def bootstrap_rates(
    counts: ClusterCounts, rng: np.random.Generator, replicates: int = BOOTSTRAP_REPLICATES
) -> np.ndarray:
    """Correct / decided of ``replicates`` resamples of whole clusters with replacement."""
    total = counts.count
    if total == 0:
        raise ValueError("a cluster bootstrap needs at least one cluster with a decided answer")
    draws = rng.multinomial(total, counts.clusters / total, size=replicates)
    return (draws @ counts.correct) / (draws @ counts.decided)


def design_effect(rates: np.ndarray, clusters: int, k: int, n: int) -> float:
    """Bootstrap variance of k / n over its binomial variance p(1 − p) / n (may be below 1).

    The bootstrap variance is scaled by G / (G − 1) (G clusters) as cluster-robust variances
    are, since resampling G clusters understates the spread of a mean of G. With one
    cluster, or a rate of 0 or 1, nothing can be said: 1.
    """
    p = k / n
    binomial_variance = p * (1.0 - p) / n
    if clusters < 2 or binomial_variance == 0.0:
        return 1.0
    return float(np.var(rates, ddof=1)) * clusters / (clusters - 1) / binomial_variance


def tarone_p_value(counts: ClusterCounts, k: int, n: int) -> float:
    """Tarone's (1979) test that answers are independent, against extra-binomial spread
    between clusters (one-sided): Z = (Σ (k_j − p n_j)² / (p (1 − p)) − n) / √(2 Σ n_j (n_j − 1)),
    p = P(N(0, 1) > Z). It is the score test of an intra-cluster correlation above 0 in the
    beta-binomial model, so it weighs large clusters by their size (as the design effect does)
    where Pearson's chi-square weighs every cluster alike. 1 when it cannot tell (no cluster
    with two answers, or a rate of 0 or 1)."""
    p = k / n
    pairs = float((counts.clusters * counts.decided * (counts.decided - 1)).sum())
    if pairs == 0.0 or p in (0.0, 1.0):
        return 1.0
    residual = (counts.correct - p * counts.decided) ** 2 / (p * (1 - p))
    z = (float((counts.clusters * residual).sum()) - n) / math.sqrt(2.0 * pairs)
    return float(norm.sf(z))


def variance_clusters(counts: ClusterCounts, n: int, design_effect: float) -> float:
    """Satterthwaite's effective number of clusters behind a clustered variance: (Σ v_j)² / Σ v_j²
    with v_j = n_j (1 + (n_j − 1) ρ) the variance cluster j contributes, ρ the intra-cluster
    correlation that the design effect implies (Kish: deff = 1 + ρ Σ n_j (n_j − 1) / n).
    With ρ = 0 it is Kish's effective count; when a few large clusters carry the spread it
    falls towards their number, so the t-correction is not taken from clusters that hardly
    inform the variance."""
    pairs = float((counts.clusters * counts.decided * (counts.decided - 1)).sum())
    rho = max(0.0, design_effect - 1.0) * n / pairs if pairs else 0.0
    v = counts.decided * (1.0 + (counts.decided - 1) * rho)
    squares = float((counts.clusters * v * v).sum())
    return float((counts.clusters * v).sum()) ** 2 / squares if squares else 0.0


def percentile_interval(rates: np.ndarray, level: float) -> tuple[float, float]:
    """The bootstrap percentile interval at ``level`` (two-sided)."""
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(rates, [tail, 1.0 - tail])
    return float(low), float(high)


def effective_size(n: int, design_effect: float, degrees_of_freedom: float) -> float:
    """Korn & Graubard's effective sample size: n / deff (deff at least 1), shrunk by
    (t(n − 1) / t(df))², df being the degrees of freedom of the clustered variance (here
    ``variance_clusters`` − 1), so a variance estimated from few clusters is not taken as
    exact. Never more than n."""
    if design_effect <= 1.0:
        return float(n)
    size = n / design_effect
    if n > 1:
        ratio = t.ppf(0.975, n - 1) / t.ppf(0.975, max(degrees_of_freedom, 1.0))
        size *= ratio * ratio
    return min(float(n), size)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (p_values[i], i))
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm_level(p_values: Sequence[float], alpha: float = ALPHA) -> float:
    """The common test level a* of a Holm family: p_i < a* exactly when Holm rejects test i.

    Holm rejects the sorted p(1) … p(r−1) and stops at the first p(r) > alpha / (m − r + 1).
    Every rejected p is below that threshold (each was below its own, smaller one) and every
    kept p is at least p(r): so intervals at confidence 1 − a* with a* = alpha / (m − r + 1)
    exclude chance exactly for the rejected tests. With no rejection it is Bonferroni's
    alpha / m; when all are rejected it is alpha.
    """
    ordered = sorted(p_values)
    m = len(ordered)
    for rank, p in enumerate(ordered):
        if p > alpha / (m - rank):
            return alpha / (m - rank)
    return alpha


def settle_probability(n: float, rate: float, chance: float, margin: float, level: float) -> float:
    """P(an exact interval at ``level`` from n decided answers excludes chance or lies within
    chance ± margin), when the true rate is ``rate`` (n may be an effective, non-whole size:
    it is rounded to whole answers)."""
    trials = max(1, round(n))
    spread = 8.0 * math.sqrt(trials * max(rate * (1 - rate), 1e-12)) + 2
    ks = np.arange(
        max(0, math.floor(rate * trials - spread)),
        min(trials, math.ceil(rate * trials + spread)) + 1,
    )
    tail = (1.0 - level) / 2.0
    low = np.where(ks > 0, beta.ppf(tail, np.maximum(ks, 1), trials - ks + 1), 0.0)
    high = np.where(ks < trials, beta.ppf(1 - tail, ks + 1, np.maximum(trials - ks, 1)), 1.0)
    settled = (
        (low > chance) | (high < chance) | ((low >= chance - margin) & (high <= chance + margin))
    )
    return float(binom.pmf(ks, trials, rate)[settled].sum())


def decided_needed(
    rate: float, chance: float, margin: float, level: float, power: float = TARGET_POWER
) -> int | None:
    """About how many decided answers (effective, independent) settle the verdict with
    probability ``power`` if the true rate is ``rate``: the smallest n found by doubling and
    bisection (the power of an exact test is not quite monotone in n, hence "about").
    None when more than MAX_MORE would be needed."""
    if settle_probability(1, rate, chance, margin, level) >= power:
        return 1
    high = 2
    while settle_probability(high, rate, chance, margin, level) < power:
        high *= 2
        if high > MAX_MORE:
            return None
    low = high // 2
    while high - low > max(1, low // 100):
        mid = (low + high) // 2
        if settle_probability(mid, rate, chance, margin, level) >= power:
            high = mid
        else:
            low = mid
    return high
