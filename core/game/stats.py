"""Statistics over stored guesses (read-only): verdicts, intervals, tests, rankings.

Definitions (also in README.md, "How the statistics are defined"):

* answered: guesses, "can't tell" included; decided: answered minus can't-tell.
* rate = correct / decided, tested against chance (duel 1/2, trio 1/3, a trio among k
  variants 1/k): valid because the slots are shuffled uniformly, so a person who cannot
  tell is right by chance whenever they decide. correct / answered is shown as the
  descriptive "spotted" rate.
* The headline family (by default trio; duel int8, NF4 and all; with more variants one row
  per comparison, see headline_keys) goes through core.game.verdicts: a live test
  (beta-mixture e-process) and a live interval (confidence sequence) per row, the family's
  5% split over them, valid however often anyone looks; one-look descriptive intervals
  clustered two ways, by person and by prompt. The stored ``session_id`` is the
  person.
* Hardest prompts and top players (exploratory: no correction for picking the extremes):
  generations ranked by the upper bound of the 95% exact interval of their decided rate,
  lowest first, then by rate, more decided answers first, generation id; people ranked by
  the lower bound, highest first, then by rate, more decided answers first, id.

Every count comes from a GROUP BY in SQL (core.store.storage), so the cost in Python does not
grow with the number of guesses. ``python -m core.game.stats --db PATH`` prints the summary
(JSON; ``--metrics``: the image metrics and the metric model as text).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import beta

from core.config import (
    ALL_VARIANT_NAMES,
    MODE_SPECS,
    QUANTIZED_VARIANTS,
    REFERENCE_VARIANT,
    VARIANT_NAMES,
    variant_set,
    variant_set_key,
)
from core.errors import DatabaseError, InvalidSettingError
from core.game import inference, metric_model
from core.game.inference import ALPHA, LEVEL, MIN_PEOPLE, ClusterCounts
from core.game.metric_model import MetricSection
from core.game.verdicts import (
    ALL_VARIANTS,
    ANSWERS_NEEDED,
    CLUSTERED_INTERVAL,
    DEFAULT_MARGIN,
    DISTINGUISHABLE,
    INDISTINGUISHABLE,
    LIVE_INTERVAL,
    NO_DATA,
    NOT_ENOUGH_DATA,
    Estimate,
    GroupCounts,
    assess,
)
from core.settings import check_margin
from core.store.storage import Store, Tally, default_images_dir

logger = logging.getLogger(__name__)

__all__ = [
    "ALL_VARIANTS",
    "DISTINGUISHABLE",
    "INDISTINGUISHABLE",
    "NOT_ENOUGH_DATA",
    "NO_DATA",
    "ElsewhereCost",
    "PickCount",
    "PlayerRank",
    "PromptRank",
    "Summary",
    "TrioPicks",
    "VariantCost",
    "Withdrawn",
    "detection_table",
    "hardest_prompts",
    "session_stats",
    "summary",
    "top_players",
    "trio_picks",
]

RANKING_LEVEL = 0.95
Groups = list[tuple[str, str | None, str | None, Tally]]


def _default_game_only(groups: Groups) -> bool:
    """Whether every stored comparison is one the default game (the mission's trio) makes."""
    return all(
        compared in QUANTIZED_VARIANTS if MODE_SPECS[mode].per_variant else compared is None
        for mode, compared, _, _ in groups
    )


def headline_keys(
    groups: Groups = (), variants: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """The (mode, variant) rows shown together, in display order: each comparison its own
    row. A mode kept per variant (the duel): one row per quantized variant, then the
    mode over all of them; a mode showing a set of variants (the trio): one row per set
    shown (ALL_VARIANTS: the mission's trio), the loaded set's first.

    The rows are those of the loaded ``variants`` and of every comparison in ``groups``
    (the stored guess groups), so a row is never lost when the loaded variants change.
    ``variants`` None (the export, ``python -m core.game.stats``: nothing is loaded):
    the default game's rows when every stored comparison is one it makes (or none is
    stored), else the stored comparisons' rows alone."""
    if variants is None:
        variants = VARIANT_NAMES if _default_game_only(groups) else (REFERENCE_VARIANT,)
    quantized = [v for v in variants if v != REFERENCE_VARIANT]
    keys = []
    for mode, spec in MODE_SPECS.items():
        stored = {compared for m, compared, _, _ in groups if m == mode}
        if spec.per_variant:
            named = set(quantized) | {c for c in stored if c is not None}
            keys += [(mode, v) for v in ALL_VARIANT_NAMES if v in named]
            keys += [(mode, ALL_VARIANTS)] if named else []
            continue
        loaded = [variant_set_key(quantized) or ALL_VARIANTS] if quantized else []
        others = sorted(
            {c or ALL_VARIANTS for c in stored} - set(loaded),
            key=lambda key: (len(variant_set(key)), key),
        )
        keys += [(mode, key) for key in (*loaded, *others)]
    return keys


# (mode, cluster id, duel variant or None, answered, decided, correct)
Cluster = tuple[str, Any, str | None, int, int, int]


def _without_prompt(rows: list[tuple[Any, ...]]) -> list[Cluster]:
    """decided_by_generation rows without their prompt: (mode, id, variant, a, d, c)."""
    return [(r[0], r[1], *r[3:]) for r in rows]


# (mode, cluster id) -> (answered, decided, correct) over a mode's variants
Pooled = dict[tuple[str, Any], tuple[int, int, int]]


def _pooled(rows: list[Cluster]) -> Pooled:
    """(mode, cluster id) -> (answered, decided, correct) over a mode's variants."""
    out: dict[tuple[str, Any], tuple[int, int, int]] = {}
    for mode, cluster, _, answered, decided, correct in rows:
        a, d, c = out.get((mode, cluster), (0, 0, 0))
        out[(mode, cluster)] = (a + answered, d + decided, c + correct)
    return out


ClusterMap = dict[tuple[str, str], ClusterCounts]


def _own_row(mode: str, compared: str | None) -> str | None:
    """The row of a stored comparison besides its mode's overall one: a duel's variant, a
    trio's set (ALL_VARIANTS for the mission's trio, stored as None)."""
    if MODE_SPECS[mode].per_variant:
        return compared
    return compared or ALL_VARIANTS


def _in_row(mode: str, row: str, compared: str | None) -> bool:
    """Whether answers stored under ``compared`` count in the ``(mode, row)`` headline row."""
    if MODE_SPECS[mode].per_variant and row == ALL_VARIANTS:
        return True
    return _own_row(mode, compared) == row


def _cluster_counts(rows: list[Cluster], pooled: Pooled) -> tuple[ClusterMap, ClusterMap]:
    """(mode, variant or "all") -> its clusters' (correct, decided) pairs with multiplicity,
    and the same clusters' (can't tell, answered) pairs; ``pooled`` is ``_pooled(rows)``."""
    decided: defaultdict[tuple[str, str], Counter[tuple[int, int]]] = defaultdict(Counter)
    cant_tell: defaultdict[tuple[str, str], Counter[tuple[int, int]]] = defaultdict(Counter)
    for mode, _, compared, answered, n, correct in rows:
        row = _own_row(mode, compared)
        if row is not None:  # a duel variant's or a trio set's own clusters
            decided[(mode, row)][(correct, n)] += 1
            cant_tell[(mode, row)][(answered - n, answered)] += 1
    for (mode, _), (answered, n, correct) in pooled.items():
        if MODE_SPECS[mode].per_variant:  # the duel over all its variants
            decided[(mode, ALL_VARIANTS)][(correct, n)] += 1
            cant_tell[(mode, ALL_VARIANTS)][(answered - n, answered)] += 1

    def counts(pairs: defaultdict[tuple[str, str], Counter[tuple[int, int]]]) -> ClusterMap:
        return {
            key: ClusterCounts.of([(k, n, c) for (k, n), c in sorted(counter.items())])
            for key, counter in pairs.items()
        }

    return counts(decided), counts(cant_tell)


def headline_groups(
    store: Store,
    groups: Groups | None = None,
    by_session: list[Cluster] | None = None,
    by_generation: list[tuple[Any, ...]] | None = None,
    variants: Sequence[str] | None = None,
) -> list[GroupCounts]:
    """The counts of every headline row (headline_keys: ``variants`` loaded and every
    comparison stored), from SQL's per-person and per-generation counts (arguments: those
    counts when already read)."""
    groups = store.guess_groups() if groups is None else groups
    by_session = store.decided_by_session() if by_session is None else by_session
    by_generation = store.decided_by_generation() if by_generation is None else by_generation
    per_generation = _without_prompt(by_generation)
    people, people_ct = _cluster_counts(by_session, _pooled(by_session))
    generations, generations_ct = _cluster_counts(per_generation, _pooled(per_generation))
    empty = ClusterCounts.of([])
    out = []
    for mode, variant in headline_keys(groups, variants):
        tallies = [
            t for m, compared, _, t in groups if m == mode and _in_row(mode, variant, compared)
        ]
        key = (mode, variant)
        out.append(
            GroupCounts(
                mode=mode,
                variant=variant,
                answered=sum(t.answered for t in tallies),
                correct=sum(t.correct for t in tallies),
                cant_tell=sum(t.cant_tell for t in tallies),
                sessions=people.get(key, empty),
                generations=generations.get(key, empty),
                sessions_cant_tell=people_ct.get(key, empty),
                generations_cant_tell=generations_ct.get(key, empty),
            )
        )
    return out


def detection_table(store: Store, margin: float = DEFAULT_MARGIN, **counts: Any) -> list[Estimate]:
    """The verdict of every headline row (see core.game.verdicts), one family.
    ``counts``: the store's counts when already read and the loaded ``variants`` (see
    headline_groups)."""
    return assess(headline_groups(store, **counts), margin)


@dataclass(frozen=True)
class PickCount:
    """How often one variant was picked as the original: a count and its share (0…1) of
    the trio's answers, None before any."""

    count: int
    share: float | None


@dataclass(frozen=True)
class TrioPicks:
    """How often each variant was picked as the original in trio rounds, and can't tell.
    ``to_json`` keeps summary.json's "trio_picks" shape, keys in this order."""

    answered: int
    picked_as_original: dict[str, PickCount]
    cant_tell: int
    correct_variant: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PromptRank:
    """One generation in the hardest prompts: its counts, the mode's chance and its
    decided rate with the 95% exact interval (fractions)."""

    generation_id: int
    prompt: str
    answered: int
    decided: int
    correct: int
    chance: float
    rate: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PlayerRank:
    """One session in the top players: its counts and its decided rate with the 95%
    exact interval (fractions)."""

    session_id: str
    answered: int
    decided: int
    correct: int
    rate: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class VariantCost:
    """This deployment's cost of one variant over its real generations
    (Store.variant_costs): bytes, seconds per image; a median is None where no generation
    has the figure."""

    variant: str
    generations: int
    median_seconds: float | None
    weight_bytes: int | None
    shared_weight_bytes: int | None
    median_peak_allocated_bytes: float | None
    median_peak_reserved_bytes: float | None
    median_peak_rss_bytes: float | None
    median_activation_peak_bytes: float | None
    median_standalone_peak_bytes: float | None
    resident_weight_bytes: int | None


@dataclass(frozen=True)
class ElsewhereCost:
    """One model, device and variant of the image sets imported from a pool
    (Store.costs_elsewhere): how many, median seconds per image and peaks (bytes)."""

    model: str
    device: str
    variant: str
    generations: int
    median_seconds: float | None
    median_standalone_peak_bytes: float | None
    median_peak_reserved_bytes: float | None


@dataclass(frozen=True)
class Withdrawn:
    """Reported or hidden generations, out of the pool and the verdicts, and the guesses
    left out with them (Store.count_withdrawn)."""

    generations: int
    guesses: int


def trio_picks(
    store: Store, groups: Groups | None = None, variants: Sequence[str] | None = None
) -> TrioPicks:
    """How often each variant was picked as the original in trio rounds (and can't tell):
    every variant loaded (``variants``; None: the default trio's) or picked, in registry
    order."""
    groups = store.guess_groups() if groups is None else groups
    picks: dict[str | None, int] = {}
    for mode, _, variant, tally in groups:
        if MODE_SPECS[mode].asks_for_original:
            picks[variant] = picks.get(variant, 0) + tally.answered
    answered = sum(picks.values())
    shown = VARIANT_NAMES if variants is None else variants
    return TrioPicks(
        answered=answered,
        picked_as_original={
            variant: PickCount(
                picks.get(variant, 0), picks.get(variant, 0) / answered if answered else None
            )
            for variant in ALL_VARIANT_NAMES
            if variant in picks or variant in shown
        },
        cant_tell=picks.get(None, 0),
        correct_variant=REFERENCE_VARIANT,
    )


def _bounds(correct: np.ndarray, decided: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided 95% exact (Clopper–Pearson) bounds of correct / decided, elementwise."""
    tail = (1.0 - RANKING_LEVEL) / 2.0
    k, n = correct.astype(np.float64), decided.astype(np.float64)
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, beta.ppf(tail, np.maximum(k, 1), n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - tail, k + 1, np.maximum(n - k, 1)), 1.0)
    return low, high


def _ranked(
    rows: list[tuple[Any, ...]], correct: list[int], decided: list[int]
) -> list[tuple[tuple[Any, ...], float, float, float]]:
    """Each row with (rate, low, high) of its decided answers."""
    if not rows:
        return []
    k, n = np.array(correct), np.array(decided)
    low, high = _bounds(k, n)
    return [
        (row, int(ki) / int(ni), float(lo), float(hi))
        for row, ki, ni, lo, hi in zip(rows, k, n, low, high, strict=True)
    ]


def _generation_chances(by_generation: list[tuple[Any, ...]], mode: str) -> dict[Any, float]:
    """Generation id -> the chance of its decided answers in ``mode``: its comparisons'
    own chance (a trio among k: 1/k), their mean weighted by decided answers where one
    generation was played in trios of different sizes."""
    spec = MODE_SPECS[mode]
    weighted: defaultdict[Any, list[tuple[float, int]]] = defaultdict(list)
    for m, gid, _, compared, _, decided, _ in by_generation:
        if m == mode:
            weighted[gid].append((spec.chance_of(compared), decided))
    out = {}
    for gid, pairs in weighted.items():
        chances = {c for c, _ in pairs}
        total = sum(d for _, d in pairs)
        if len(chances) == 1 or not total:
            out[gid] = chances.pop() if len(chances) == 1 else spec.chance
        else:
            out[gid] = sum(c * d for c, d in pairs) / total
    return out


def hardest_prompts(
    store: Store,
    limit: int = 10,
    min_decided: int = 5,
    mode: str = "duel",
    by_generation: list[tuple[Any, ...]] | None = None,
    pooled: Pooled | None = None,
) -> list[PromptRank]:
    """The generations people spot least in ``mode``: at least ``min_decided`` decided
    answers, ranked by the upper bound of the 95% exact interval of their decided rate
    (lowest first), then rate, more decided answers first, generation id. Per-prompt
    intervals are exploratory: no multiple-test correction."""
    by_generation = store.decided_by_generation() if by_generation is None else by_generation
    prompts = {r[1]: r[2] for r in by_generation}
    rows = [
        (gid, prompts[gid], *figures)
        for (m, gid), figures in sorted(
            (_pooled(_without_prompt(by_generation)) if pooled is None else pooled).items()
        )
        if m == mode and figures[1] >= min_decided
    ]
    ranked = _ranked(rows, [r[4] for r in rows], [r[3] for r in rows])
    ranked.sort(key=lambda x: (x[3], x[1], -x[0][3], x[0][0]))
    chance = _generation_chances(by_generation, mode)
    return [
        PromptRank(gid, prompt, answered, decided, correct, chance[gid], rate, low, high)
        for (gid, prompt, answered, decided, correct), rate, low, high in ranked[:limit]
    ]


def top_players(
    store: Store,
    limit: int = 10,
    min_decided: int = 5,
    mode: str = "duel",
    by_session: list[Cluster] | None = None,
    pooled: Pooled | None = None,
) -> list[PlayerRank]:
    """The sessions best at ``mode``: at least ``min_decided`` decided answers, ranked by
    the lower bound of the 95% exact interval of their decided rate (highest first), then
    rate, more decided answers first, session id."""
    by_session = store.decided_by_session() if by_session is None else by_session
    rows = [
        (session, *figures)
        for (m, session), figures in sorted(
            (_pooled(by_session) if pooled is None else pooled).items()
        )
        if m == mode and figures[1] >= min_decided
    ]
    ranked = _ranked(rows, [r[3] for r in rows], [r[2] for r in rows])
    ranked.sort(key=lambda x: (-x[2], -x[1], -x[0][2], x[0][0]))
    return [
        PlayerRank(session, answered, decided, correct, rate, low, high)
        for (session, answered, decided, correct), rate, low, high in ranked[:limit]
    ]


def session_stats(store: Store, session_id: str) -> dict[str, int]:
    """answered, correct, cant_tell, streak (current) and best_streak of one session."""
    tally, streak, best = store.session_tally(session_id)
    return {**asdict(tally), "streak": streak, "best_streak": best}


DEFINITIONS = {
    "rate": "correct / decided (decided = answered - can't tell); the tested rate, per answer",
    "spotted_rate": "correct / answered; descriptive only",
    "live_test": (
        "beta-mixture likelihood ratio (e-process) of 'nobody can tell': every decided answer "
        "right with probability chance (duel 1/2, trio 1/3) given the past, prior "
        f"Beta({inference.PRIOR_STRENGTH:g} p0, {inference.PRIOR_STRENGTH:g} (1 - p0)); "
        "distinguishable when the e-value reaches e_threshold = 1 / the row's test alpha "
        "(Ville's inequality: valid however often anyone looks, under any clustering)"
    ),
    "live_interval": (
        f"{LIVE_INTERVAL}: Hoeffding normal-mixture boundary for the average success "
        "probability of the answers given, valid at every look and under any dependence"
    ),
    "family": (
        "the headline rows are one family: half of alpha split evenly over their live "
        "tests, half over their live intervals, so a false distinguishable or a false "
        "within +-margin on any row at any look happens with probability <= alpha"
    ),
    "verdicts": (
        "distinguishable: the e-value reaches its bar or the live interval excludes chance; "
        "indistinguishable: the live interval lies within chance +- margin; otherwise not "
        f"enough data (too few people to tell below {MIN_PEOPLE} people or prompts)"
    ),
    "clustered_interval": (
        f"{CLUSTERED_INTERVAL}: Cameron-Gelbach-Miller variance, t quantile at the level "
        "shown with min(people, prompts) - 1 degrees of freedom; per person: mean of people's "
        "own rates, t-interval over people; the can't-tell share gets the same two-way interval"
    ),
    "hardest_prompts": (
        "exploratory (no correction for picking the extremes): generations ranked by the "
        "upper bound of the 95% exact interval of their decided rate, lowest first; ties: "
        "rate, more decided answers, generation id"
    ),
    "top_players": (
        "exploratory: people ranked by the lower bound of the 95% exact interval of their "
        "decided rate, highest first; ties: rate, more decided answers, id"
    ),
}


@dataclass(frozen=True)
class Summary:
    """Everything the Results tab and summary.json show, typed: read its fields; turn it
    into JSON with ``to_json`` (summary.json's shape, byte for byte as before).

    ``estimates``: the headline family's verdicts (core.game.verdicts.Estimate), in
    display order; ``picks``: how often each variant was picked as the original (see
    trio_picks); ``hardest_prompts`` / ``top_players``: per mode, the rankings (see
    hardest_prompts, top_players). What a deployment adds (``for_deployment``), None in
    the export's summary: ``costs``, its cost per variant (in to_json as "costs");
    ``withdrawn`` and ``costs_elsewhere``, reported or hidden sets and a pool's own
    figures; ``chart_html``, the chart drawn once for every refresh (see
    core.game.presentation.detection_chart_html). The last three are the Results tab's
    only, never in to_json.
    ``metrics``: the image metrics against BF16 and which one predicts what people spot
    (core.game.metric_model.MetricSection), None for pooled counts.
    """

    definitions: dict[str, Any]
    counts: dict[str, int]
    estimates: list[Estimate]
    family: dict[str, Any]
    answers_needed: dict[str, dict[str, Any]]
    picks: TrioPicks
    hardest_prompts: dict[str, list[PromptRank]]
    top_players: dict[str, list[PlayerRank]]
    costs: list[VariantCost] | None = None
    withdrawn: Withdrawn | None = None
    costs_elsewhere: list[ElsewhereCost] | None = None
    chart_html: str | None = None
    # The image metrics against BF16 and which one predicts what people spot
    # (core.game.metric_model.MetricSection); None where the counts have no images (pooled).
    metrics: MetricSection | None = None

    def with_costs(self, costs: Sequence[Mapping[str, Any]]) -> Summary:
        """This summary with a deployment's cost per variant (Store.variant_costs rows)."""
        return replace(self, costs=[VariantCost(**row) for row in costs])

    def for_deployment(
        self,
        costs: Sequence[Mapping[str, Any]],
        withdrawn: Mapping[str, int],
        costs_elsewhere: Sequence[Mapping[str, Any]],
    ) -> Summary:
        """This summary with what a deployment's Results tab adds, from the Store's rows:
        variant_costs, count_withdrawn and costs_elsewhere."""
        return replace(
            self.with_costs(costs),
            withdrawn=Withdrawn(**withdrawn),
            costs_elsewhere=[ElsewhereCost(**row) for row in costs_elsewhere],
        )

    def with_chart(self, chart_html: str) -> Summary:
        """This summary with its chart drawn (an <img> tag)."""
        return replace(self, chart_html=chart_html)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, keys in the order summary.json has always had them; "costs"
        only when the summary has them."""
        out: dict[str, Any] = {
            "definitions": self.definitions,
            "counts": self.counts,
            "detection": [e.to_dict() for e in self.estimates],
            "family": self.family,
            "answers_needed": self.answers_needed,
            "trio_picks": self.picks.to_json(),
            "hardest_prompts": {
                mode: [asdict(r) for r in rows] for mode, rows in self.hardest_prompts.items()
            },
            "top_players": {
                mode: [asdict(r) for r in rows] for mode, rows in self.top_players.items()
            },
        }
        if self.costs is not None:
            out["costs"] = [asdict(c) for c in self.costs]
        if self.metrics is not None:
            out["metrics"] = self.metrics.to_json()
        return out


def summary(
    store: Store,
    *,
    margin: float = DEFAULT_MARGIN,
    hardest_limit: int = 10,
    min_decided: int = 5,
    variants: Sequence[str] | None = None,
) -> Summary:
    """Everything the Results tab and summary.json show (see Summary). ``margin`` is a
    fraction (0.05 = ±5 points of chance); ``variants``: those the game loads (their
    rows are shown before anyone answers; every stored comparison has its row too; None:
    see headline_keys). The same data give the same summary."""
    groups = store.guess_groups()
    by_session = store.decided_by_session()
    by_generation = store.decided_by_generation()
    estimates = detection_table(
        store,
        margin,
        groups=groups,
        by_session=by_session,
        by_generation=by_generation,
        variants=variants,
    )
    test_alpha, interval_alpha = inference.row_alphas(len(estimates))
    # Each mode's rankings read the same pooled counts: pool them once.
    per_generation, per_person = _pooled(_without_prompt(by_generation)), _pooled(by_session)
    return Summary(
        definitions={**DEFINITIONS, "alpha": ALPHA, "level": LEVEL, "margin": margin},
        counts=store.counts(),
        estimates=estimates,
        family={
            "rows": [f"{e.mode} {e.variant}" for e in estimates],
            "alpha": ALPHA,
            "test_alpha_per_row": test_alpha,
            "interval_alpha_per_row": interval_alpha,
            "e_threshold": inference.e_threshold(test_alpha),
            "level": LEVEL,
        },
        answers_needed={
            mode: {"rate": rate, "decided_answers": answers, "people_at_least": MIN_PEOPLE}
            for mode, (rate, answers) in ANSWERS_NEEDED.items()
        },
        picks=trio_picks(store, groups, variants),
        hardest_prompts={
            mode: hardest_prompts(
                store, hardest_limit, min_decided, mode, by_generation, per_generation
            )
            for mode in MODE_SPECS
        },
        top_players={
            mode: top_players(store, hardest_limit, min_decided, mode, by_session, per_person)
            for mode in MODE_SPECS
        },
        metrics=metric_section(store),
    )


def metric_section(store: Any) -> MetricSection | None:
    """Which image metric predicts what people spot (core.game.metric_model), from the
    store's decided duel answers in whole batches of metric_model.ANSWERS_BATCH (all of
    them, or a seeded sample of whole people above metric_model.MAX_FIT_ANSWERS) and image
    figures; None for counts without images (the
    pooled counts of sync targets, whose public events carry no per-image metrics)."""
    if not isinstance(store, Store):
        return None
    duels = [m for m, spec in MODE_SPECS.items() if spec.per_variant]
    total, last_id = store.metric_batches(duels, metric_model.ANSWERS_BATCH)
    counts = store.metric_people(duels, last_id)
    return metric_model.section(
        store.metric_answers(duels, last_id, metric_model.sample_people(counts)),
        store.image_metric_means(REFERENCE_VARIANT, metric_model.MEANS_BATCH),
        answers_total=total,
        answers_batched=sum(n for _, n in counts),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.game.stats", description="Print the statistics of a game database."
    )
    parser.add_argument("--db", type=Path, default=Path("data/arena.db"))
    parser.add_argument(
        "--from",
        dest="sources",
        nargs="+",
        metavar="SRC",
        help="pool the events of sync targets (folders or hf://datasets/OWNER/NAME) instead "
        "of reading --db: one verdict per model, per-deployment counts (core.game.pooled)",
    )
    parser.add_argument(
        "--timing", action="store_true", help="also print the seconds taken (wall and CPU)"
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="print only the image metrics as text: means against BF16 per variant and, per "
        "metric, the logistic model of spotted on it (the JSON has them under 'metrics')",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=100 * DEFAULT_MARGIN,
        help="equivalence margin in points of chance (default 5)",
    )
    args = parser.parse_args(argv)
    try:
        check_margin(args.margin)
    except InvalidSettingError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.WARNING)
    if args.sources:
        from core.game.pooled import print_pooled

        return print_pooled(parser, args.sources, args.margin / 100, summary)
    try:
        with Store(args.db, default_images_dir(args.db), must_exist=True) as store:
            start, cpu = time.perf_counter(), time.process_time()
            result = summary(store, margin=args.margin / 100).to_json()
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    except DatabaseError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    if args.metrics:
        from core.game.metric_view import results_text

        sys.stdout.write(results_text(result.get("metrics")))
        return 0
    if args.timing:
        result["seconds"] = seconds
        result["cpu_seconds"] = cpu_seconds  # this process, SQLite included
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
