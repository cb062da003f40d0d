"""The metric model against a logistic fit computed by hand: Newton's method for the
maximum likelihood, the cluster sandwich written out, the closed form of a 2x2 table, and
the AUC of a small example counted pair by pair."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from core.errors import InvalidInputError
from core.game.metric_model import (
    MetricAnswer,
    auc,
    best_predictor,
    fit_metric,
    fit_metrics,
    split_people,
)

# Twelve answers by four people: metric value, spotted (1) or not, person.
TABLE = [
    (0.02, 0, "a"), (0.05, 0, "a"), (0.11, 1, "a"),
    (0.03, 1, "b"), (0.08, 0, "b"), (0.14, 1, "b"), (0.20, 1, "b"),
    (0.01, 0, "c"), (0.09, 1, "c"), (0.12, 0, "c"),
    (0.06, 0, "d"), (0.17, 1, "d"),
]  # fmt: skip


def _newton(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The logistic MLE by Newton-Raphson on the log-likelihood, written out."""
    design = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    for _ in range(100):
        p = 1 / (1 + np.exp(-design @ beta))
        gradient = design.T @ (y - p)
        hessian = design.T @ (design * (p * (1 - p))[:, None])
        step = np.linalg.solve(hessian, gradient)
        beta = beta + step
        if np.abs(step).max() < 1e-13:
            break
    return beta


def _cluster_se(x: np.ndarray, y: np.ndarray, groups: list[str], beta: np.ndarray) -> float:
    """The slope's cluster-robust standard error: (X'WX)^-1 (sum_g s_g s_g') (X'WX)^-1 with
    the small-sample factor G/(G-1) * (N-1)/(N-K)."""
    design = np.column_stack([np.ones_like(x), x])
    p = 1 / (1 + np.exp(-design @ beta))
    bread = np.linalg.inv(design.T @ (design * (p * (1 - p))[:, None]))
    scores = design * (y - p)[:, None]
    meat = np.zeros((2, 2))
    for g in sorted(set(groups)):
        s = scores[[k == g for k in groups]].sum(axis=0)
        meat += np.outer(s, s)
    n, k, n_groups = len(x), 2, len(set(groups))
    cov = bread @ meat @ bread * n_groups / (n_groups - 1) * (n - 1) / (n - k)
    return math.sqrt(cov[1, 1])


def test_the_slope_is_the_maximum_likelihood_and_its_interval_the_cluster_sandwich():
    x = np.array([r[0] for r in TABLE])
    y = np.array([r[1] for r in TABLE], dtype=float)
    persons = [r[2] for r in TABLE]
    fit = fit_metric("flip_mean", x, y, persons)
    intercept, slope = _newton(x, y)
    assert fit.intercept == pytest.approx(intercept, rel=1e-7)
    assert fit.slope == pytest.approx(slope, rel=1e-7)
    se = _cluster_se(x, y, persons, np.array([intercept, slope]))
    z = norm.ppf(0.975)
    assert fit.slope_low == pytest.approx(slope - z * se, rel=1e-6)
    assert fit.slope_high == pytest.approx(slope + z * se, rel=1e-6)
    assert fit.p_value == pytest.approx(2 * norm.sf(abs(slope / se)), rel=1e-6)
    assert (fit.answers, fit.people, fit.note) == (12, 4, "")


def test_a_two_by_two_table_gives_the_closed_form_log_odds():
    # metric 0: 2 of 6 right; metric 1: 5 of 6 right (people a..f, two answers each).
    x = [0] * 6 + [1] * 6
    y = [1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0]
    persons = [c for c in "abcdef" for _ in range(2)]
    fit = fit_metric("psnr_db", x, y, persons)
    assert fit.intercept == pytest.approx(math.log(2 / 4), rel=1e-9)
    assert fit.slope == pytest.approx(math.log(5 / 1) - math.log(2 / 4), rel=1e-9)


def test_the_auc_of_a_hand_example():
    # Pairs (positive, negative): (0.35, 0.1) yes, (0.35, 0.4) no, (0.8, 0.1) yes,
    # (0.8, 0.4) yes -> 3 of 4.
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)  # a tie counts a half
    assert auc([0.9, 0.1], [0, 1]) == 0.0
    with pytest.raises(InvalidInputError, match="positive and one negative"):
        auc([0.1, 0.2], [1, 1])


def test_people_are_split_so_that_no_person_is_in_both_halves():
    persons = [f"p{i % 9}" for i in range(40)]
    train, held_out = split_people(persons)
    assert not train & held_out
    assert train | held_out == set(persons)
    assert len(train) == 5 and len(held_out) == 4
    assert split_people(persons) == (train, held_out)  # fixed seed: the same halves


def _simulated(n_people: int, seed: int) -> list[MetricAnswer]:
    """People who spot the quantized image more often when FLIP's error is larger, while
    the noise metric has nothing to do with it."""
    rng = np.random.default_rng(seed)
    rows = []
    for person in range(n_people):
        skill = rng.normal(0, 0.5)
        for _ in range(12):
            flip = rng.uniform(0, 0.3)
            p = 1 / (1 + math.exp(-(-1.5 + 12 * flip + skill)))
            rows.append(
                MetricAnswer(
                    f"s{person}", int(rng.random() < p), {"flip_mean": flip, "noise": rng.random()}
                )
            )
    return rows


def test_the_metric_that_drives_the_answers_predicts_held_out_people_best():
    fits = fit_metrics(_simulated(60, seed=1), ["flip_mean", "noise"])
    by_name = {f.metric: f for f in fits}
    flip, noise = by_name["flip_mean"], by_name["noise"]
    assert flip.slope_low > 0  # the interval excludes zero
    assert flip.held_out_auc is not None and flip.held_out_auc > 0.65
    assert flip.held_out_answers == 30 * 12
    assert noise.held_out_auc is not None and abs(noise.held_out_auc - 0.5) < 0.1
    assert best_predictor(fits) is flip


def test_identical_images_are_left_out_of_psnr_only():
    rows = _simulated(10, seed=2)
    rows = [
        MetricAnswer(r.person, r.correct, {**r.metrics, "psnr_db": 30.0 + i % 7})
        for i, r in enumerate(rows)
    ]
    rows[0] = MetricAnswer(
        rows[0].person, rows[0].correct, {**rows[0].metrics, "psnr_db": math.inf}
    )
    fits = {f.metric: f for f in fit_metrics(rows, ["psnr_db", "flip_mean"])}
    assert fits["psnr_db"].answers == len(rows) - 1
    assert fits["flip_mean"].answers == len(rows)


def test_data_that_cannot_support_a_fit_says_why():
    assert "fewer than two people" in fit_metric("m", [0.1, 0.2], [0, 1], ["a", "a"]).note
    one_outcome = fit_metric("m", [0.1, 0.2], [1, 1], ["a", "b"])
    assert "every answer" in one_outcome.note and math.isnan(one_outcome.slope)
    assert "single value" in fit_metric("m", [0.1, 0.1], [0, 1], ["a", "b"]).note
    separated = fit_metric("m", [0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1], ["a", "b", "c", "d"])
    assert "no maximum-likelihood fit" in separated.note


def test_malformed_rows_are_refused_by_name():
    with pytest.raises(InvalidInputError, match="differ in length"):
        fit_metric("m", [0.1, 0.2], [0, 1], ["a"])
    with pytest.raises(InvalidInputError, match="0 or 1"):
        fit_metric("m", [0.1, 0.2], [0, 2], ["a", "b"])
    with pytest.raises(InvalidInputError, match="finite"):
        fit_metric("m", [0.1, math.nan], [0, 1], ["a", "b"])
