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
``section`` turns the store's rows into what the product shows (``MetricSection``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from core.config import ALL_VARIANT_NAMES
from core.errors import InvalidInputError
from core.records import (
    FLIP_DISPLAY_WIDTH_M,
    FLIP_DISPLAY_WIDTH_PX,
    FLIP_DISTANCE_M,
    FLIP_PPD,
    IMAGE_METRIC_LABELS,
    IMAGE_METRICS,
    VIEWING_CONDITIONS,
)

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


class _NoFit(Exception):
    """No maximum-likelihood fit: perfect separation, no convergence or a singular matrix."""


def _design(values: np.ndarray) -> np.ndarray:
    """The design matrix [1, value] of the logistic model."""
    return np.column_stack([np.ones_like(values), values])


def _logit(values: np.ndarray, correct: np.ndarray, groups: np.ndarray | None) -> Any:
    """statsmodels' binomial GLM of correct on [1, value]; cluster-robust when ``groups``.
    Raises _NoFit when there is no maximum-likelihood fit.

    statsmodels is imported here, not at the top: it takes about half a second, and the
    app and the export CLI import this module (through core.game.stats) at start."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    model = sm.GLM(correct, _design(values), sm.families.Binomial())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PerfectSeparationWarning)
            warnings.simplefilter("error", ConvergenceWarning)
            if groups is None:
                return model.fit()
            return model.fit(cov_type="cluster", cov_kwds={"groups": groups})
    except (PerfectSeparationWarning, ConvergenceWarning, np.linalg.LinAlgError) as exc:
        raise _NoFit(str(exc)) from None


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
    except _NoFit as exc:
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
    except _NoFit:
        return None, int(test.sum())
    predicted = model.predict(_design(x[test]))
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


# --- the product's section: every metric's fit, the means per variant, plain words -------

# The metrics fitted, as stored per image (core.records.IMAGE_METRICS), and their labels.
METRIC_LABELS = IMAGE_METRIC_LABELS
# Below this many people the section names no best metric (as the verdicts' MIN_PEOPLE).
MIN_PEOPLE = 10
# Above this many decided answers each metric is fitted on a seeded sample of whole people
# whose answers add up to about this many (sample_people), so the Results' recomputation
# does not grow with the votes: one fit on 500,000 answers took ~3 s on the 2-core dev
# machine. 20,000 answers give a slope interval a few hundredths of a unit wide.
MAX_FIT_ANSWERS = 20_000
# The means per variant take generations in whole batches of this many (by id), so they
# move only when MEANS_BATCH more are in: two looks at the public Results or summary.json
# never give one new generation's exact figures, which a trio player could match against
# figures computed between their served images.
MEANS_BATCH = 10
# Held-out AUCs closer than this are called level: on the micro model's images, simulated
# players driven by FLIP gave the three metrics AUCs within 0.03 of one another, and the
# metric named best changed with the players' seed (README, "Which metric predicts people").
AUC_CLOSE = 0.03
# The fits read decided duel answers in whole batches of this many (by guess id), so they
# move only when ANSWERS_BATCH more answers are in: two looks at the fits never isolate
# one new answer, whose change of the fit would point at its image's figures.
ANSWERS_BATCH = 100
EXPLORATORY = (
    "exploratory: one logistic model per metric, no correction for comparing them; the "
    "held-out AUC is measured on answers of people the fit never saw (0.5 = chance)"
)


def viewing_conditions() -> dict[str, Any]:
    """FLIP's viewing conditions (core.records), JSON-ready: ppd, distance, display, text."""
    return {
        "flip_pixels_per_degree": FLIP_PPD,
        "distance_m": FLIP_DISTANCE_M,
        "display_width_px": FLIP_DISPLAY_WIDTH_PX,
        "display_width_m": FLIP_DISPLAY_WIDTH_M,
        "text": VIEWING_CONDITIONS,
    }


@dataclass(frozen=True)
class MetricSection:
    """What the Results, ``core.game.stats`` and summary.json say about the image metrics.

    ``means``: per quantized variant, the mean of each metric against BF16 over the
    images that have it (``Store.image_metric_means``: ``<name>_count``, ``<name>_mean``),
    of the first ``means_generations`` of the ``generations_counted`` generations (whole
    batches of MEANS_BATCH);
    ``fits``: one MetricFit per metric over decided duel answers (``answers_total`` of
    them; ``answers_batched`` in whole batches of ANSWERS_BATCH, of which
    ``answers_fitted`` were fitted: all of them up to MAX_FIT_ANSWERS);
    ``best``: the metric with the highest held-out AUC, None when there are too few data
    or another metric's AUC comes within AUC_CLOSE of it (then ``message`` says why);
    ``message``: one plain sentence.
    """

    means: list[dict[str, Any]]
    fits: list[MetricFit]
    best: str | None
    message: str
    answers_total: int
    answers_fitted: int
    answers_batched: int = 0
    means_generations: int = 0
    generations_counted: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: NaN figures (no fit) as null."""

        def clean(value: Any) -> Any:
            return None if isinstance(value, float) and not math.isfinite(value) else value

        return {
            "viewing_conditions": viewing_conditions(),
            "labels": dict(METRIC_LABELS),
            "means_against_bf16": self.means,
            "means_over_generations": self.means_generations,
            "generations_counted": self.generations_counted,
            "means_batch": MEANS_BATCH,
            "answers_total": self.answers_total,
            "answers_fitted": self.answers_fitted,
            "answers_batched": self.answers_batched,
            "answers_batch": ANSWERS_BATCH,
            "fits": [{k: clean(v) for k, v in asdict(f).items()} for f in self.fits],
            "best": self.best,
            "message": self.message,
            "definition": (
                "per metric, statsmodels' logistic GLM of spotted (1 = the player picked the "
                "quantized image) on the metric of that image against BF16, over decided "
                "duel answers; slope interval cluster-robust over people; " + EXPLORATORY
            ),
        }


Row = tuple[str, int, Sequence[float | None]]


def sample_people(
    counts: Sequence[tuple[str, int]], cap: int = MAX_FIT_ANSWERS, seed: int = SPLIT_SEED
) -> list[str] | None:
    """None when the people's answers (``counts``: person, answers) total at most ``cap``
    (fit them all); else whole people taken in a seeded random order until at least
    ``cap`` answers are in."""
    if sum(n for _, n in counts) <= cap:
        return None
    people = sorted(counts)
    kept: list[str] = []
    total = 0
    for i in np.random.default_rng(seed).permutation(len(people)):
        kept.append(people[i][0])
        total += people[i][1]
        if total >= cap:
            break
    return kept


def _level_with(fits: list[MetricFit], best: MetricFit) -> list[MetricFit]:
    """The other fits whose held-out AUC comes within AUC_CLOSE of ``best``'s."""
    return [
        f
        for f in fits
        if f is not best
        and f.held_out_auc is not None
        and (best.held_out_auc or 0.0) - f.held_out_auc < AUC_CLOSE
    ]


def _message(fits: list[MetricFit], best: MetricFit | None, total: int, batched: int) -> str:
    if total == 0:
        return "No decided duel answers yet: which metric predicts what people spot needs votes."
    if batched == 0:
        return (
            f"{total} decided duel answers so far: the model waits for the first "
            f"{ANSWERS_BATCH} (it reads answers in whole batches of {ANSWERS_BATCH})."
        )
    measured = max((f.answers for f in fits), default=0)
    if measured == 0:
        return (
            f"None of the {total} decided duel answers is on an image with measured metrics "
            "(images stored before the metrics were added are not measured)."
        )
    people = max(f.people for f in fits)
    if best is None or people < MIN_PEOPLE:
        return (
            f"Too few data to say which metric predicts what people spot: {measured} decided "
            f"duel answers by {people} people (at least {MIN_PEOPLE} people, and right and "
            "wrong answers among those the fit never saw, are needed)."
        )
    label = METRIC_LABELS.get(best.metric, best.metric)
    level = [METRIC_LABELS.get(f.metric, f.metric) for f in _level_with(fits, best)]
    if level:
        return (
            f"No metric stands out: {label} has the highest held-out AUC, "
            f"{best.held_out_auc:.2f} (0.5 = chance), over {best.answers} answers by "
            f"{best.people} people, but {' and '.join(level)} come within {AUC_CLOSE:g} of "
            "it: on these images the metrics rank the answers alike. Exploratory."
        )
    unclear = (
        "; its slope's interval includes 0, so the link is not clear yet"
        if best.slope_low <= 0 <= best.slope_high
        else ""
    )
    return (
        f"{label} best predicts whether players spot the quantized image: held-out AUC "
        f"{best.held_out_auc:.2f} (0.5 = chance) over {best.answers} answers by "
        f"{best.people} people{unclear}. Exploratory."
    )


def section(
    rows: Iterable[Row],
    means: tuple[list[dict[str, Any]], int, int],
    *,
    answers_total: int | None = None,
    answers_batched: int | None = None,
    metrics: Sequence[str] = IMAGE_METRICS,
) -> MetricSection:
    """The metric section from ``Store.metric_answers()`` rows (person, correct, values in
    ``metrics`` order, None where not measured) and ``Store.image_metric_means``'s
    (rows, generations included, generations counted); rows put in registry order.
    ``answers_total``: the decided duel answers there are, ``answers_batched``: those in
    whole batches, when ``rows`` are part of them; the rows' number otherwise."""
    fitted = list(rows)
    total = len(fitted) if answers_total is None else answers_total
    batched = len(fitted) if answers_batched is None else answers_batched
    answers = [
        MetricAnswer(
            person,
            correct,
            {n: float(v) for n, v in zip(metrics, values, strict=True) if v is not None},
        )
        for person, correct, values in fitted
    ]
    fits = fit_metrics(answers, metrics)
    best = best_predictor(fits)
    if best is not None and best.people < MIN_PEOPLE:
        best = None
    order = {name: k for k, name in enumerate(ALL_VARIANT_NAMES)}
    rows_by_variant, included, counted = means
    named = best is not None and not _level_with(fits, best)
    return MetricSection(
        means=sorted(
            rows_by_variant, key=lambda m: (order.get(m["variant"], len(order)), m["variant"])
        ),
        means_generations=included,
        generations_counted=counted,
        fits=fits,
        best=best.metric if named and best is not None else None,
        message=_message(fits, best, total, batched),
        answers_total=total,
        answers_fitted=len(fitted),
        answers_batched=batched,
    )
