"""Which image metric predicts what people spot: a logistic model per metric.

For each metric (PSNR, SSIM, FLIP mean error, ...), over decided duel answers:

    P(correct) = 1 / (1 + exp(-(intercept + slope * metric)))

``correct`` is 1 when the player picked the quantized image. The fit is statsmodels' GLM
(binomial family, logit link) by maximum likelihood. Answers are clustered by person (the
stored ``session_id``), so the slope's interval is cluster-robust: the sandwich
estimator over people, with statsmodels' small-sample correction G/(G-1) * (N-1)/(N-K).
One person's many answers then count as one person, not as many independent ones.

The **held-out AUC** asks whether the metric ranks the answers people got right above
those they missed, for people the model never saw. People are shuffled with a fixed seed
and cut into two halves, so no person is in both. The model is fitted on one half and its
predicted probabilities are scored on the other. The AUC is the Mann-Whitney U over
(n_correct * n_missed), ties counted as a half. With one predictor the predicted
probability is monotone in the metric, so this is the metric's own ranking power. The
direction (a higher or a lower metric means easier to spot) comes from the training half.
0.5 is no better than chance.

Input is plain rows (``MetricAnswer``: person, correct, metric values), so the module can
be fed from the database, an export or a simulation. It imports no torch and no SQL.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm
from scipy.stats import mannwhitneyu
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

from core.errors import InvalidInputError

LEVEL = 0.95
SPLIT_SEED = 0


@dataclass(frozen=True)
class MetricAnswer:
    """One decided duel answer: who answered (the person id, ``session_id``), whether they
    spotted the quantized image (1/0), and the image metrics of that quantized image
    against BF16 (name -> value)."""

    person: str
    correct: int
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class MetricFit:
    """The logistic model of "spotted" on one metric.

    ``slope``: change in the log-odds of spotting per unit of the metric; its interval
    ``slope_low``..``slope_high`` (``level``, cluster-robust over people) and the two-sided
    ``p_value`` of slope = 0. ``held_out_auc``: AUC on the held-out half of the people
    (None when that half lacks right or wrong answers). ``answers``/``people``: what
    the fit used. ``note``: why there is no fit (figures are nan), empty otherwise.
    """

    metric: str
    answers: int
    people: int
    intercept: float
    slope: float
    slope_low: float
    slope_high: float
    p_value: float
    level: float
    held_out_auc: float | None
    held_out_answers: int
    note: str = ""


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (1 = positive): the chance
    that a random positive scores above a random negative, ties counting a half."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels)
    positives, negatives = s[y == 1], s[y == 0]
    if positives.size == 0 or negatives.size == 0:
        raise InvalidInputError("an AUC needs at least one positive and one negative label")
    u = mannwhitneyu(positives, negatives, alternative="two-sided").statistic
    return float(u) / (positives.size * negatives.size)


def split_people(persons: Sequence[str], seed: int = SPLIT_SEED) -> tuple[set[str], set[str]]:
    """The people cut into two halves (training, held out), shuffled with ``seed``; no
    person is in both, and every person is in one."""
    people = sorted(set(persons))
    order = np.random.default_rng(seed).permutation(len(people))
    half = (len(people) + 1) // 2
    return {people[i] for i in order[:half]}, {people[i] for i in order[half:]}


def _check_rows(values: np.ndarray, correct: np.ndarray, persons: Sequence[str]) -> None:
    if not (len(values) == len(correct) == len(persons)):
        raise InvalidInputError(
            f"values, correct and persons differ in length: "
            f"{len(values)}, {len(correct)}, {len(persons)}"
        )
    if not np.isin(correct, (0, 1)).all():
        raise InvalidInputError("correct must be 0 or 1 for every answer")
    if not np.isfinite(values).all():
        raise InvalidInputError("metric values must be finite (drop identical images first)")


def _logit(values: np.ndarray, correct: np.ndarray, groups: np.ndarray | None):
    """statsmodels' binomial GLM of correct on [1, value]; cluster-robust when ``groups``."""
    model = sm.GLM(correct, sm.add_constant(values, has_constant="add"), sm.families.Binomial())
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        warnings.simplefilter("error", ConvergenceWarning)
        if groups is None:
            return model.fit()
        return model.fit(cov_type="cluster", cov_kwds={"groups": groups})


def _no_fit(metric: str, answers: int, people: int, level: float, note: str) -> MetricFit:
    nan = math.nan
    return MetricFit(metric, answers, people, nan, nan, nan, nan, nan, level, None, 0, note)


def fit_metric(
    metric: str,
    values: Sequence[float],
    correct: Sequence[int],
    persons: Sequence[str],
    *,
    level: float = LEVEL,
    seed: int = SPLIT_SEED,
) -> MetricFit:
    """The logistic model of ``correct`` on ``values`` clustered by ``persons`` (one row per
    decided duel answer), with its held-out AUC. Malformed rows raise InvalidInputError;
    data that cannot support a fit gives a MetricFit whose ``note`` says why."""
    x = np.asarray(values, dtype=float)
    y = np.asarray(correct)
    _check_rows(x, y, persons)
    people = len(set(persons))
    if people < 2:
        return _no_fit(metric, len(x), people, level, "fewer than two people answered")
    if y.min() == y.max():
        return _no_fit(metric, len(x), people, level, "every answer was right, or every one wrong")
    if x.min() == x.max():
        return _no_fit(metric, len(x), people, level, "the metric takes a single value")
    groups = np.unique(np.asarray(persons), return_inverse=True)[1]
    try:
        result = _logit(x, y, groups)
    except (PerfectSeparationWarning, ConvergenceWarning, np.linalg.LinAlgError) as exc:
        return _no_fit(metric, len(x), people, level, f"no maximum-likelihood fit ({exc})")
    low, high = result.conf_int(alpha=1 - level)[1]
    held_out_auc, held_out_answers = _held_out_auc(x, y, persons, seed)
    return MetricFit(
        metric=metric,
        answers=len(x),
        people=people,
        intercept=float(result.params[0]),
        slope=float(result.params[1]),
        slope_low=float(low),
        slope_high=float(high),
        p_value=float(result.pvalues[1]),
        level=level,
        held_out_auc=held_out_auc,
        held_out_answers=held_out_answers,
    )


def _held_out_auc(
    x: np.ndarray, y: np.ndarray, persons: Sequence[str], seed: int
) -> tuple[float | None, int]:
    """(AUC of the model fitted on one half of the people, on the other half; its answers)."""
    train_people, _ = split_people(persons, seed)
    train = np.array([p in train_people for p in persons])
    test = ~train
    if not test.any() or np.unique(y[train]).size < 2 or np.unique(y[test]).size < 2:
        return None, int(test.sum())
    if np.unique(x[train]).size < 2:
        return None, int(test.sum())
    try:
        model = _logit(x[train], y[train], None)
    except (PerfectSeparationWarning, ConvergenceWarning, np.linalg.LinAlgError):
        return None, int(test.sum())
    predicted = model.predict(sm.add_constant(x[test], has_constant="add"))
    return auc(predicted, y[test]), int(test.sum())


def fit_metrics(
    answers: Iterable[MetricAnswer], metrics: Sequence[str], *, level: float = LEVEL
) -> list[MetricFit]:
    """One ``MetricFit`` per name in ``metrics``, over the answers that have a finite value
    of it (a quantized image identical to BF16 has PSNR inf and is left out of PSNR's fit)."""
    rows = list(answers)
    fits = []
    for name in metrics:
        kept = [a for a in rows if name in a.metrics and math.isfinite(a.metrics[name])]
        fits.append(
            fit_metric(
                name,
                [a.metrics[name] for a in kept],
                [a.correct for a in kept],
                [a.person for a in kept],
                level=level,
            )
        )
    return fits


def best_predictor(fits: Iterable[MetricFit]) -> MetricFit | None:
    """The fit with the highest held-out AUC (None when no fit has one)."""
    scored = [f for f in fits if f.held_out_auc is not None]
    return max(scored, key=lambda f: f.held_out_auc or 0.0) if scored else None
