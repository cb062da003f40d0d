"""Simulated players: load-test the game and check the statistics recover known truths.

``python -m core.bench.simulate --generations 20 --rounds 2000 --threads 32 --mode duel
--accuracy int8=0.5,nf4=0.7 --json`` stores synthetic generations (small placeholder
images, ``synthetic=True``) through Store.save_generation, then T threads play R rounds in
total through the same Game API the app uses (new_round from the pool or with a
generation id, then guess). A simulated player answers correctly with the given
probability per variant (duel: spotting the quantized image of that variant; trio: the
``bf16`` key, spotting the original; a missing key means chance). Afterwards the rows in
the database are compared with the acknowledged guesses: lost, duplicated and failed
must all be 0.

``--bulk-guesses N --time-stats-export`` instead bulk-loads N answered rounds (for
timing statistics and export at scale; not through the Game API).

``--results-viewers V`` (with a load run) makes every player refresh the shared Results
(core.game.results_cache, as the app does after each guess) and V more threads press
Refresh once a second; the report adds votes/s and the age of every Results shown.

``--validate [--studies S] [--fast] [--json]`` instead checks the verdicts on simulated
studies with known truth (core.bench.validate), prints the table (JSON with ``--json``) and
exits 1 if any figure misses. ``--answers-needed [--studies S]`` prints the decided answers
the live test needs at the stated effects (core.game.verdicts.ANSWERS_NEEDED).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.bench import validate
from core.config import MODE_SPECS, REFERENCE_VARIANT, SYNTHETIC_SCHNELL, VARIANT_NAMES
from core.errors import DatabaseError, NoReadyRoundError
from core.game import export, presentation, stats
from core.game.results_cache import RESULTS_MAX_AGE_SECONDS, ResultsCache
from core.game.rounds import CANT_TELL, Game, RoundView
from core.game.verdicts import ANSWERS_NEEDED
from core.limits import GenerationSettings
from core.records import Generation, VariantResult
from core.settings import AppSettings
from core.store import bench_queries
from core.store.storage import Store, default_images_dir

logger = logging.getLogger(__name__)

MODE_CHOICES = (*MODE_SPECS, "both")
FULL_STUDIES = 2000  # --validate
FAST_STUDIES = 500  # --validate --fast
NEEDED_STUDIES = 2000  # --answers-needed


def synthetic_generation(
    index: int, rng: random.Random, size: int = 32, variants: Sequence[str] = VARIANT_NAMES
) -> Generation:
    """A placeholder generation: one small noisy image per variant of ``variants`` (BF16
    first; default: the game's trio), plausible figures.

    The image is Gaussian grey noise (mean 128, spread 40 + index % 50) drawn from a
    generator seeded with ``index``: the same index always draws the same picture, and
    ``rng``'s draws (the figures) are not touched by it.
    """
    noise = random.Random(index)
    sigma = 40 + index % 50
    grey = bytes(min(255, max(0, round(noise.gauss(128, sigma)))) for _ in range(size * size))
    base = Image.frombytes("L", (size, size), grey).convert("RGB")
    results = {}
    for k, name in enumerate(variants):
        image = base if name == REFERENCE_VARIANT else base.point(lambda v, k=k: min(255, v + k))
        results[name] = VariantResult(
            variant=name,
            image=image,
            seconds=rng.uniform(0.5, 2.0),
            weight_bytes=int(2e9 / (k + 1)),
            shared_weight_bytes=int(1e8),
            peak_rss_bytes=int(3e9 / (k + 1)),
            psnr=None if name == REFERENCE_VARIANT else rng.uniform(25, 40),
            ssim=None if name == REFERENCE_VARIANT else rng.uniform(0.8, 0.99),
        )
    return Generation(
        prompt=f"synthetic prompt {index}",
        settings=GenerationSettings(index, 4, 0.0, size, size, 64),
        model=SYNTHETIC_SCHNELL,
        device="cpu",
        placement="synthetic",
        results=results,
        created_at=time.time(),
        synthetic=True,
    )


def parse_accuracy(value: str) -> dict[str, float]:
    """``"int8=0.5,nf4=0.7"`` -> {"int8": 0.5, "nf4": 0.7}."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, number = item.partition("=")
        if not sep or name.strip() not in VARIANT_NAMES:
            raise argparse.ArgumentTypeError(
                f"expected VARIANT=PROBABILITY with VARIANT in {', '.join(VARIANT_NAMES)}, "
                f"got {item!r}"
            )
        try:
            p = float(number)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{number!r} is not a probability") from None
        if not 0.0 <= p <= 1.0:
            raise argparse.ArgumentTypeError(f"probability {p} is outside 0…1")
        out[name.strip()] = p
    return out


@dataclass
class Player:
    """Answers correctly with a known probability (it peeks at the server's answer key,
    which only a test harness can do)."""

    accuracy: dict[str, float]
    cant_tell: float
    rng: random.Random

    def answer(self, store: Store, view: RoundView) -> str:
        key = store.fetch_round(view.round_id).answer_key  # harness-only peek
        return self.answer_for(view.mode, key)

    def answer_for(self, mode: str, key: dict[str, str]) -> str:
        """The answer to a round of ``mode`` whose slot -> variant key is ``key``."""
        if self.rng.random() < self.cant_tell:
            return CANT_TELL
        spec = MODE_SPECS[mode]
        right = spec.correct_slot(key)
        p = self.accuracy.get(spec.target_variant(key), spec.chance)
        if self.rng.random() < p:
            return right
        return self.rng.choice([s for s in key if s != right])


@dataclass
class ThreadResult:
    acknowledged: list[str] = field(default_factory=list)
    guess_seconds: list[float] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    results_ages: list[float] = field(default_factory=list)  # age of each Results shown (s)


def _modes(mode: str) -> Iterator[str]:
    while True:
        yield from (MODE_SPECS if mode == "both" else (mode,))


def _play(
    store: Store,
    thread: int,
    rounds: int,
    args: argparse.Namespace,
    prefix: str,
    generation_ids: list[int],
    result: ThreadResult,
    start: threading.Barrier,
    results: ResultsCache[stats.Summary] | None = None,
) -> None:
    rng = random.Random(args.seed * 1000 + thread)
    game = Game(store, random.Random(rng.random()), rounds_per_minute=0)
    player = Player(args.accuracy, args.cant_tell, random.Random(rng.random()))
    session_number = 0
    session = f"{prefix}{thread}-{session_number}"
    modes = _modes(args.mode)
    start.wait()
    for k in range(rounds):
        mode = next(modes)
        try:
            t0 = time.perf_counter()
            # Every fourth round names a generation, as after a fresh generation in the app.
            if k % 4 == 3:
                view = game.new_round(session, mode, rng.choice(generation_ids))
            else:
                try:
                    view = game.new_round(session, mode)
                except NoReadyRoundError:
                    session_number += 1  # a new player: the pool is fresh for them
                    session = f"{prefix}{thread}-{session_number}"
                    view = game.new_round(session, mode)
            t1 = time.perf_counter()
            answer = player.answer(store, view)
            t2 = time.perf_counter()
            game.guess(session, view.round_id, answer)
            t3 = time.perf_counter()
            if results is not None:  # the app refreshes the player's Results after a guess
                result.results_ages.append(results.get()[1])
        except Exception as e:  # counted and reported; the run goes on
            result.failed += 1
            if len(result.errors) < 5:
                result.errors.append(f"{type(e).__name__}: {e}")
            continue
        result.acknowledged.append(view.round_id)
        result.round_seconds.append(t1 - t0)
        result.guess_seconds.append(t3 - t2)


def _view_results(
    results: ResultsCache[stats.Summary],
    stop: threading.Event,
    result: ThreadResult,
    every: float = 1.0,
) -> None:
    """A person keeping Results open and pressing Refresh every ``every`` seconds."""
    while not stop.is_set():
        result.results_ages.append(results.get()[1])
        stop.wait(every)


def _percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return round(ordered[index] * 1000, 3)


def create_generations(store: Store, count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [store.save_generation(synthetic_generation(i, rng)) for i in range(count)]


def run_load(store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """Play ``args.rounds`` rounds on ``args.threads`` threads; verify against the db."""
    generation_ids = create_generations(store, args.generations, args.seed)
    prefix = f"sim-{secrets.token_hex(4)}-"
    per_thread = [
        args.rounds // args.threads + (i < args.rounds % args.threads) for i in range(args.threads)
    ]
    results = [ThreadResult() for _ in range(args.threads)]
    barrier = threading.Barrier(args.threads + 1)
    viewers = args.results_viewers
    cache = (
        None
        if viewers is None
        else ResultsCache(lambda: results_now(store), max_age=args.results_max_age)
    )
    if cache is not None:
        cache.get()  # the Results as the first visitor opened them, before the run
    threads = [
        threading.Thread(
            target=_play,
            args=(
                store,
                i,
                per_thread[i],
                args,
                prefix,
                generation_ids,
                results[i],
                barrier,
                cache,
            ),
            name=f"player-{i}",
        )
        for i in range(args.threads)
    ]
    for t in threads:
        t.start()
    stop = threading.Event()
    watching = [ThreadResult() for _ in range(viewers or 0)]
    watchers = [
        threading.Thread(target=_view_results, args=(cache, stop, w), name=f"viewer-{i}")
        for i, w in enumerate(watching)
    ]
    barrier.wait()
    start = time.perf_counter()
    for t in watchers:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    stop.set()
    for t in watchers:
        t.join()

    acknowledged = [r for res in results for r in res.acknowledged]
    guess_seconds = [s for res in results for s in res.guess_seconds]
    round_seconds = [s for res in results for s in res.round_seconds]
    check = bench_queries.guess_check(store, prefix)
    in_db = set(check["round_ids"])
    acked = set(acknowledged)
    return {
        "threads": args.threads,
        "rounds_requested": args.rounds,
        "generations": len(generation_ids),
        "mode": args.mode,
        "acknowledged": len(acknowledged),
        "db_guesses": len(check["round_ids"]),
        "lost": len(acked - in_db),
        "duplicated": check["duplicated"] + (len(acknowledged) - len(acked)),
        "unacknowledged_in_db": len(in_db - acked),
        "failed": sum(res.failed for res in results),
        "errors": [e for res in results for e in res.errors][:5],
        "seconds": round(wall, 3),
        "guesses_per_second": round(len(acknowledged) / wall, 1) if wall else None,
        "guess_latency_ms": {
            "p50": _percentile_ms(guess_seconds, 50),
            "p99": _percentile_ms(guess_seconds, 99),
        },
        "new_round_latency_ms": {
            "p50": _percentile_ms(round_seconds, 50),
            "p99": _percentile_ms(round_seconds, 99),
        },
        **({} if cache is None else _freshness(results + watching, cache, len(watching), store)),
        "detection": [d.to_dict() for d in stats.detection_table(store)],
    }


def results_now(store: Store) -> stats.Summary:
    """What the app's shared Results cache computes (core.game.arena.Arena._results_now,
    without the engine's costs): the summary and the chart drawn once."""
    summary = stats.summary(store).with_costs([])
    return summary.with_chart(presentation.detection_chart_html(summary))


def render_seconds(summary: stats.Summary, repeats: int = 5) -> float:
    """Median seconds to turn a cached summary into what one refresh of the Results tab
    shows (app.on_results: markdown and tables; the chart is already drawn)."""
    times = []
    results = summary.with_costs([])
    for _ in range(repeats):
        start = time.perf_counter()
        presentation.verdicts_markdown(results)
        presentation.detection_table(results)
        presentation.detection_details_table(results)
        presentation.trio_picks(results)
        presentation.hardest_table(results)
        presentation.cost_table(results)
        presentation.cost_note(results)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _freshness(
    results: list[ThreadResult], cache: ResultsCache[stats.Summary], viewers: int, store: Store
) -> dict[str, Any]:
    """How old the Results shown during the run were (seconds), what one recomputation
    costs after the run (this process's CPU: SQLite included), and what each refresh
    costs on top."""
    ages = sorted(a for r in results for a in r.results_ages)
    start, cpu = time.perf_counter(), time.process_time()
    summary = results_now(store)
    compute = (time.perf_counter() - start, time.process_time() - cpu)
    return {
        "results_viewers": viewers,
        "results_shown": len(ages),
        "results_age_seconds": {
            "p50": round(ages[len(ages) // 2], 3) if ages else None,
            "p99": round(ages[min(len(ages) - 1, int(0.99 * len(ages)))], 3) if ages else None,
            "max": round(ages[-1], 3) if ages else None,
        },
        "results_max_age_setting_seconds": cache.max_age,
        "recompute_seconds_after_run": round(compute[0], 3),
        "recompute_cpu_seconds_after_run": round(compute[1], 3),
        "render_ms_per_refresh": round(1000 * render_seconds(summary), 2),
    }


def bulk_load(store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """Store ``args.bulk_guesses`` answered rounds in one transaction (benchmarks only)."""
    generation_ids = create_generations(store, args.generations, args.seed)
    rng = random.Random(args.seed)
    player = Player(args.accuracy, args.cant_tell, rng)
    modes = _modes(args.mode)
    now = time.time()
    rounds: list[tuple] = []
    guesses: list[tuple] = []
    start = time.perf_counter()
    for k in range(args.bulk_guesses):
        mode = next(modes)
        spec = MODE_SPECS[mode]
        key = spec.draw(VARIANT_NAMES, rng)
        compared = spec.compared_variant(key)
        round_id = secrets.token_urlsafe(16)
        session = f"bulk-{k // 50}"
        generation_id = generation_ids[k % len(generation_ids)]
        created = now - args.bulk_guesses + k
        answer = player.answer_for(mode, key)
        target = spec.target_variant(key)
        variant = None if answer == CANT_TELL else key[answer]
        correct = None if answer == CANT_TELL else int(variant == target)
        rounds.append(
            (round_id, generation_id, mode, session, compared, json.dumps(key), created, created)
        )
        guesses.append(
            (
                round_id,
                session,
                generation_id,
                mode,
                compared,
                answer,
                variant,
                correct,
                int(answer == CANT_TELL),
                1.0,
                created + 1.0,
            )
        )
    built = time.perf_counter()
    bench_queries.bulk_insert_rounds_and_guesses(store, rounds, guesses)
    loaded = time.perf_counter()
    return {
        "bulk_guesses": args.bulk_guesses,
        "build_seconds": round(built - start, 3),
        "insert_seconds": round(loaded - built, 3),
    }


def time_stats_export(store: Store, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    stats.summary(store)
    summary_seconds = time.perf_counter() - start
    start = time.perf_counter()
    export.export(store, out)
    export_seconds = time.perf_counter() - start
    return {
        "stats_seconds": round(summary_seconds, 3),
        "export_seconds": round(export_seconds, 3),
        "export_formats": list(export.FORMATS),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.bench.simulate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--db", type=Path, help="SQLite file (default: a temporary one)")
    parser.add_argument("--images-dir", type=Path, help="default: images/ beside the db")
    parser.add_argument("--force", action="store_true", help="allow the app's data/arena.db")
    parser.add_argument("--generations", type=_positive, default=20)
    parser.add_argument("--rounds", type=_positive, default=1000, help="rounds in total")
    parser.add_argument("--threads", type=_positive, default=8)
    parser.add_argument("--mode", choices=MODE_CHOICES, default="duel")
    parser.add_argument(
        "--accuracy",
        type=parse_accuracy,
        default={},
        help="VARIANT=P,… (duel: per quantized variant; trio: bf16=P); default chance",
    )
    parser.add_argument("--cant-tell", type=float, default=0.0, help="share of can't-tell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bulk-guesses", type=_positive, help="bulk-load N answered rounds")
    parser.add_argument(
        "--time-stats-export",
        action="store_true",
        help="time core.game.stats.summary and a full export (all formats) after loading",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--validate",
        action="store_true",
        help="validate the verdicts on simulated studies with known truth; exit 1 on a miss",
    )
    parser.add_argument(
        "--studies",
        type=_positive,
        help=f"--validate / --answers-needed: studies per figure (default {FULL_STUDIES}; "
        f"{FAST_STUDIES} with --fast; {NEEDED_STUDIES} for --answers-needed)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help=f"--validate: {FAST_STUDIES} studies, each bound loosened by 3 Monte-Carlo "
        "standard errors",
    )
    parser.add_argument(
        "--answers-needed",
        action="store_true",
        help="print the decided answers the live test needs at the stated effects",
    )
    parser.add_argument(
        "--results-viewers",
        type=_non_negative,
        help="load run: players refresh the shared Results after each guess, and this many "
        "more threads press Refresh every second; reports the age of what was shown",
    )
    parser.add_argument(
        "--results-max-age",
        type=float,
        default=RESULTS_MAX_AGE_SECONDS,
        help="--results-viewers: seconds the shared Results are kept before a recomputation "
        f"(default {RESULTS_MAX_AGE_SECONDS:g}, the app's)",
    )
    return parser


def _whole_number(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least``, else a clear error."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"{n} must be at least {least}")
        return n

    return parse


_positive, _non_negative = _whole_number(1), _whole_number(0)


def answers_needed(studies: int, seed: int) -> dict[str, dict[str, float | int]]:
    """Per mode, the decided answers by which 80% of simulated studies at the stated effect
    (verdicts.ANSWERS_NEEDED's rate) are called distinguishable, rounded up to 10."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)]
    out = {}
    for rng, (mode, (rate, _)) in zip(rngs, ANSWERS_NEEDED.items(), strict=True):
        needed = validate.answers_needed(rng, studies, rate, mode)
        out[mode] = {"rate": rate, "decided_answers": 10 * math.ceil(needed / 10)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.cant_tell <= 1.0:
        parser.error("--cant-tell must be in 0…1")
    if not args.results_max_age >= 0:
        parser.error(f"--results-max-age must be at least 0 seconds, got {args.results_max_age}")
    logging.basicConfig(level=logging.WARNING)
    if args.answers_needed:
        studies = args.studies or NEEDED_STUDIES
        needed = answers_needed(studies, args.seed)
        report = {"studies": studies, "seed": args.seed, "power": 0.8, "modes": needed}
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.validate:
        start, cpu = time.perf_counter(), time.process_time()
        studies = args.studies or (FAST_STUDIES if args.fast else FULL_STUDIES)
        rows = validate.figures(studies, args.seed)
        passed = all(row.holds(args.fast) for row in rows)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        if args.json:
            report = {
                "studies": studies, "seed": args.seed, "fast": args.fast, "passed": passed,
                "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
                "figures": [row.to_dict(args.fast) for row in rows],
            }  # fmt: skip
            json.dump(report, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(validate.table(rows, args.fast) + "\n")
            sys.stdout.write(
                f"{studies} studies per figure, seed {args.seed}, {seconds:.0f} s wall, "
                f"{cpu_seconds:.0f} s CPU\n"
            )
        return 0 if passed else 1
    tmp = None
    if args.db is None:
        tmp = Path(tempfile.mkdtemp(prefix="spot-simulate-"))
        args.db = tmp / "simulate.db"
    elif args.db.resolve() == AppSettings().db.resolve() and not args.force:
        parser.error(f"refusing to add simulated data to {args.db}; pass --force to do so")
    images_dir = args.images_dir or default_images_dir(args.db)
    try:
        with Store(args.db, images_dir) as store:
            report = bulk_load(store, args) if args.bulk_guesses else run_load(store, args)
            if args.time_stats_export:
                out = Path(tempfile.mkdtemp(prefix="spot-export-"))
                try:
                    report.update(time_stats_export(store, out))
                finally:
                    shutil.rmtree(out, ignore_errors=True)
            report["db"] = str(args.db)
    except DatabaseError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        lines = [f"{key}: {value}" for key, value in report.items() if key != "detection"]
        lines += [d["verdict_text"] for d in report.get("detection", [])]
        sys.stdout.write("\n".join(lines) + "\n")
    if not args.bulk_guesses and (report["lost"] or report["duplicated"] or report["failed"]):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
