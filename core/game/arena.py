"""The app's services: everything a UI handler does, in one object, with no UI code.

``Arena`` ties the engine, the store and the game together: it validates a request,
enforces the per-session generation limit and the bounded generation queue, generates,
stores, and starts the round. ``app.py`` only turns these calls into components and
their errors into ``gr.Error``. No torch here: the engine is used through its methods.
"""

from __future__ import annotations

import collections
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from core.config import ModelSpec
from core.errors import (
    AnswerCapError,
    BusyError,
    InvalidSettingError,
    RateLimitedError,
    excerpt,
)
from core.game import presentation, stats
from core.game.detail import Region, magnified_crops
from core.game.export import export_zip
from core.game.identity import Person, PersonIds
from core.game.results_cache import ResultsCache
from core.game.rounds import (
    Game,
    ReadyRounds,
    Reveal,
    RoundView,
    check_mode,
    check_session_id,
)
from core.limits import GenerationSettings, coerce_number, validate_prompt
from core.records import Generation, ProgressCallback
from core.settings import AppSettings
from core.store.storage import Store

logger = logging.getLogger(__name__)

EXPORT_PREFIX = "spot-the-quantized-"


class GenerationEngine(Protocol):
    """What the arena needs of core.engine.generation.Engine."""

    spec: ModelSpec
    device_label: str
    versions: dict[str, str]

    @property
    def variants(self) -> tuple[str, ...]: ...

    def default_settings(self, seed: int = 0) -> GenerationSettings: ...

    def check_prompt(self, prompt: str, settings: GenerationSettings) -> str: ...

    def covers(self, prompt: str, max_sequence_length: int) -> bool: ...

    def generate(
        self, prompt: str, settings: GenerationSettings, progress: ProgressCallback | None = None
    ) -> Generation: ...


class SlidingWindowLimiter:
    """At most ``limit`` events per ``window`` seconds per key (0 = unlimited)."""

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> bool:
        """Record one event for ``key``; False (and nothing recorded) when over the limit."""
        if self.limit <= 0:
            return True
        now = self.clock()
        with self._lock:
            events = self._events.setdefault(key, collections.deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True

    def wait_seconds(self, key: str) -> float:
        """Seconds until ``key`` may take another event (0 when it may now)."""
        if self.limit <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            events = self._events.get(key)
            if not events or len(events) < self.limit:
                return 0.0
            # The oldest event of a full window leaves it first.
            return max(0.0, events[-self.limit] + self.window - now)

    def give_back(self, key: str) -> None:
        """Forget the latest event of ``key`` (a request that did no work)."""
        with self._lock:
            events = self._events.get(key)
            if events:
                events.pop()


@dataclass
class Arena:
    """The services behind the UI; safe to call from many handler threads at once."""

    engine: GenerationEngine
    store: Store
    game: Game
    settings: AppSettings
    # Who plays (core.game.identity). The app passes one made with the deployment's key;
    # the default, a random key, lasts as long as this arena (tests, simulations).
    persons: PersonIds = field(default_factory=PersonIds.ephemeral, repr=False)
    _queue: threading.BoundedSemaphore = field(init=False, repr=False)
    _generation_limiter: SlidingWindowLimiter = field(init=False, repr=False)
    _results: ResultsCache[stats.Summary] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # One generation runs (the engine's lock) and queue_size more may wait for it.
        self._queue = threading.BoundedSemaphore(self.settings.queue_size + 1)
        self._generation_limiter = SlidingWindowLimiter(self.settings.generations_per_minute)
        # Rounds stored before prompts were checked, whose prompt this model cannot draw,
        # leave the ready pool and the verdicts (nothing changes for a hub model).
        marked = self.store.mark_out_of_domain(self.spec.name, self.engine.covers)
        if marked:
            logger.info("%d stored generations are out of the model's domain", marked)
        # Shared by every player: recomputed at most every few seconds (core.game.results_cache).
        self._results = ResultsCache(self._results_now)

    @property
    def spec(self) -> ModelSpec:
        return self.engine.spec

    @staticmethod
    def new_session_id() -> str:
        """A session id for a caller without a person (a scripted API client): one person
        per client session."""
        return secrets.token_urlsafe(16)

    def person(self, token: object, account: str | None = None) -> Person:
        """The person behind a page: the signed-in account (its OAuth subject id), else
        the browser's signed token, else a new person whose token the browser must keep
        (core.game.identity.PersonIds.person)."""
        return self.persons.person(token, account)

    def answer_cap_note(self, session_id: str) -> str | None:
        """Why this person gets no new round today (the daily answer cap's message), or
        None while they may still answer."""
        try:
            self.game.check_answer_cap(session_id)
        except AnswerCapError as capped:
            return str(capped)
        return None

    def open_round(self, session_id: str) -> RoundView | None:
        """The person's unanswered, still open round, served again (a reload restores it)."""
        return self.game.open_round(session_id)

    # --- generation ----------------------------------------------------------------------

    def settings_from_request(
        self,
        *,
        seed: object,
        random_seed: object,
        steps: object,
        guidance: object,
        width: object,
        height: object,
    ) -> GenerationSettings:
        """Typed, validated settings from UI / API values (which arrive as floats or worse)."""
        if not isinstance(random_seed, bool):
            raise InvalidSettingError(
                f"random_seed must be true or false, got {excerpt(random_seed)}"
            )
        defaults = self.engine.default_settings()
        chosen_seed = secrets.randbelow(2**32) if random_seed else coerce_number(seed, int, "seed")
        settings = defaults.with_(
            seed=chosen_seed,
            steps=coerce_number(steps, int, "steps"),
            guidance=coerce_number(guidance, float, "guidance"),
            width=coerce_number(width, int, "width"),
            height=coerce_number(height, int, "height"),
        )
        return settings.validate(self.spec)

    def generate_round(
        self,
        session_id: str,
        prompt: object,
        settings: GenerationSettings,
        mode: str,
        progress: ProgressCallback | None = None,
    ) -> RoundView:
        """Generate all variants for ``prompt``, store them, and start a round of them.

        Everything is validated and every limit checked before the engine is touched:
        PromptOutOfVocabularyError for a prompt a micro model cannot draw (not counted
        against the limit), AnswerCapError past the daily answer cap, RateLimitedError past
        the per-session limit (saying in how many seconds the next generation is allowed),
        BusyError when the queue is full.
        Only a generation that was made and stored counts against the player's limit.
        """
        check_session_id(session_id)
        check_mode(mode)
        prompt = validate_prompt(prompt)
        settings = settings.validate(self.spec)
        self.engine.check_prompt(prompt, settings)  # a micro prompt it can't draw: refused
        self.game.check_answer_cap(session_id)  # no GPU time for a round nobody may answer
        if not self._generation_limiter.take(session_id):
            wait = math.ceil(self._generation_limiter.wait_seconds(session_id))
            offer = (
                "; meanwhile, play a ready round (Play a ready round)"
                if self.game.has_ready_round(session_id, mode)
                else ""
            )
            raise RateLimitedError(
                f"at most {_count(self.settings.generations_per_minute, 'generation')} a minute "
                f"per player: your next generation is allowed in "
                f"{_count(max(wait, 1), 'second')}{offer}"
            )
        if not self._queue.acquire(blocking=False):
            self._generation_limiter.give_back(session_id)
            raise BusyError(
                f"the generator is busy ({_count(self.settings.queue_size, 'prompt')} already "
                "waiting); try again in a minute, or play a ready round"
            )
        try:
            try:
                generation = self.engine.generate(prompt, settings, progress)
            finally:
                self._queue.release()
            generation_id = self.store.save_generation(generation)
        except BaseException:
            # A failed generation gave the player nothing: it must not count.
            self._generation_limiter.give_back(session_id)
            raise
        logger.info("stored generation %d (%s)", generation_id, prompt[:60])
        return self.game.new_round(session_id, mode, generation_id)

    def check_prompt(self, prompt: object, settings: GenerationSettings) -> str:
        """Validate ``prompt`` for this model before anything runs: the text its T5 encoder
        would not read ("" when it all fits); raises PromptOutOfVocabularyError for a
        micro model's unknown words (``Engine.check_prompt``)."""
        return self.engine.check_prompt(validate_prompt(prompt), settings.validate(self.spec))

    # --- rounds and guesses ------------------------------------------------------------------

    def ready_round(self, session_id: str, mode: str) -> RoundView:
        return self.game.new_round(session_id, mode)

    def has_ready_round(self, session_id: str, mode: str) -> bool:
        return self.game.has_ready_round(session_id, mode)

    def ready_rounds(self, session_id: str, mode: str) -> ReadyRounds:
        return self.game.ready_rounds(session_id, mode)

    @property
    def on_gpu(self) -> bool:
        """Whether the engine generates on a GPU (its device label is not the CPU's)."""
        return not self.engine.device_label.startswith("cpu")

    def guess(self, session_id: str, round_id: object, answer: object) -> Reveal:
        return self.game.guess(session_id, round_id, answer)  # type: ignore[arg-type]

    def detail(
        self, image_paths: Sequence[Path], point: Sequence[object]
    ) -> tuple[Region, tuple[Path, ...]]:
        """The region at ``point`` (x, y in pixels) of every image of a round, magnified
        (core.game.detail), in the order of ``image_paths``, and served the way the round's
        images are: one length, one mtime, random names (RoundImages.serve_pngs)."""
        if self.game.round_images is None:
            raise InvalidSettingError("the detail view needs the served round images")
        region, crops = magnified_crops(image_paths, point)
        return region, self.game.round_images.serve_pngs(crops)

    # --- results -------------------------------------------------------------------------

    def results(self) -> stats.Summary:
        """The statistics summary plus this deployment's measured cost per variant, its
        withdrawn sets and a pool's own figures, with the chart drawn: shared by every
        player and at most a few seconds old (see core.game.results_cache)."""
        return self._results.get()[0]

    def _results_now(self) -> stats.Summary:
        summary = stats.summary(
            self.store,
            margin=self.settings.margin_points / 100,
            variants=self.game.variants,  # the loaded variants' rows show before any vote
        )
        summary = summary.for_deployment(
            self.store.variant_costs(self.spec.name),
            self.store.count_withdrawn(),  # reported or hidden rounds
            self.store.costs_elsewhere(),  # a pool's own figures
        )
        # Drawn once here, shared by every refresh (see presentation.detection_chart_html).
        return summary.with_chart(presentation.detection_chart_html(summary))

    def out_of_domain(self) -> tuple[int, int]:
        """(stored generations out of the model's domain, guesses on them): left out of
        the ready pool and the verdicts."""
        return self.store.out_of_domain_counts()

    def export_zip(self, directory: Path, keep_seconds: float = 3600.0) -> Path:
        """A zip of the whole export (tables + summary.json) written under ``directory``.

        Zips older than ``keep_seconds`` there are deleted first (the server has copied
        them to the browser long before), so downloads do not fill the disk.
        """
        directory.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - keep_seconds
        for old in directory.glob(f"{EXPORT_PREFIX}*.zip"):
            if old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
        name = f"{EXPORT_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.zip"
        return export_zip(self.store, directory / name)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
