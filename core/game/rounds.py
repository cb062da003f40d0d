"""Round logic: pick a generation, shuffle it into slots, judge one guess per round.

Pure logic over a Store: no gradio, no torch. Randomness comes from an injected
``random.Random`` and time from an injected clock, so tests are deterministic. The
answer key (slot -> variant) is written to the database and never put in a RoundView.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import (
    MAX_QUANTIZED,
    MODE_SPECS,
    SLOT_LETTERS,
    VARIANT_NAMES,
    ModeSpec,
    check_variants,
)
from core.errors import (
    AnswerCapError,
    ForeignRoundError,
    GenerationNotFoundError,
    IncompleteGenerationError,
    InvalidAnswerError,
    InvalidModeError,
    InvalidSessionError,
    NoReadyRoundError,
    RateLimitedError,
    RoundAlreadyGuessedError,
    RoundExpiredError,
    RoundNotFoundError,
    excerpt,
)
from core.limits import GenerationSettings
from core.store.round_images import RoundImages
from core.store.storage import NewGuess, Store, StoredGeneration

CANT_TELL = "cant_tell"
# Every slot letter a round can use, in order (a trio of BF16 and MAX_QUANTIZED others):
# the UI builds this many and hides those a round does not show.
SLOT_LABELS: tuple[str, ...] = tuple(SLOT_LETTERS[: 1 + MAX_QUANTIZED])
SESSION_ID_MAX_CHARS = 128
ROUND_ID_MAX_CHARS = 64
DAY_SECONDS = 86_400  # the daily answer cap counts from 00:00 UTC


@dataclass(frozen=True)
class RoundView:
    """What the player may see before guessing: nothing tells which slot is which."""

    round_id: str
    mode: str
    question: str
    slots: tuple[str, ...]
    image_paths: tuple[Path, ...]
    prompt: str
    settings: GenerationSettings


@dataclass(frozen=True)
class Score:
    """A session's record: answered includes can't-tell; a streak is consecutive correct."""

    answered: int
    correct: int
    cant_tell: int
    streak: int
    best_streak: int


@dataclass(frozen=True)
class ReadyRounds:
    """A mode's pool as one session sees it: ``playable`` stored generations can make a
    round of this mode, ``unseen`` of them this session has no round of yet."""

    playable: int
    unseen: int


@dataclass(frozen=True)
class Reveal:
    """The answer after a guess: which slot was which, and what each variant cost."""

    round_id: str
    mode: str
    answer: str
    slot_variants: dict[str, str]
    designated_variant: str | None  # the variant of the chosen slot; None for can't tell
    correct_slot: str
    correct: bool | None  # None for can't tell
    variant_stats: dict[str, dict[str, Any]]
    score: Score


def check_session_id(session_id: object) -> str:
    """Return the session id, or raise InvalidSessionError (non-empty, short, printable)."""
    if (
        not isinstance(session_id, str)
        or not session_id
        or len(session_id) > SESSION_ID_MAX_CHARS
        or not session_id.isprintable()
        or session_id != session_id.strip()
    ):
        raise InvalidSessionError(
            f"a session id must be 1…{SESSION_ID_MAX_CHARS} printable characters"
        )
    return session_id


def check_mode(mode: object) -> ModeSpec:
    if not isinstance(mode, str) or mode not in MODE_SPECS:
        raise InvalidModeError(f"mode must be one of {', '.join(MODE_SPECS)}, got {excerpt(mode)}")
    return MODE_SPECS[mode]


class Game:
    """Rounds and guesses over a Store. Thread-safe if ``rng`` is used by one thread or
    the caller accepts interleaved draws (random.Random itself is thread-safe)."""

    def __init__(
        self,
        store: Store,
        rng: random.Random,
        clock: Callable[[], float] = time.time,
        rounds_per_minute: int = 30,
        round_ttl_seconds: float = 3600,
        round_images: RoundImages | None = None,
        answers_per_day: int = 0,
        variants: Sequence[str] = VARIANT_NAMES,
    ) -> None:
        """``round_images``: where a served app gets each round's own image files (see
        core.store.round_images); without it a round shows the stored files (tests and
        simulations that serve nothing). ``answers_per_day``: the most answers one
        session (a person) may give per UTC day; 0: no cap. ``variants``: the variants
        the engine generates (each mode draws its round's from them; see
        config.ModeSpec); raises UnknownVariantError for an unregistered one."""
        if rounds_per_minute < 0:
            raise ValueError("rounds_per_minute must be >= 0 (0 means unlimited)")
        if answers_per_day < 0:
            raise ValueError("answers_per_day must be >= 0 (0 means no cap)")
        if round_ttl_seconds <= 0:
            raise ValueError("round_ttl_seconds must be positive")
        self.store = store
        self.rng = rng
        self.clock = clock
        self.rounds_per_minute = rounds_per_minute
        self.round_ttl_seconds = round_ttl_seconds
        self.round_images = round_images
        self.answers_per_day = answers_per_day
        self.variants = check_variants(list(variants))

    # --- the daily cap -----------------------------------------------------------------

    def _day_start(self) -> float:
        """This UTC day's first second (epoch seconds), by the game's clock."""
        now = self.clock()
        return now - now % DAY_SECONDS

    def check_answer_cap(self, session_id: str) -> None:
        """Raise AnswerCapError when the session has given today's last answer (no cap:
        never). Called before a round starts, so no one plays a round they cannot
        answer; the guess itself is checked again, in the transaction that writes it."""
        check_session_id(session_id)
        if self.answers_per_day <= 0:
            return
        if self.store.answers_since(session_id, self._day_start()) >= self.answers_per_day:
            raise AnswerCapError(self._cap_message())

    def _cap_message(self) -> str:
        n = self.answers_per_day
        return (
            f"you have given today's {n} answer{'s' if n != 1 else ''}, the most this server "
            "takes from one person a day; thank you! More from 00:00 UTC"
        )

    # --- rounds ------------------------------------------------------------------------

    def has_ready_round(self, session_id: str, mode: str) -> bool:
        """Whether the pool holds a generation this session has not seen, for ``mode``."""
        check_session_id(session_id)
        required, any_of = check_mode(mode).needs(self.variants)
        return (
            self.store.count_unseen_generations(session_id, required, any_of, now=self.clock()) > 0
        )

    def ready_rounds(self, session_id: str, mode: str) -> ReadyRounds:
        """How many ready rounds of ``mode`` the pool holds, in all and unseen by this
        session (tells a fresh pool from one the player has played through)."""
        check_session_id(session_id)
        required, any_of = check_mode(mode).needs(self.variants)
        playable, unseen = self.store.count_playable_generations(
            session_id, required, any_of, now=self.clock()
        )
        return ReadyRounds(playable=playable, unseen=unseen)

    def new_round(self, session_id: str, mode: str, generation_id: int | None = None) -> RoundView:
        """Start a round of ``generation_id`` or, when None, of an unseen pooled generation.

        Raises InvalidSessionError, InvalidModeError, AnswerCapError, NoReadyRoundError,
        GenerationNotFoundError, IncompleteGenerationError or RateLimitedError.
        """
        check_session_id(session_id)
        spec = check_mode(mode)
        self.check_answer_cap(session_id)
        required, any_of = spec.needs(self.variants)
        if generation_id is None:
            generation_id = self.store.pick_unseen_generation(
                session_id, required, any_of, self.rng.randrange, now=self.clock()
            )
            if generation_id is None:
                raise NoReadyRoundError(
                    f"no new {mode} round is ready: you have played every stored image set"
                )
        elif isinstance(generation_id, bool) or not isinstance(generation_id, int):
            raise GenerationNotFoundError(f"no generation {excerpt(generation_id)}")
        generation = self.store.generation(generation_id)
        if generation is None:
            raise GenerationNotFoundError(f"no generation {generation_id}")
        slot_variants = self._draw(spec, generation)
        now = self.clock()
        round_id = self.store.insert_round(
            generation_id=generation.id,
            mode=spec.name,
            session_id=session_id,
            compared_variant=spec.compared_variant(slot_variants),
            answer_key=slot_variants,
            created_at=now,
            expires_at=now + self.round_ttl_seconds,
            max_recent=self.rounds_per_minute,
            recent_since=now - 60.0,
        )
        if round_id is None:
            raise RateLimitedError(
                f"at most {self.rounds_per_minute} rounds a minute; wait a moment"
            )
        return self._view(round_id, spec, generation, slot_variants)

    def open_round(self, session_id: str) -> RoundView | None:
        """The session's latest round that is unanswered and still open, served again
        (the same shuffle, fresh image files): a page reload restores it rather than lose
        it. None when there is none."""
        check_session_id(session_id)
        stored = self.store.latest_open_round(session_id, self.clock())
        if stored is None:
            return None
        generation = self.store.generation(stored.generation_id)
        if generation is None:
            return None
        return self._view(stored.id, MODE_SPECS[stored.mode], generation, stored.answer_key)

    def _view(
        self,
        round_id: str,
        spec: ModeSpec,
        generation: StoredGeneration,
        slot_variants: dict[str, str],
    ) -> RoundView:
        """What the player sees of a round: its images served in slot order, no key."""
        paths = self.store.image_paths(generation.id)
        shown = tuple(slot_variants.values())
        if self.round_images is None:
            image_paths = tuple(paths[v] for v in shown)
        else:
            image_paths = self.round_images.serve(paths, shown)
        return RoundView(
            round_id=round_id,
            mode=spec.name,
            question=spec.question,
            slots=tuple(slot_variants),
            image_paths=image_paths,
            prompt=generation.prompt,
            settings=generation.settings,
        )

    def _draw(self, spec: ModeSpec, generation: StoredGeneration) -> dict[str, str]:
        """Slot label -> variant, freshly drawn and shuffled by the mode with the injected
        RNG, from the loaded variants; raises IncompleteGenerationError when the
        generation lacks what the mode needs (see ModeSpec.needs)."""
        have = set(generation.variants)
        required, any_of = spec.needs(self.variants)
        missing = [v for v in required if v not in have]
        if any_of and not have.intersection(any_of):
            missing.append(" or ".join(any_of))
        if missing:
            raise IncompleteGenerationError(
                f"generation {generation.id} lacks {', '.join(missing)} for a {spec.name} round"
            )
        return spec.draw([v for v in self.variants if v in have], self.rng)

    # --- guesses -----------------------------------------------------------------------

    def guess(self, session_id: str, round_id: str, answer: str) -> Reveal:
        """Judge and record the session's one guess on ``round_id``; nothing is written
        when it is rejected.

        Raises InvalidSessionError, InvalidAnswerError, RoundNotFoundError,
        ForeignRoundError (a subclass of RoundNotFoundError, same message),
        RoundAlreadyGuessedError, RoundExpiredError or AnswerCapError.
        """
        check_session_id(session_id)
        if not isinstance(answer, str):
            raise InvalidAnswerError(f"an answer must be a slot letter or {CANT_TELL!r}")
        if not isinstance(round_id, str) or not 0 < len(round_id) <= ROUND_ID_MAX_CHARS:
            raise RoundNotFoundError("no such round")
        stored = self.store.fetch_round(round_id)
        if stored is None:
            raise RoundNotFoundError("no such round")
        if stored.session_id != session_id:
            # Same message as an unknown id: a guesser learns nothing about other rounds.
            raise ForeignRoundError("no such round")
        if stored.guessed:
            raise RoundAlreadyGuessedError("this round was already answered")
        now = self.clock()
        if now > stored.expires_at:
            raise RoundExpiredError("this round has expired; start a new one")
        slots = stored.answer_key
        if answer != CANT_TELL and answer not in slots:
            raise InvalidAnswerError(
                f"answer must be one of {', '.join(slots)} or {CANT_TELL!r}, got {excerpt(answer)}"
            )
        spec = MODE_SPECS[stored.mode]
        correct_slot = spec.correct_slot(slots)
        designated = None if answer == CANT_TELL else slots[answer]
        correct = None if answer == CANT_TELL else answer == correct_slot
        try:
            self.store.insert_guess(
                NewGuess(
                    round=stored, answer=answer, variant=designated, correct=correct, created_at=now
                ),
                max_answers=self.answers_per_day,
                answers_since=now - now % DAY_SECONDS,
            )
        except AnswerCapError:
            raise AnswerCapError(self._cap_message()) from None
        return Reveal(
            round_id=stored.id,
            mode=stored.mode,
            answer=answer,
            slot_variants=dict(slots),
            designated_variant=designated,
            correct_slot=correct_slot,
            correct=correct,
            variant_stats=self.store.image_stats(stored.generation_id),
            score=self.session_score(session_id),
        )

    def session_score(self, session_id: str) -> Score:
        check_session_id(session_id)
        tally, streak, best = self.store.session_tally(session_id)
        return Score(tally.answered, tally.correct, tally.cant_tell, streak, best)
