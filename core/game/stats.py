"""Statistics over stored guesses (read-only): verdicts, intervals, tests, rankings.

Definitions (also in README.md, "How the statistics are defined"):

* answered: guesses, "can't tell" included; decided: answered minus can't-tell.
* rate = correct / decided, tested against chance (duel 1/2, trio 1/3): valid because the
  slots are shuffled uniformly, so a player who cannot tell is right by chance whenever they
  decide. correct / answered is shown as the descriptive "spotted" rate; the can't-tell
  share has its own 95% interval.
* The headline family (trio; duel int8, NF4 and all) goes through core.game.verdicts:
  two-sided exact tests and intervals, widened by a bootstrap over players or one over
  generations where Tarone's test finds clustering, Holm-corrected, three verdicts with
  margin ``m``.
* Hardest prompts: generations ranked by the upper bound of the 95% exact interval of their
  decided rate, lowest first (a prompt is "hard" when even its optimistic rate is low), then
  by rate, more decided answers first, generation id. Top players: sessions ranked by the
  lower bound, highest first, then by rate, more decided answers first, session id.

Every count comes from a GROUP BY in SQL (core.store.storage), so the cost in Python does not
grow with the number of guesses. ``python -m core.game.stats --db PATH`` prints the summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import beta

from core.config import MODE_SPECS, QUANTIZED_VARIANTS, REFERENCE_VARIANT, VARIANT_NAMES
from core.errors import DatabaseError
from core.game.inference import ALPHA, CLUSTERING_TEST_LEVEL, ClusterCounts
from core.game.verdicts import (
    ALL_VARIANTS,
    DEFAULT_MARGIN,
    DISTINGUISHABLE,
    INDISTINGUISHABLE,
    NO_DATA,
    NOT_ENOUGH_DATA,
    Estimate,
    GroupCounts,
    assess,
)
from core.store.storage import Store, Tally, default_images_dir

logger = logging.getLogger(__name__)

__all__ = [
    "ALL_VARIANTS",
    "DISTINGUISHABLE",
    "INDISTINGUISHABLE",
    "NOT_ENOUGH_DATA",
    "NO_DATA",
    "detection_table",
    "hardest_prompts",
    "session_stats",
    "summary",
    "top_players",
    "trio_picks",
]

RANKING_LEVEL = 0.95
Groups = list[tuple[str, str | None, str | None, Tally]]


def headline_keys() -> list[tuple[str, str]]:
    """The (mode, variant) groups shown together, in display order: trio, then each duel
    variant and the duel overall."""
    keys = []
    for mode in MODE_SPECS:
        if mode == "duel":
            keys += [(mode, v) for v in QUANTIZED_VARIANTS]
        keys.append((mode, ALL_VARIANTS))
    return keys


# (mode, cluster id, duel variant or None, answered, decided, correct)
Cluster = tuple[str, Any, str | None, int, int, int]


def _without_prompt(rows: list[tuple[Any, ...]]) -> list[Cluster]:
    """decided_by_generation rows without their prompt: (mode, id, variant, a, d, c)."""
    return [(r[0], r[1], *r[3:]) for r in rows]


def _pooled(rows: list[Cluster]) -> dict[tuple[str, Any], tuple[int, int, int]]:
    """(mode, cluster id) -> (answered, decided, correct) over a mode's variants."""
    out: dict[tuple[str, Any], tuple[int, int, int]] = {}
    for mode, cluster, _, answered, decided, correct in rows:
        a, d, c = out.get((mode, cluster), (0, 0, 0))
        out[(mode, cluster)] = (a + answered, d + decided, c + correct)
    return out


def _cluster_counts(rows: list[Cluster]) -> dict[tuple[str, str], ClusterCounts]:
    """(mode, variant or "all") -> its clusters' (correct, decided) pairs with multiplicity."""
    pairs: defaultdict[tuple[str, str], Counter[tuple[int, int]]] = defaultdict(Counter)
    for mode, _, variant, _, decided, correct in rows:
        if variant is not None:  # a duel variant's own clusters
            pairs[(mode, variant)][(correct, decided)] += 1
    for (mode, _), (_, decided, correct) in _pooled(rows).items():
        pairs[(mode, ALL_VARIANTS)][(correct, decided)] += 1
    return {
        key: ClusterCounts.of([(k, n, c) for (k, n), c in sorted(counter.items())])
        for key, counter in pairs.items()
    }


def headline_groups(
    store: Store,
    groups: Groups | None = None,
    by_session: list[Cluster] | None = None,
    by_generation: list[tuple[Any, ...]] | None = None,
) -> list[GroupCounts]:
    """The counts of every headline group, from SQL's per-player and per-generation counts
    (arguments: those counts when already read)."""
    groups = store.guess_groups() if groups is None else groups
    by_session = store.decided_by_session() if by_session is None else by_session
    by_generation = store.decided_by_generation() if by_generation is None else by_generation
    sessions = _cluster_counts(by_session)
    generations = _cluster_counts(_without_prompt(by_generation))
    empty = ClusterCounts.of([])
    out = []
    for mode, variant in headline_keys():
        tallies = [
            t for m, compared, _, t in groups if m == mode and variant in (ALL_VARIANTS, compared)
        ]
        out.append(
            GroupCounts(
                mode=mode,
                variant=variant,
                answered=sum(t.answered for t in tallies),
                correct=sum(t.correct for t in tallies),
                cant_tell=sum(t.cant_tell for t in tallies),
                sessions=sessions.get((mode, variant), empty),
                generations=generations.get((mode, variant), empty),
            )
        )
    return out


def detection_table(
    store: Store,
    margin: float = DEFAULT_MARGIN,
    rng: np.random.Generator | None = None,
    **counts: Any,
) -> list[Estimate]:
    """The verdict of every headline group (see core.game.verdicts), Holm across them.
    ``counts``: the store's counts when already read (see headline_groups)."""
    return assess(headline_groups(store, **counts), margin, rng)


def trio_picks(store: Store, groups: Groups | None = None) -> dict[str, Any]:
    """How often each variant was picked as the original in trio rounds (and can't tell)."""
    groups = store.guess_groups() if groups is None else groups
    picks: dict[str | None, int] = {}
    for mode, _, variant, tally in groups:
        if mode == "trio":
            picks[variant] = picks.get(variant, 0) + tally.answered
    answered = sum(picks.values())
    out: dict[str, Any] = {"answered": answered, "picked_as_original": {}}
    for variant in VARIANT_NAMES:
        n = picks.get(variant, 0)
        out["picked_as_original"][variant] = {
            "count": n,
            "share": n / answered if answered else None,
        }
    out["cant_tell"] = picks.get(None, 0)
    out["correct_variant"] = REFERENCE_VARIANT
    return out


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


def hardest_prompts(
    store: Store,
    limit: int = 10,
    min_decided: int = 5,
    mode: str = "duel",
    by_generation: list[tuple[Any, ...]] | None = None,
) -> list[dict[str, Any]]:
    """The generations people spot least in ``mode``: at least ``min_decided`` decided
    answers, ranked by the upper bound of the 95% exact interval of their decided rate
    (lowest first), then rate, more decided answers first, generation id. Per-prompt
    intervals are exploratory: no multiple-test correction."""
    by_generation = store.decided_by_generation() if by_generation is None else by_generation
    prompts = {r[1]: r[2] for r in by_generation}
    rows = [
        (gid, prompts[gid], *figures)
        for (m, gid), figures in sorted(_pooled(_without_prompt(by_generation)).items())
        if m == mode and figures[1] >= min_decided
    ]
    ranked = _ranked(rows, [r[4] for r in rows], [r[3] for r in rows])
    ranked.sort(key=lambda x: (x[3], x[1], -x[0][3], x[0][0]))
    chance = MODE_SPECS[mode].chance
    return [
        {
            "generation_id": gid,
            "prompt": prompt,
            "answered": answered,
            "decided": decided,
            "correct": correct,
            "chance": chance,
            "rate": rate,
            "ci_low": low,
            "ci_high": high,
        }
        for (gid, prompt, answered, decided, correct), rate, low, high in ranked[:limit]
    ]


def top_players(
    store: Store,
    limit: int = 10,
    min_decided: int = 5,
    mode: str = "duel",
    by_session: list[Cluster] | None = None,
) -> list[dict[str, Any]]:
    """The sessions best at ``mode``: at least ``min_decided`` decided answers, ranked by
    the lower bound of the 95% exact interval of their decided rate (highest first), then
    rate, more decided answers first, session id."""
    by_session = store.decided_by_session() if by_session is None else by_session
    rows = [
        (session, *figures)
        for (m, session), figures in sorted(_pooled(by_session).items())
        if m == mode and figures[1] >= min_decided
    ]
    ranked = _ranked(rows, [r[3] for r in rows], [r[2] for r in rows])
    ranked.sort(key=lambda x: (-x[2], -x[1], -x[0][2], x[0][0]))
    return [
        {
            "session_id": session,
            "answered": answered,
            "decided": decided,
            "correct": correct,
            "rate": rate,
            "ci_low": low,
            "ci_high": high,
        }
        for (session, answered, decided, correct), rate, low, high in ranked[:limit]
    ]


def session_stats(store: Store, session_id: str) -> dict[str, int]:
    """answered, correct, cant_tell, streak (current) and best_streak of one session."""
    tally, streak, best = store.session_tally(session_id)
    return {**asdict(tally), "streak": streak, "best_streak": best}


DEFINITIONS = {
    "rate": "correct / decided (decided = answered - can't tell); the tested rate",
    "spotted_rate": "correct / answered; descriptive only",
    "cant_tell_share": "can't tell / answered, with a 95% exact interval",
    "test": (
        "exact two-sided binomial test of correct out of decided against chance "
        "(duel 1/2, trio 1/3), p = min(1, 2 min(P(X <= k), P(X >= k)))"
    ),
    "interval": (
        "two-sided Clopper-Pearson interval at the effective size decided / design effect "
        "(Korn-Graubard, Satterthwaite degrees of freedom); the design effect is the larger "
        "bootstrap-over-players or bootstrap-over-generations variance over the binomial one "
        "among the clusterings where Tarone's test finds extra-binomial spread "
        f"(p < {CLUSTERING_TEST_LEVEL:g}); none found: the binomial interval"
    ),
    "holm": (
        "Holm's correction across the headline rows; every interval is shown at the level "
        "1 - a* at which it excludes chance exactly when Holm rejects (p_holm <= alpha)"
    ),
    "verdicts": (
        "distinguishable: the interval excludes chance; indistinguishable: the interval "
        "lies within chance +- margin; otherwise not enough data, with about how many more "
        "decided answers would settle it with 80% power at the current rate"
    ),
    "hardest_prompts": (
        "generations ranked by the upper bound of the 95% exact interval of their decided "
        "rate, lowest first; ties: rate, more decided answers, generation id"
    ),
    "top_players": (
        "sessions ranked by the lower bound of the 95% exact interval of their decided rate, "
        "highest first; ties: rate, more decided answers, session id"
    ),
}


def summary(
    store: Store,
    *,
    margin: float = DEFAULT_MARGIN,
    hardest_limit: int = 10,
    min_decided: int = 5,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Everything the Results tab and summary.json show, JSON-ready. ``margin`` is a
    fraction (0.05 = ±5 points of chance); ``rng`` drives the bootstraps (default: seeded,
    so the same data give the same summary)."""
    groups = store.guess_groups()
    by_session = store.decided_by_session()
    by_generation = store.decided_by_generation()
    estimates = detection_table(
        store, margin, rng, groups=groups, by_session=by_session, by_generation=by_generation
    )
    return {
        "definitions": {**DEFINITIONS, "alpha": ALPHA, "margin": margin},
        "counts": store.counts(),
        "detection": [e.to_dict() for e in estimates],
        "holm": {
            "tests": [f"{e.mode} {e.variant}" for e in estimates if e.p_value is not None],
            "p_values": [e.p_value for e in estimates if e.p_value is not None],
            "adjusted": [e.p_holm for e in estimates if e.p_value is not None],
            "level": next((e.level for e in estimates if e.level is not None), None),
        },
        "trio_picks": trio_picks(store, groups),
        "hardest_prompts": {
            mode: hardest_prompts(store, hardest_limit, min_decided, mode, by_generation)
            for mode in MODE_SPECS
        },
        "top_players": {
            mode: top_players(store, hardest_limit, min_decided, mode, by_session)
            for mode in MODE_SPECS
        },
    }


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
        "--margin",
        type=float,
        default=100 * DEFAULT_MARGIN,
        help="equivalence margin in points of chance (default 5)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.margin < 50:
        parser.error(f"--margin must be between 0 and 50 points, got {args.margin}")
    logging.basicConfig(level=logging.WARNING)
    if args.sources:
        from core.game.pooled import print_pooled

        return print_pooled(parser, args.sources, args.margin / 100, summary)
    try:
        with Store(args.db, default_images_dir(args.db), must_exist=True) as store:
            start, cpu = time.perf_counter(), time.process_time()
            result = summary(store, margin=args.margin / 100)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    except DatabaseError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    if args.timing:
        result["seconds"] = seconds
        result["cpu_seconds"] = cpu_seconds  # this process, SQLite included
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
