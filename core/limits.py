"""What one generation request may ask for: the prompt's rules and the numeric limits.

Checked before any work, by the app, the engine's command line and the API alike; a
value out of range raises a named error from ``core.errors`` and changes nothing. This
module imports neither torch nor gradio.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace
from typing import Protocol

from core.errors import (
    EmptyPromptError,
    GuidanceOutOfRangeError,
    InvalidSettingError,
    InvalidSizeError,
    PromptBidiControlError,
    PromptControlCharacterError,
    PromptEncodingError,
    PromptInvisibleError,
    PromptTooLongError,
    SeedOutOfRangeError,
    SequenceLengthOutOfRangeError,
    StepsOutOfRangeError,
    excerpt,
)

PROMPT_MAX_CHARS = 1000
# The largest HTTP request body the app reads (bytes): its API takes a few short values,
# so this leaves room for a full prompt and its JSON many times over.
REQUEST_MAX_BYTES = 256 * 1024
SEED_MAX = 2**32 - 1
SIZE_MIN = 256
SIZE_MAX = 2048
SIZE_MULTIPLE = 16
STEPS_MIN = 1
STEPS_MAX = 100
GUIDANCE_MIN = 0.0
GUIDANCE_MAX = 20.0
SEQUENCE_LENGTH_MIN = 16


# Bidirectional embeddings, overrides and isolates (U+202A…U+202E, U+2066…U+2069): they
# reorder how the text around them is displayed, so a prompt could show another player
# something other than what it says.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Characters that draw nothing although Unicode does not class them as spaces or format
# characters: the Hangul fillers and the combining grapheme joiner.
INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u034f")


def _is_visible(ch: str) -> bool:
    """Whether ``ch`` draws something: not a space, not a control or format character
    (zero-width space and joiners, BOM, word joiner …), not a blank letter."""
    return (
        not ch.isspace()
        and unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"}
        and ch not in INVISIBLE_LETTERS
    )


def validate_prompt(prompt: object) -> str:
    """Return the prompt stripped of surrounding whitespace, or raise a named error.

    Checked before any work (nothing that fails here reaches the engine or counts against
    a player's limits): text of at most PROMPT_MAX_CHARS characters; valid Unicode (no lone
    surrogate); no control character but tabs and line breaks, wherever it is
    (``str.strip`` would silently drop some, such as U+0085); no bidirectional override or
    isolate; at least one visible character.
    """
    if not isinstance(prompt, str):
        raise EmptyPromptError("the prompt must be text")
    if len(prompt) > 4 * PROMPT_MAX_CHARS:  # don't scan megabytes of padding
        raise PromptTooLongError(
            f"the prompt has {len(prompt)} characters; the limit is {PROMPT_MAX_CHARS}"
        )
    for ch in prompt:
        category = unicodedata.category(ch)
        if category == "Cs":
            raise PromptEncodingError(
                f"the prompt is not valid text: it contains a lone surrogate U+{ord(ch):04X}"
            )
        if ch not in "\t\n\r" and category == "Cc":
            raise PromptControlCharacterError(
                f"the prompt contains the control character U+{ord(ch):04X}"
            )
        if ch in BIDI_CONTROLS:
            raise PromptBidiControlError(
                f"the prompt contains the bidirectional control U+{ord(ch):04X}, which "
                "changes how text is displayed; remove it"
            )
    stripped = prompt.strip()
    if not stripped:
        raise EmptyPromptError("the prompt is empty: type what the image should show")
    if not any(_is_visible(ch) for ch in stripped):
        raise PromptInvisibleError(
            "the prompt has no visible character (only spaces, zero-width characters or a "
            "byte-order mark): type what the image should show"
        )
    if len(stripped) > PROMPT_MAX_CHARS:
        raise PromptTooLongError(
            f"the prompt has {len(stripped)} characters; the limit is {PROMPT_MAX_CHARS}"
        )
    return stripped


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ModelLimits(Protocol):
    """What the limits read from a model (``core.config.ModelSpec`` is one): its defaults
    and its own bounds. A protocol, so that the registries import the limits and not the
    other way round."""

    name: str
    default_steps: int
    default_guidance: float
    default_size: int
    default_max_sequence_length: int
    max_sequence_length_limit: int

    @property
    def size_limits(self) -> tuple[int, int]: ...


@dataclass(frozen=True)
class GenerationSettings:
    """Everything besides the prompt that determines the images."""

    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    max_sequence_length: int

    @classmethod
    def defaults(cls, model: ModelLimits, seed: int = 0) -> GenerationSettings:
        return cls(
            seed=seed,
            steps=model.default_steps,
            guidance=model.default_guidance,
            width=model.default_size,
            height=model.default_size,
            max_sequence_length=model.default_max_sequence_length,
        )

    def with_(self, **changes: object) -> GenerationSettings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def validate(self, model: ModelLimits) -> GenerationSettings:
        """Return a copy with numbers of the right type, or raise a named error."""
        if not _is_int(self.seed) or not 0 <= self.seed <= SEED_MAX:
            raise SeedOutOfRangeError(
                f"seed must be an integer in 0…{SEED_MAX}, got {excerpt(self.seed)}"
            )
        size_min, size_max = model.size_limits
        for axis in ("width", "height"):
            value = getattr(self, axis)
            if not _is_int(value) or not size_min <= value <= size_max:
                raise InvalidSizeError(
                    f"{axis} must be an integer in {size_min}…{size_max}, got {excerpt(value)}"
                )
            if value % SIZE_MULTIPLE:
                raise InvalidSizeError(f"{axis} must be a multiple of {SIZE_MULTIPLE}, got {value}")
        if not _is_int(self.steps) or not STEPS_MIN <= self.steps <= STEPS_MAX:
            raise StepsOutOfRangeError(
                f"steps must be an integer in {STEPS_MIN}…{STEPS_MAX}, got {excerpt(self.steps)}"
            )
        if (
            isinstance(self.guidance, bool)
            or not isinstance(self.guidance, int | float)
            or not GUIDANCE_MIN <= float(self.guidance) <= GUIDANCE_MAX
        ):
            raise GuidanceOutOfRangeError(
                f"guidance must be a number in {GUIDANCE_MIN}…{GUIDANCE_MAX}, "
                f"got {excerpt(self.guidance)}"
            )
        limit = model.max_sequence_length_limit
        if (
            not _is_int(self.max_sequence_length)
            or not SEQUENCE_LENGTH_MIN <= self.max_sequence_length <= limit
        ):
            raise SequenceLengthOutOfRangeError(
                f"max_sequence_length must be an integer in {SEQUENCE_LENGTH_MIN}…{limit} "
                f"for {model.name}, got {excerpt(self.max_sequence_length)}"
            )
        return replace(self, guidance=float(self.guidance))


def coerce_number(value: object, kind: type[int] | type[float], name: str) -> int | float:
    """Turn a number from a UI or an API call (possibly a whole float) into ``kind``.

    Raises InvalidSettingError for non-numbers and for fractional values where an
    integer is expected, so ``7.5`` steps is an error rather than silently 7.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSettingError(f"{name} must be a number, got {excerpt(value)}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise InvalidSettingError(f"{name} must be a whole number, got {excerpt(value)}")
        return int(value)
    return float(value)
