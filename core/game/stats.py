"""Statistics over stored guesses (read-only): detection rates, intervals, tests.

Definitions (also in README.md):

* answered: guesses, "can't tell" included; decided: answered minus can't-tell.
* detection rate = correct / answered. A "can't tell" counts as *not detected*: a player
  who cannot see the difference has not detected it. The rate among decided answers
  (correct / decided) is reported beside it.
* 95% interval: two-sided Wilson score interval of correct / answered
  (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``).
* test: exact one-sided binomial test of correct out of answered against chance
  (trio 1/3: picking the original at random; duel 1/2), alternative "greater".
* verdict: p < 0.05 -> "distinguishable from the original at the 5% level", otherwise
  "not distinguishable from chance at the 5% level".

Every count comes from a GROUP BY in SQL (core.store.storage), so the cost in Python does not
grow with the number of guesses. ``python -m core.game.stats --db PATH`` prints the summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scipy.stats import binomtest

from core.config import MODE_SPECS, QUANTIZED_VARIANTS, REFERENCE_VARIANT, VARIANT_NAMES
from core.errors import DatabaseError
from core.store.storage import Store, Tally, default_images_dir

logger = logging.getLogger(__name__)

ALPHA = 0.05
CONFIDENCE = 0.95
DISTINGUISHABLE = "distinguishable from the original at the 5% level"
NOT_DISTINGUISHABLE = "not distinguishable from chance at the 5% level"
NO_DATA = "no answers yet"
ALL_VARIANTS = "all"


@dataclass(frozen=True)
class Detection:
    """How often one group of rounds was answered correctly, against chance."""

    mode: str
    variant: str  # the duel's quantized variant, or "all"
    answered: int
    correct: int
    cant_tell: int
    decided: int
    chance: float
    rate: float | None  # correct / answered (can't tell counts as not detected)
    decided_rate: float | None  # correct / decided
    ci_low: float | None  # 95% Wilson interval of ``rate``
    ci_high: float | None
    p_value: float | None  # exact one-sided binomial test, H1: rate > chance
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detection(mode: str, variant: str, tally: Tally) -> Detection:
    """The figures of one tally of ``mode`` (its chance level comes from the mode)."""
    chance = MODE_SPECS[mode].chance
    decided = tally.answered - tally.cant_tell
    if tally.answered == 0:
        return Detection(mode, variant, 0, 0, 0, 0, chance, None, None, None, None, None, NO_DATA)
    test = binomtest(tally.correct, tally.answered, p=chance, alternative="greater")
    # The interval is two-sided: the one-sided test's own proportion_ci would end at 1.
    ci = binomtest(tally.correct, tally.answered).proportion_ci(
        confidence_level=CONFIDENCE, method="wilson"
    )
    return Detection(
        mode=mode,
        variant=variant,
        answered=tally.answered,
        correct=tally.correct,
        cant_tell=tally.cant_tell,
        decided=decided,
        chance=chance,
        rate=tally.correct / tally.answered,
        decided_rate=tally.correct / decided if decided else None,
        ci_low=float(ci.low),
        ci_high=float(ci.high),
        p_value=float(test.pvalue),
        verdict=DISTINGUISHABLE if test.pvalue < ALPHA else NOT_DISTINGUISHABLE,
    )


def _sum(tallies: list[Tally]) -> Tally:
    return Tally(
        answered=sum(t.answered for t in tallies),
        correct=sum(t.correct for t in tallies),
        cant_tell=sum(t.cant_tell for t in tallies),
    )


def detection_table(
    store: Store, groups: list[tuple[str, str | None, str | None, Tally]] | None = None
) -> list[Detection]:
    """Per mode: one row per duel variant and an "all" row; the trio has its "all" row."""
    groups = store.guess_groups() if groups is None else groups
    rows: list[Detection] = []
    for mode in MODE_SPECS:
        in_mode = [(compared, t) for m, compared, _, t in groups if m == mode]
        if mode == "duel":
            for variant in QUANTIZED_VARIANTS:
                tally = _sum([t for compared, t in in_mode if compared == variant])
                rows.append(detection(mode, variant, tally))
        rows.append(detection(mode, ALL_VARIANTS, _sum([t for _, t in in_mode])))
    return rows


def trio_picks(
    store: Store, groups: list[tuple[str, str | None, str | None, Tally]] | None = None
) -> dict[str, Any]:
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


def hardest_prompts(
    store: Store, limit: int = 10, min_answered: int = 5, mode: str = "duel"
) -> list[dict[str, Any]]:
    """The generations least often answered correctly in ``mode`` (at least
    ``min_answered`` guesses), hardest first, with the same figures as the detection
    table."""
    out = []
    for generation_id, prompt, tally in store.hardest_generations(mode, min_answered, limit):
        figures = detection(mode, ALL_VARIANTS, tally).to_dict()
        figures.pop("variant")
        out.append({"generation_id": generation_id, "prompt": prompt, **figures})
    return out


def session_stats(store: Store, session_id: str) -> dict[str, int]:
    """answered, correct, cant_tell, streak (current) and best_streak of one session."""
    tally, streak, best = store.session_tally(session_id)
    return {**asdict(tally), "streak": streak, "best_streak": best}


def summary(store: Store, *, hardest_limit: int = 10, min_answered: int = 5) -> dict[str, Any]:
    """Everything the Results tab and summary.json show, JSON-ready."""
    groups = store.guess_groups()
    return {
        "definitions": {
            "detection_rate": "correct / answered; a can't-tell answer counts as not detected",
            "decided_rate": "correct / (answered - can't tell)",
            "interval": "95% Wilson score interval of the detection rate",
            "test": "exact one-sided binomial test against chance (trio 1/3, duel 1/2)",
            "alpha": ALPHA,
        },
        "counts": store.counts(),
        "detection": [d.to_dict() for d in detection_table(store, groups)],
        "trio_picks": trio_picks(store, groups),
        "hardest_prompts": {
            mode: hardest_prompts(store, hardest_limit, min_answered, mode) for mode in MODE_SPECS
        },
        "top_sessions": [
            {"session_id": s, **asdict(t)} for s, t in store.top_sessions(hardest_limit)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.game.stats", description="Print the statistics of a game database."
    )
    parser.add_argument("--db", type=Path, default=Path("data/arena.db"))
    parser.add_argument("--timing", action="store_true", help="also print the seconds taken")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        with Store(args.db, default_images_dir(args.db), must_exist=True) as store:
            start = time.perf_counter()
            result = summary(store)
            seconds = time.perf_counter() - start
    except DatabaseError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    if args.timing:
        result["seconds"] = seconds
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
