"""Three verdicts from counts: distinguishable, indistinguishable within ±m, not enough data.

``assess(groups, margin)`` takes the headline rows shown together (a trio row per set of
variants shown, duel per quantized variant, duel overall) and returns one ``Estimate`` each,
each tested against its own chance. The family's error, ALPHA = 5%,
is split evenly: half over the rows' live tests, half over their live intervals
(core.game.inference.row_alphas). The level shown is always 95%: it does not move as data
arrive. For every row:

1. rate = correct / decided; the live test's e-value against chance (a beta-mixture
   likelihood ratio, valid however often anyone looks) and the live interval (a confidence
   sequence for the average success probability of the answers given, valid under any
   clustering);
2. the verdict:
   * *distinguishable*: the e-value reaches its bar (1 / the row's test alpha), or the live
     interval excludes chance;
   * *indistinguishable within ±m*: otherwise, when the live interval lies inside chance ± m;
   * *not enough data yet*: otherwise; "too few people to tell yet" below MIN_PEOPLE people
     or prompts, and the simulated answers the live test needs at a stated effect
     (ANSWERS_NEEDED, from ``python -m core.bench.simulate --answers-needed``);
3. descriptive figures for one look (not monitoring-valid, labelled so): the two-way
   clustered interval of the per-answer rate (person × prompt), the per-person rate, and the
   can't-tell share with its own two-way clustered interval.

Under "nobody can tell" (every row at chance) and at every look, a false "distinguishable"
or a false "within ±m" happens on any row with probability at most 5% together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from core.config import ALL_VARIANTS, MODE_SPECS, QUANTIZED_VARIANTS, VARIANTS, variant_set
from core.game import inference
from core.game.inference import ALPHA, LEVEL, MIN_PEOPLE, ClusterCounts
from core.settings import check_margin

DISTINGUISHABLE = "distinguishable"
INDISTINGUISHABLE = "indistinguishable"
NOT_ENOUGH_DATA = "not_enough_data"
NO_DATA = "no_data"
DEFAULT_MARGIN = 0.05  # ±5 points of chance
LIVE_INTERVAL = "anytime-valid confidence sequence (live)"
CLUSTERED_INTERVAL = "two-way clustered t-interval by person and prompt (one look, descriptive)"
# What the live test needs at a stated effect, per mode: (true rate, decided answers by
# which 80% of simulated studies are called distinguishable in the app's family of four
# rows; 200 people of 10 answers each, each with their own rate: rate + N(0, 0.07²)),
# rounded up to 10. From
# ``python -m core.bench.simulate --answers-needed`` (seed 0, 2,000 studies; README).
ANSWERS_NEEDED: dict[str, tuple[float, int]] = {"duel": (0.60, 480), "trio": (0.45, 340)}


@dataclass(frozen=True)
class GroupCounts:
    """The counts of one headline row: totals and the same answers by cluster.

    ``sessions`` and ``generations`` hold each person's / generation's (correct, decided);
    ``sessions_cant_tell`` and ``generations_cant_tell`` (optional) each one's (can't tell,
    answered), for the can't-tell share's clustered interval. The stored ``session_id``
    is the person.
    """

    mode: str
    variant: str  # the duel's quantized variant, or "all"
    answered: int
    correct: int
    cant_tell: int
    sessions: ClusterCounts
    generations: ClusterCounts
    sessions_cant_tell: ClusterCounts | None = None
    generations_cant_tell: ClusterCounts | None = None

    @property
    def decided(self) -> int:
        return self.answered - self.cant_tell


@dataclass(frozen=True)
class Estimate:
    """Everything shown about one headline row. Rates are fractions (0…1)."""

    mode: str
    variant: str
    answered: int
    decided: int
    correct: int
    cant_tell: int
    chance: float
    margin: float
    people: int  # people with a decided answer in this row
    prompts: int  # generations with a decided answer in this row
    level: float  # the one confidence level shown (95%, whatever the data)
    rate: float | None  # correct / decided: the tested rate (per answer)
    spotted_rate: float | None  # correct / answered: descriptive only
    log10_e_value: float | None  # the live test's e-value, log10
    e_threshold: float  # the bar: distinguishable at e-value ≥ this
    ci_low: float | None  # the live interval (see interval_kind)
    ci_high: float | None
    interval_kind: str
    clustered_ci_low: float | None  # one look, per answer, two-way clustered
    clustered_ci_high: float | None
    clustered_df: int | None  # its degrees of freedom: min(people, prompts) − 1
    per_person_rate: float | None  # mean of each person's own rate
    per_person_ci_low: float | None
    per_person_ci_high: float | None
    cant_tell_share: float | None
    cant_tell_ci_low: float | None  # one look, two-way clustered
    cant_tell_ci_high: float | None
    verdict: str
    within_margin: bool | None  # the live interval lies inside chance ± margin
    too_few_people: bool
    verdict_text: str  # the plain sentence, shown first
    needed_text: str  # what the live test needs, for a row not settled yet
    details_text: str  # the numbers behind the sentence

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _either(labels: Sequence[str]) -> str:
    """Labels joined as a reader says them: "A", "A or B", "A, B or C"."""
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"


def label(
    mode: str, variant: str, pooled: Sequence[str] | None = None, *, short: bool = False
) -> str:
    """A row's name in numbers and tables, the one namer of rows: "Trio" (the mission's
    trio), "Trio among 4 (LLM.int8, NF4, FP8 layerwise)", "NF4", "LLM.int8 or NF4" (the
    duel over the variants ``pooled``, by default the game's trio's: see pooled_variants).
    ``short`` gives the chart's axis names: "Among 4" for a trio of another set, "Either"
    for the duel over its variants."""
    spec = MODE_SPECS[mode]
    if not spec.per_variant:
        if variant == ALL_VARIANTS:
            return spec.label
        shown = variant_set(variant)
        if short:
            return f"Among {1 + len(shown)}"
        return f"{spec.label} among {1 + len(shown)} ({', '.join(_labels(shown))})"
    if variant == ALL_VARIANTS:
        if short:
            return "Either"
        return _either(_labels(QUANTIZED_VARIANTS if pooled is None else pooled))
    return VARIANTS[variant].label


def _labels(names: Sequence[str]) -> list[str]:
    return [VARIANTS[n].label if n in VARIANTS else n for n in names]


def pooled_variants(rows: Iterable[tuple[str, str]], mode: str) -> list[str]:
    """The variants of ``mode``'s own rows among ``rows`` ((mode, variant) pairs), which
    its overall row pools: the duel's "all" row's."""
    return [v for m, v in rows if m == mode and v != ALL_VARIANTS]


def measured(mode: str, variant: str, pooled: Sequence[str] | None = None) -> str:
    """What a row measures, in words (the Results tables): "trio: picked the original",
    "trio: picked the original, Trio among 4 (…)", "duel: spotted NF4", "duel: spotted
    LLM.int8 or NF4" (the duel over the variants ``pooled``)."""
    if MODE_SPECS[mode].asks_for_original:
        among = "" if variant == ALL_VARIANTS else f", {label(mode, variant)}"
        return f"{mode}: picked the original{among}"
    return f"{mode}: spotted {label(mode, variant, pooled)}"


_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


def _what(mode: str, variant: str, pooled: Sequence[str] | None = None) -> str:
    """What people do when they can tell: "tell NF4 from BF16", "pick the original …"."""
    spec = MODE_SPECS[mode]
    if spec.asks_for_original:
        slots = round(1 / spec.chance_of(variant))
        return f"pick the original (BF16) out of {_NUMBER_WORDS.get(slots, str(slots))} images"
    return f"tell {label(mode, variant, pooled)} from BF16"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _people(n: int) -> str:
    return f"{n:,} {'person' if n == 1 else 'people'}"


def _answers(n: int) -> str:
    return f"{n:,} decided answer{'' if n == 1 else 's'}"


def e_value_text(log10_e: float) -> str:
    """An e-value for people: "3.2", "450", "10^12" (no exponent below a million)."""
    if log10_e < 6:
        value = 10**log10_e
        return f"{value:.2g}" if value < 10 else f"{value:,.0f}"
    return f"10^{log10_e:.0f}"


def sentence(f: Estimate, pooled: Sequence[str] | None = None) -> str:
    """The plain sentence of one row (its texts may still be empty), shown first;
    ``pooled``: the variants an overall row pools (see label)."""
    mode, variant, verdict = f.mode, f.variant, f.verdict
    what = _what(mode, variant, pooled)
    if verdict == NO_DATA:
        return f"No decided answers yet for {label(mode, variant, pooled)}" + (
            " (only “can't tell” so far)." if f.answered else "."
        )
    base = f"{_answers(f.decided)} from {_people(f.people)}"
    if verdict == DISTINGUISHABLE:
        if f.rate < f.chance:
            return (
                f"People can {what}, but they pick the wrong one: right in {_pct(f.rate)} "
                f"of {base}, where chance is {_pct(f.chance)}."
            )
        tail = f", though by less than ±{100 * f.margin:.3g} points" if f.within_margin else ""
        return (
            f"People can {what}{tail}: right in {_pct(f.rate)} of {base}, "
            f"where chance is {_pct(f.chance)}."
        )
    if verdict == INDISTINGUISHABLE:
        return (
            f"People can't {what}: their rate is within ±{100 * f.margin:.3g} points of "
            f"chance ({_pct(f.chance)}): {base}."
        )
    text = f"People can't reliably {what} yet: {base}."
    if f.people < MIN_PEOPLE:
        return text + " Too few people to tell yet."
    if f.prompts < MIN_PEOPLE:
        return text + " Too few prompts to tell yet."
    return text


def needed_text(mode: str, chance: float | None = None) -> str:
    """What the live test needs at a stated effect (simulated; see ANSWERS_NEEDED), for a
    row of ``mode`` whose chance is ``chance`` (default: the mode's with the default
    variants, the one simulated); a row of another chance (a trio among 4 or 5) has no
    simulated figure yet, and the text says so."""
    rate, answers = ANSWERS_NEEDED[mode]
    simulated = MODE_SPECS[mode].chance
    if chance is not None and not math.isclose(chance, simulated):
        return (
            f"No simulated figure yet for a round of {round(1 / chance)} images (chance "
            f"{_pct(chance)}); python -m core.bench.simulate --answers-needed simulates the "
            f"{mode} of {MODE_SPECS[mode].slots}."
        )
    return (
        f"To detect a rate of {_pct(rate)} in a {mode} (chance {_pct(simulated)}), "
        f"the live test needs about {answers:,} decided answers from at least {MIN_PEOPLE} "
        "people (simulated)."
    )


def _interval(low: float | None, high: float | None) -> str:
    return "—" if low is None or high is None else f"{100 * low:.1f}–{100 * high:.1f}%"


def _details(e: Estimate, pooled: Sequence[str] | None = None) -> str:
    """The numbers behind the sentence, in one line."""
    return (
        f"{label(e.mode, e.variant, pooled)}: {100 * e.rate:.1f}% of {e.decided:,} decided "
        f"answers, live {100 * e.level:.0f}% interval {_interval(e.ci_low, e.ci_high)}; "
        f"live test e-value {e_value_text(e.log10_e_value)} (distinguishable at "
        f"{e.e_threshold:,.0f}). One look: "
        f"{_interval(e.clustered_ci_low, e.clustered_ci_high)} per answer "
        f"(clustered by person and prompt), {100 * e.per_person_rate:.1f}% per person "
        f"({_interval(e.per_person_ci_low, e.per_person_ci_high)}); can't tell "
        f"{100 * e.cant_tell_share:.1f}% of answers "
        f"({_interval(e.cant_tell_ci_low, e.cant_tell_ci_high)})."
    )


def _cant_tell_interval(group: GroupCounts) -> tuple[float | None, float | None]:
    if group.sessions_cant_tell is None or group.generations_cant_tell is None:
        return None, None
    low, high, _ = inference.clustered_interval(
        group.sessions_cant_tell, group.generations_cant_tell, group.cant_tell, group.answered
    )
    return low, high


def _no_data(
    group: GroupCounts,
    chance: float,
    margin: float,
    threshold: float,
    pooled: Sequence[str] | None = None,
) -> Estimate:
    """The estimate of a row without decided answers: its counts, the can't-tell share
    when it has answers, no rate and no interval."""
    share = group.cant_tell / group.answered if group.answered else None
    low, high = _cant_tell_interval(group) if group.answered else (None, None)
    estimate = Estimate(
        mode=group.mode, variant=group.variant, answered=group.answered, decided=0,
        correct=0, cant_tell=group.cant_tell, chance=chance, margin=margin, people=0,
        prompts=0, level=LEVEL, rate=None, spotted_rate=0.0 if group.answered else None,
        log10_e_value=None, e_threshold=threshold, ci_low=None, ci_high=None,
        interval_kind=LIVE_INTERVAL, clustered_ci_low=None, clustered_ci_high=None,
        clustered_df=None, per_person_rate=None, per_person_ci_low=None,
        per_person_ci_high=None, cant_tell_share=share, cant_tell_ci_low=low,
        cant_tell_ci_high=high, verdict=NO_DATA, within_margin=None, too_few_people=True,
        verdict_text="", needed_text="", details_text="",
    )  # fmt: skip
    return replace(estimate, verdict_text=sentence(estimate, pooled))


def decide(
    log10_e: float, low: float, high: float, chance: float, margin: float, threshold: float
) -> tuple[str, bool]:
    """(verdict, within margin) from the live test and the live interval."""
    within = low >= chance - margin and high <= chance + margin
    if log10_e >= math.log10(threshold) or low > chance or high < chance:
        return DISTINGUISHABLE, within
    return (INDISTINGUISHABLE if within else NOT_ENOUGH_DATA), within


def assess(
    groups: Sequence[GroupCounts], margin: float = DEFAULT_MARGIN, *, alpha: float = ALPHA
) -> list[Estimate]:
    """The estimates of the headline rows shown together, in the order given; the family's
    alpha is split over ``len(groups)`` rows, however many comparisons there are (four
    with the default variants). Each row is tested against its own chance (a duel 1/2, a
    trio among k 1/k: ModeSpec.chance_of)."""
    check_margin(100 * margin, "the margin (as points of chance)")
    test_alpha, interval_alpha = inference.row_alphas(max(1, len(groups)), alpha)
    threshold = inference.e_threshold(test_alpha)
    out = []
    rows = [(g.mode, g.variant) for g in groups]
    for group in groups:
        chance = MODE_SPECS[group.mode].chance_of(group.variant)
        pooled = pooled_variants(rows, group.mode) or None
        k, n = group.correct, group.decided
        if n <= 0:
            out.append(_no_data(group, chance, margin, threshold, pooled))
            continue
        rate = k / n
        log10_e = float(inference.log_e_value(k, n, chance)) / math.log(10)
        half = float(inference.confidence_halfwidth(n, interval_alpha))
        low, high = max(0.0, rate - half), min(1.0, rate + half)
        verdict, within = decide(log10_e, low, high, chance, margin, threshold)
        people, prompts = group.sessions.count, group.generations.count
        too_few = min(people, prompts) < MIN_PEOPLE
        c_low, c_high, df = inference.clustered_interval(group.sessions, group.generations, k, n)
        person_rate, p_low, p_high = inference.per_person(group.sessions)
        ct_low, ct_high = _cant_tell_interval(group)
        estimate = Estimate(
            mode=group.mode, variant=group.variant, answered=group.answered, decided=n,
            correct=k, cant_tell=group.cant_tell, chance=chance, margin=margin, people=people,
            prompts=prompts, level=LEVEL, rate=rate, spotted_rate=k / group.answered,
            log10_e_value=log10_e, e_threshold=threshold, ci_low=low, ci_high=high,
            interval_kind=LIVE_INTERVAL, clustered_ci_low=c_low, clustered_ci_high=c_high,
            clustered_df=df, per_person_rate=person_rate, per_person_ci_low=p_low,
            per_person_ci_high=p_high, cant_tell_share=group.cant_tell / group.answered,
            cant_tell_ci_low=ct_low, cant_tell_ci_high=ct_high, verdict=verdict,
            within_margin=within, too_few_people=too_few, verdict_text="", needed_text="",
            details_text="",
        )  # fmt: skip
        out.append(
            replace(
                estimate,
                verdict_text=sentence(estimate, pooled),
                needed_text=needed_text(group.mode, chance) if verdict == NOT_ENOUGH_DATA else "",
                details_text=_details(estimate, pooled),
            )
        )
    return out
