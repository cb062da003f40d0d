"""Declarative configuration: models, variants, generation limits and app settings.

Everything the UI, the command lines and the README tables offer is derived from the
registries here, so a variant or a limit is defined exactly once. This module imports
neither torch nor gradio.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from core.errors import (
    DuplicateVariantError,
    EmptyPromptError,
    GuidanceOutOfRangeError,
    IncompleteGenerationError,
    InvalidInputError,
    InvalidSettingError,
    InvalidSizeError,
    PromptBidiControlError,
    PromptControlCharacterError,
    PromptEncodingError,
    PromptInvisibleError,
    PromptTooLongError,
    ReferenceVariantMissingError,
    SeedOutOfRangeError,
    SequenceLengthOutOfRangeError,
    StepsOutOfRangeError,
    TooManyVariantsError,
    UnknownVariantError,
    excerpt,
)

# --- Where built checkpoints are written --------------------------------------------

PROJECT_DIR = Path(__file__).resolve().parent.parent
MODELS_DIR = PROJECT_DIR / "data" / "models"
"""The tiny and synthetic checkpoints are built into this folder (git-ignored)."""
MICRO_DIR = PROJECT_DIR / "assets" / "micro-flux"
"""The micro model trained by the project (``python -m core.checkpoints.micro.train``)."""

# --- Units -------------------------------------------------------------------------

MIB = 1024**2
GIB = 1024**3


def byte_unit(sizes: Iterable[int]) -> tuple[str, int]:
    """("GiB", 2**30) when any of ``sizes`` (bytes) reaches 1 GiB, else ("MiB", 2**20):
    full-scale figures read in GiB, the tiny model's (under 1 MiB) would read 0.00 GiB."""
    return ("GiB", GIB) if any(size >= GIB for size in sizes) else ("MiB", MIB)


# --- Variants ----------------------------------------------------------------------

Quantization = Literal[
    "none",
    "int8",
    "nf4",
    "fp8-layerwise",
    "gguf-q8_0",
    "gguf-q4_1",
    "torchao-int8",
    "torchao-fp8",
]


@dataclass(frozen=True)
class VariantSpec:
    """One variant of the pipeline: how its transformer and T5 encoder are stored."""

    name: str
    label: str
    quantization: Quantization
    description: str
    # In the default set (the game's trio); the others are loaded only when named.
    default: bool = True


VARIANTS: dict[str, VariantSpec] = {
    v.name: v
    for v in (
        VariantSpec("bf16", "BF16 (original)", "none", "original weights in bfloat16"),
        VariantSpec(
            "int8",
            "LLM.int8",
            "int8",
            "bitsandbytes LLM.int8 (load_in_8bit=True, outlier threshold 6.0)",
        ),
        VariantSpec(
            "nf4",
            "NF4",
            "nf4",
            "bitsandbytes 4-bit NF4 (load_in_4bit=True, bnb_4bit_compute_dtype=bfloat16)",
        ),
        VariantSpec(
            "fp8-layerwise",
            "FP8 layerwise",
            "fp8-layerwise",
            "diffusers layerwise casting (storage float8_e4m3fn, compute bfloat16), transformer",
            default=False,
        ),
        VariantSpec(
            "gguf-q8",
            "GGUF Q8_0",
            "gguf-q8_0",
            "GGUF Q8_0 transformer (from_single_file + GGUFQuantizationConfig)",
            default=False,
        ),
        VariantSpec(
            "gguf-q4",
            "GGUF Q4_1",
            "gguf-q4_1",
            "GGUF Q4_1 transformer (from_single_file + GGUFQuantizationConfig)",
            default=False,
        ),
        VariantSpec(
            "torchao-int8",
            "torchao int8",
            "torchao-int8",
            "torchao int8 weight-only (TorchAoConfig(Int8WeightOnlyConfig()))",
            default=False,
        ),
        VariantSpec(
            "torchao-fp8",
            "torchao float8",
            "torchao-fp8",
            "torchao float8 weight-only (TorchAoConfig(Float8WeightOnlyConfig())), GPU only",
            default=False,
        ),
    )
}
# Every variant that can be named, in registry order.
ALL_VARIANT_NAMES: tuple[str, ...] = tuple(VARIANTS)
# The default set: the game's trio (BF16 + LLM.int8 + NF4); the others load when named.
VARIANT_NAMES: tuple[str, ...] = tuple(n for n, v in VARIANTS.items() if v.default)
REFERENCE_VARIANT = "bf16"
QUANTIZED_VARIANTS: tuple[str, ...] = tuple(n for n in VARIANT_NAMES if n != REFERENCE_VARIANT)

# Components quantized per variant, and those loaded once and shared by all variants.
PER_VARIANT_COMPONENTS: tuple[str, ...] = ("transformer", "text_encoder_2")
SHARED_COMPONENTS: tuple[str, ...] = ("text_encoder", "tokenizer", "tokenizer_2", "vae")


def check_variants(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return ``names`` as a tuple in registry order, or raise UnknownVariantError (a name
    not in the registry, or none) or DuplicateVariantError (a name given twice)."""
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise UnknownVariantError(
            f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(ALL_VARIANT_NAMES)}"
        )
    if not names:
        raise UnknownVariantError("at least one variant is needed")
    twice = sorted({n for n in names if list(names).count(n) > 1}, key=ALL_VARIANT_NAMES.index)
    if twice:
        raise DuplicateVariantError(f"variant(s) named twice: {', '.join(twice)}")
    return tuple(n for n in ALL_VARIANT_NAMES if n in names)


# The most quantized variants one game loads: a trio round shows BF16 and every one of them,
# so its images are at most 1 + MAX_QUANTIZED (A…E).
MAX_QUANTIZED = 4


def check_game_variants(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The variants a game plays (``--variants``, SPOT_VARIANTS), in registry order: BF16
    and one to MAX_QUANTIZED quantized variants, each named once. Raises
    UnknownVariantError, DuplicateVariantError (see check_variants),
    ReferenceVariantMissingError (no BF16, or nothing to compare it with) or
    TooManyVariantsError."""
    variants = check_variants(names)
    quantized = [n for n in variants if n != REFERENCE_VARIANT]
    if REFERENCE_VARIANT not in variants:
        raise ReferenceVariantMissingError(
            f"the variants must include {REFERENCE_VARIANT}, the original every round shows; "
            f"got {', '.join(names)}"
        )
    if not quantized:
        raise ReferenceVariantMissingError(
            f"the variants need at least one quantized variant besides {REFERENCE_VARIANT}"
        )
    if len(quantized) > MAX_QUANTIZED:
        raise TooManyVariantsError(
            f"at most {MAX_QUANTIZED} quantized variants besides {REFERENCE_VARIANT}, got "
            f"{len(quantized)}: {', '.join(quantized)}"
        )
    return variants


def parse_variants(text: str) -> tuple[str, ...]:
    """A comma-separated list of variant names (``bf16,int8,nf4``) checked for the game
    (check_game_variants); blanks around names are ignored."""
    return check_game_variants([n.strip() for n in text.split(",") if n.strip()])


# A row of results over every compared variant: the duel over all its variants, or the
# mission's trio (BF16, LLM.int8, NF4), whose rounds are stored with no compared variant.
ALL_VARIANTS = "all"
# Joins the quantized variants a trio round shows into its stored compared variant.
VARIANT_SET_SEPARATOR = "+"


def variant_set_key(quantized: Iterable[str]) -> str | None:
    """How a trio round's shown quantized variants are stored (rounds.compared_variant):
    None for the mission's trio (QUANTIZED_VARIANTS), as every trio was stored before the
    game could load others; else their names in registry order joined by "+"."""
    shown = tuple(n for n in ALL_VARIANT_NAMES if n in set(quantized))
    return None if shown == QUANTIZED_VARIANTS else VARIANT_SET_SEPARATOR.join(shown)


def variant_set(key: str | None) -> tuple[str, ...]:
    """The quantized variants of a trio row or round stored as ``key`` (variant_set_key;
    None or ALL_VARIANTS: the mission's trio)."""
    if key is None or key == ALL_VARIANTS:
        return QUANTIZED_VARIANTS
    return tuple(key.split(VARIANT_SET_SEPARATOR))


# --- The seed's reference figures (diffusers blog, 1x H100 80GB, FLUX.1-dev) -----------


@dataclass(frozen=True)
class ReferenceFigure:
    """A published measurement: GB after loading, GB peak, seconds per image."""

    variant: str
    placement: str
    loaded_gb: float
    peak_gb: float
    seconds: float


SEED_REFERENCE_SOURCE = (
    "diffusers blog, 1x H100 80GB, FLUX.1-dev 1024x1024, 50 steps, max_memory_reserved()"
)
SEED_REFERENCE: tuple[ReferenceFigure, ...] = (
    ReferenceFigure("bf16", "resident", 31.4, 36.2, 12.0),
    ReferenceFigure("nf4", "resident", 12.6, 17.3, 12.0),
    ReferenceFigure("int8", "resident", 19.3, 24.4, 27.0),
    ReferenceFigure("nf4", "model offload", 12.4, 12.4, 17.0),
    ReferenceFigure("int8", "model offload", 19.2, 23.4, 27.0),
)

# --- Models ----------------------------------------------------------------------------

TINY_MODEL = "tiny"
MICRO_MODEL = "micro"
AUTO_MODEL = "auto"
FLUX_DEV = "black-forest-labs/FLUX.1-dev"
FLUX_SCHNELL = "black-forest-labs/FLUX.1-schnell"
SYNTHETIC_DEV = "synthetic-flux-dev"
SYNTHETIC_SCHNELL = "synthetic-flux-schnell"
# FLUX.1-dev's depth and layer kinds at a quarter of its widths (~1/16 of its weights): every
# code path of the full model, at a size that builds and loads in seconds on a GPU.
SYNTHETIC_DEV_QUARTER = "synthetic-flux-dev-quarter"


@dataclass(frozen=True)
class ModelSpec:
    """Where a FLUX pipeline comes from and the settings it is meant to run with."""

    name: str
    source: str
    kind: Literal["hub", "local", "tiny", "synthetic", "micro"]
    default_steps: int
    default_guidance: float
    default_max_sequence_length: int
    max_sequence_length_limit: int
    default_size: int
    gated: bool = False
    guidance_embeds: bool = True
    # "embedded": guidance is the transformer's guidance embedding (FLUX.1-dev);
    # "true_cfg": guidance is FluxPipeline's true_cfg_scale against an empty negative prompt
    # (two transformer passes per step), for models trained with prompt dropout.
    guidance_kind: Literal["embedded", "true_cfg"] = "embedded"
    size_min: int | None = None  # pixels; None: SIZE_MIN
    size_max: int | None = None  # pixels; None: SIZE_MAX

    @property
    def is_tiny(self) -> bool:
        return self.kind == "tiny"

    @property
    def size_limits(self) -> tuple[int, int]:
        """The smallest and largest width or height (pixels) this model accepts."""
        return (self.size_min or SIZE_MIN, self.size_max or SIZE_MAX)


_DEV_DEFAULTS = dict(
    default_steps=50,
    default_guidance=3.5,
    default_max_sequence_length=512,
    max_sequence_length_limit=512,
    default_size=1024,
)
_SCHNELL_DEFAULTS = dict(
    default_steps=4,
    default_guidance=0.0,
    default_max_sequence_length=256,
    max_sequence_length_limit=256,
    default_size=1024,
    guidance_embeds=False,
)

MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(FLUX_DEV, FLUX_DEV, "hub", gated=True, **_DEV_DEFAULTS),
        ModelSpec(FLUX_SCHNELL, FLUX_SCHNELL, "hub", **_SCHNELL_DEFAULTS),
        ModelSpec(SYNTHETIC_DEV, SYNTHETIC_DEV, "synthetic", **_DEV_DEFAULTS),
        ModelSpec(SYNTHETIC_SCHNELL, SYNTHETIC_SCHNELL, "synthetic", **_SCHNELL_DEFAULTS),
        ModelSpec(SYNTHETIC_DEV_QUARTER, SYNTHETIC_DEV_QUARTER, "synthetic", **_DEV_DEFAULTS),
        ModelSpec(
            TINY_MODEL,
            TINY_MODEL,
            "tiny",
            default_steps=4,
            default_guidance=3.5,
            default_max_sequence_length=64,
            max_sequence_length_limit=128,
            default_size=256,
        ),
        ModelSpec(
            MICRO_MODEL,
            str(MICRO_DIR),
            "micro",
            default_steps=12,
            default_guidance=4.0,
            default_max_sequence_length=32,
            max_sequence_length_limit=64,
            default_size=128,
            guidance_embeds=False,
            guidance_kind="true_cfg",
            size_min=128,
            size_max=256,
        ),
    )
}


def resolve_model(name: str, *, cuda_available: bool) -> ModelSpec:
    """Turn a ``--model`` value into a ModelSpec.

    ``auto`` is FLUX.1-dev where CUDA is available and the project's micro model (trained
    on drawn shapes, shipped in assets/) otherwise;
    a known name comes from the registry; an existing folder is a local diffusers
    pipeline (schnell-like defaults when its transformer has no guidance embedding);
    anything else is taken as a hub id with FLUX.1-dev's defaults.
    """
    name = name.strip()
    if not name:
        raise InvalidSettingError("--model must not be empty")
    if name == AUTO_MODEL:
        return MODELS[FLUX_DEV if cuda_available else MICRO_MODEL]
    if name in MODELS:
        return MODELS[name]
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise InvalidSettingError(
                f"{path} is not a diffusers pipeline folder (no model_index.json)"
            )
        defaults = _DEV_DEFAULTS
        transformer_config = path / "transformer" / "config.json"
        if transformer_config.is_file() and not json.loads(transformer_config.read_text()).get(
            "guidance_embeds", True
        ):
            defaults = _SCHNELL_DEFAULTS
        return ModelSpec(str(path.resolve()), str(path.resolve()), "local", **defaults)
    if name.count("/") != 1 or name.startswith("/") or name.startswith("."):
        raise InvalidSettingError(
            f"--model {name!r} is neither 'auto', 'tiny', a hub id (org/name) "
            "nor an existing local folder"
        )
    return ModelSpec(name, name, "hub", **_DEV_DEFAULTS)


# --- Generation settings and their limits -----------------------------------------------

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
    def defaults(cls, model: ModelSpec, seed: int = 0) -> GenerationSettings:
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

    def validate(self, model: ModelSpec) -> GenerationSettings:
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


# --- Application settings (flags and environment) ---------------------------------------

OFFLOAD_CHOICES: tuple[str, ...] = ("auto", "none", "model", "group")


SLOT_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""A round's slots are named by these letters, in order: a mode of n slots uses the first n."""


@dataclass(frozen=True)
class ModeSpec:
    """What a mode shows, what it asks and which variant a correct answer designates.

    A round shows BF16 and ``others`` other variants drawn from the loaded ones (None:
    every loaded one, "find the original among k"), shuffled onto the slots A, B, …
    The mode draws which variants those are (``draw``), says which slot a correct
    answer names (``correct_slot``), what a generation must hold to make its round
    (``needs``), what a round's results are kept under (``compared_variant``) and the
    chance of a row of them (``chance_of``); rounds, statistics and the simulator ask it
    instead of naming modes. ``slots`` and ``chance`` are those of a round with the
    default variants (VARIANT_NAMES).
    """

    name: str
    question: str
    others: int | None  # variants shown besides BF16; None: every loaded one
    target: Literal["reference", "quantized"]  # the correct slot holds BF16 / the other

    def __post_init__(self) -> None:
        if self.others is not None and not 1 <= self.others < len(SLOT_LETTERS):
            raise ValueError(f"a mode has 2…{len(SLOT_LETTERS)} slots, got {self.others + 1}")
        if self.target == "quantized" and self.others != 1:
            raise ValueError("a mode asking for the quantized image shows exactly one")

    def slots_for(self, variants: Sequence[str]) -> int:
        """How many images a round of this mode shows when ``variants`` are loaded."""
        if self.others is not None:
            return 1 + self.others
        return 1 + sum(1 for v in variants if v != REFERENCE_VARIANT)

    @property
    def slots(self) -> int:
        """Images in a round with the default variants: 3 for the trio, 2 for the duel."""
        return self.slots_for(VARIANT_NAMES)

    @property
    def chance(self) -> float:
        """The chance of a right answer in a round with the default variants: 1 / slots."""
        return 1.0 / self.slots

    def chance_of(self, compared: str | None) -> float:
        """The chance of a right answer in this mode's rounds kept under ``compared`` (a
        results row's variant, ALL_VARIANTS or a stored compared variant): 1 / the images
        such a round shows, the trio's read from its set (variant_set)."""
        if self.others is not None:
            return 1.0 / (1 + self.others)
        return 1.0 / (1 + len(variant_set(compared)))

    @property
    def slot_labels(self) -> tuple[str, ...]:
        """The slot letters of a round with the default variants: ("A", "B", "C")."""
        return tuple(SLOT_LETTERS[: self.slots])

    def needs(self, variants: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(variants a stored generation must all have, variants it needs one of) to make a
        round of this mode when ``variants`` are loaded. One other variant: BF16 and any
        one of the others; more: BF16 and every loaded other (the pool's query can ask
        for "all of" and "one of", not "two of")."""
        others = tuple(v for v in variants if v != REFERENCE_VARIANT)
        if self.others == 1:
            return (REFERENCE_VARIANT,), others
        return (REFERENCE_VARIANT, *others), ()

    def draw(self, available: Sequence[str], rng: random.Random) -> dict[str, str]:
        """Slot letter -> variant for a new round: BF16 and ``others`` of the other
        ``available`` variants (all of them when ``others`` is None or there are just
        enough; else a draw), shuffled with ``rng``. BF16 is always shown. Raises
        IncompleteGenerationError when ``available`` lacks BF16 or has too few others."""
        others = [v for v in available if v != REFERENCE_VARIANT]
        wanted = len(others) if self.others is None else self.others
        if REFERENCE_VARIANT not in available or not others or len(others) < wanted:
            raise IncompleteGenerationError(
                f"a {self.name} round needs {REFERENCE_VARIANT} and "
                f"{'at least one' if self.others is None else self.others} other "
                f"variant(s), got {', '.join(available) or 'none'}"
            )
        if len(others) > wanted:
            # One of several: rng.choice (rng.sample of one draws the same, kept for clarity).
            others = [rng.choice(others)] if wanted == 1 else rng.sample(others, wanted)
        shown = [REFERENCE_VARIANT, *others]
        rng.shuffle(shown)
        return dict(zip(SLOT_LETTERS, shown, strict=False))

    def correct_slot(self, key: Mapping[str, str]) -> str:
        """The slot a correct answer names in a round whose slot -> variant key is ``key``:
        BF16's when the mode asks for the original, else the one quantized variant's.
        Raises IncompleteGenerationError when the key has no such slot."""
        for slot, variant in key.items():
            if (variant == REFERENCE_VARIANT) == self.asks_for_original:
                return slot
        raise IncompleteGenerationError("the round's answer key has no correct slot")

    def target_variant(self, key: Mapping[str, str]) -> str:
        """The variant a correct answer designates in a round keyed ``key``."""
        return key[self.correct_slot(key)]

    def compared_variant(self, key: Mapping[str, str]) -> str | None:
        """What a round keyed ``key`` is kept under in the results: the one variant set
        against BF16 when the mode shows exactly one (a duel's); else the set of quantized
        variants shown (variant_set_key: None for the mission's trio)."""
        others = [v for v in key.values() if v != REFERENCE_VARIANT]
        if self.others == 1:
            return others[0]
        return variant_set_key(others)

    @property
    def label(self) -> str:
        """The mode's name in numbers and tables when it is not kept per variant: "Trio"."""
        return self.name.title()

    @property
    def asks_for_original(self) -> bool:
        """Whether a correct answer names BF16 (the original) rather than a quantized image."""
        return self.target == "reference"

    @property
    def per_variant(self) -> bool:
        """Whether this mode's results are kept per compared variant (see compared_variant)."""
        return self.others == 1


MODE_SPECS: dict[str, ModeSpec] = {
    # Find the original among k: BF16 and every loaded quantized variant (chance 1/k).
    "trio": ModeSpec("trio", "Which one is the original (BF16)?", None, "reference"),
    # BF16 and one quantized variant drawn among the loaded ones (chance 1/2).
    "duel": ModeSpec("duel", "Which one is quantized?", 1, "quantized"),
}
MODES: tuple[str, ...] = tuple(MODE_SPECS)
# How core.bench.runner measures a variant: alone (the seed notebook's recipe) or in the engine.
BENCHMARK_MODES: tuple[str, ...] = ("standalone", "engine")


SPACE_HOST_VARIABLE = "GRADIO_SERVER_NAME"
"""Set by Hugging Face Spaces to the address the app must serve on; used for the host when
neither ``--host`` nor SPOT_HOST is given."""


@dataclass(frozen=True)
class AppSettings:
    """Settings of a running app; every field has a flag and an environment variable
    (APP_SETTINGS), read by ``AppSettings.from_argv``."""

    model: str = AUTO_MODEL
    # The variants loaded and played: BF16 and up to MAX_QUANTIZED quantized ones.
    variants: tuple[str, ...] = VARIANT_NAMES
    db: Path = Path("data/arena.db")
    images_dir: Path = Path("data/images")
    host: str = "127.0.0.1"
    port: int = 7860
    offload: str = "auto"
    share: bool = False
    max_gpu_memory_gb: float | None = None
    queue_size: int = 4
    generations_per_minute: int = 3
    rounds_per_minute: int = 30
    round_ttl_seconds: int = 3600
    # Equivalence margin of the verdicts, in points of chance: "indistinguishable within ±m".
    margin_points: float = 5.0
    # At most this many answers per person per UTC day (0: no cap).
    answers_per_day: int = 0
    # Where acknowledged events are pushed (core.game.sync): hf://datasets/OWNER/NAME or a
    # folder; None: nowhere. Minutes between pushes; "private" or "public" target.
    sync_to: str | None = None
    sync_every_minutes: float = 5.0
    sync_visibility: str = "private"
    # Ready rounds made elsewhere (core.game.pool), imported at start and every sync_every.
    pool: str | None = None

    @classmethod
    def from_argv(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> AppSettings:
        """The settings given by command-line flags and environment variables.

        Each setting comes from its flag, else its environment variable (an empty one
        counts as unset), else the default. The host falls back on GRADIO_SERVER_NAME
        before its default, and without ``--images-dir`` or SPOT_IMAGES_DIR a given
        database keeps its images in ``images/`` beside it. ``argv`` defaults to
        ``sys.argv[1:]`` and ``environ`` to ``os.environ``: read here, nowhere deeper.

        Raises InvalidSettingError, naming the flag or the variable and the value, for a
        variable that is not of its flag's type and for any value out of its range.
        argparse's own errors (unknown flag, a flag's value that is not a number or not
        one of its choices) print the usage and raise SystemExit(2); ``--help`` prints
        the help and raises SystemExit(0).
        """
        environ = os.environ if environ is None else environ
        given = vars(build_app_parser().parse_args(argv))
        values: dict[str, object] = {}
        for spec in APP_SETTINGS:
            if spec.name in given:
                value, source = given[spec.name], spec.flag
            elif environ.get(spec.variable, "") != "":
                value, source = spec.from_text(environ[spec.variable]), spec.variable
            else:
                continue
            values[spec.name] = spec.check(value, source)
        if "host" not in values and environ.get(SPACE_HOST_VARIABLE, "") != "":
            values["host"] = HOST.check(environ[SPACE_HOST_VARIABLE], SPACE_HOST_VARIABLE)
        if "images_dir" not in values and "db" in values:
            values["images_dir"] = Path(values["db"]).parent / "images"  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_KIND_WORDS: dict[type, str] = {int: "an integer", float: "a number"}


@dataclass(frozen=True)
class SettingSpec:
    """One AppSettings field as an operator sets it: its flag, its environment variable,
    how the variable's text becomes a value, and which values are accepted."""

    name: str  # the AppSettings field
    flag: str
    variable: str
    help: str
    kind: type = str  # str, int, float, Path or bool (a --flag / --no-flag pair)
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    accepts: Callable[[Any], bool] | None = None
    rule: str = ""  # what ``accepts`` demands, after the name: "must be 0 or more"
    shown_default: str | None = None  # the default as --help shows it, when not str(default)
    # Turns the accepted text into the setting's value, raising a named InvalidInputError.
    convert: Callable[[Any], Any] | None = None

    def from_text(self, text: str) -> object:
        """The environment variable's text as a value of this setting's kind."""
        if self.kind is bool:
            if text.strip().lower() in TRUE_WORDS | FALSE_WORDS:
                return text.strip().lower() in TRUE_WORDS
            expected = "1, true, yes or on to enable; 0, false, no or off to disable"
        elif self.kind in _KIND_WORDS:
            try:
                return self.kind(text)
            except ValueError:
                expected = _KIND_WORDS[self.kind]
        else:
            return self.kind(text)
        raise InvalidSettingError(
            f"{self.variable}={excerpt(text)} is not a valid {self.flag} value: expected {expected}"
        )

    def check(self, value: Any, source: str) -> Any:
        """Return ``value`` if this setting accepts it, else raise InvalidSettingError
        naming ``source`` (the flag or the variable it came from)."""
        if self.choices is not None and value not in self.choices:
            raise InvalidSettingError(
                f"{source} must be one of {', '.join(self.choices)}, got {excerpt(value)}"
            )
        if self.accepts is not None and not self.accepts(value):
            raise InvalidSettingError(f"{source} {self.rule}, got {excerpt(_plain(value))}")
        if self.convert is not None:
            try:
                return self.convert(value)
            except InvalidInputError as exc:  # the same named error, saying where from
                raise type(exc)(f"{source}: {exc}") from None
        return value

    def help_text(self) -> str:
        default = getattr(AppSettings(), self.name)
        shown = self.shown_default or ("none" if default is None else str(default))
        return f"{self.help} (default: {shown}) [{self.variable}]"


def _plain(value: object) -> object:
    """Paths are quoted as text in error messages."""
    return str(value) if isinstance(value, Path) else value


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda value: value >= low


HOST = SettingSpec(
    "host",
    "--host",
    "SPOT_HOST",
    "address to serve on (0.0.0.0 for every interface)",
    accepts=lambda value: value != "" and not any(ch.isspace() for ch in value),
    rule="must be a host name or an address, without spaces",
    shown_default="GRADIO_SERVER_NAME where set, as on a Space, else 127.0.0.1",
)
# The two settings the engine's and the statistics' own commands check too, through
# check_offload and check_margin: one rule each, wherever the value comes from.
OFFLOAD = SettingSpec(
    "offload",
    "--offload",
    "SPOT_OFFLOAD",
    "placement of the variants' weights",
    choices=OFFLOAD_CHOICES,
)
MARGIN = SettingSpec(
    "margin_points",
    "--margin",
    "SPOT_MARGIN",
    "equivalence margin of the verdicts, in points of chance (indistinguishable within ±m)",
    kind=float,
    metavar="POINTS",
    accepts=lambda value: 0.0 < value < 50.0,
    rule="must be more than 0 and less than 50 points of chance",
)
APP_SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "model",
        "--model",
        "SPOT_MODEL",
        "auto (FLUX.1-dev on a GPU, micro otherwise), micro, tiny, a hub id or a local folder",
        accepts=lambda value: value.strip() != "",
        rule="must name a model",
    ),
    SettingSpec(
        "variants",
        "--variants",
        "SPOT_VARIANTS",
        "variants to load and play, comma-separated: bf16 and 1 to "
        f"{MAX_QUANTIZED} of {', '.join(n for n in ALL_VARIANT_NAMES if n != REFERENCE_VARIANT)}",
        metavar="NAMES",
        convert=parse_variants,
        shown_default=",".join(VARIANT_NAMES),
    ),
    SettingSpec(
        "db",
        "--db",
        "SPOT_DB",
        "SQLite database file",
        kind=Path,
        metavar="FILE",
        accepts=lambda value: str(value) != "" and not value.is_dir(),
        rule="must be a database file, not a folder",
    ),
    SettingSpec(
        "images_dir",
        "--images-dir",
        "SPOT_IMAGES_DIR",
        "folder for the generated images",
        kind=Path,
        metavar="FOLDER",
        accepts=lambda value: not value.is_file(),
        rule="must be a folder, not a file",
        shown_default="images/ beside --db: data/images",
    ),
    HOST,
    SettingSpec(
        "port",
        "--port",
        "SPOT_PORT",
        "port to serve on",
        kind=int,
        accepts=lambda value: 1 <= value <= 65535,
        rule="must be a port number in 1…65535",
    ),
    OFFLOAD,
    SettingSpec(
        "share",
        "--share",
        "SPOT_SHARE",
        "create a public gradio.live link",
        kind=bool,
        shown_default="off",
    ),
    SettingSpec(
        "max_gpu_memory_gb",
        "--max-gpu-memory",
        "SPOT_MAX_GPU_MEMORY",
        "cap on GPU memory, in GB, for the placement plan",
        kind=float,
        metavar="GB",
        accepts=lambda value: math.isfinite(value) and value > 0,
        rule="must be a positive number of GB",
    ),
    SettingSpec(
        "queue_size",
        "--queue-size",
        "SPOT_QUEUE_SIZE",
        "prompts that may wait for the GPU",
        kind=int,
        metavar="N",
        accepts=_at_least(0),
        rule="must be 0 or more",
    ),
    SettingSpec(
        "generations_per_minute",
        "--generations-per-minute",
        "SPOT_GENERATIONS_PER_MINUTE",
        "generations per player per minute (0: unlimited)",
        kind=int,
        metavar="N",
        accepts=_at_least(0),
        rule="must be 0 or more",
    ),
    SettingSpec(
        "rounds_per_minute",
        "--rounds-per-minute",
        "SPOT_ROUNDS_PER_MINUTE",
        "rounds per player per minute (0: unlimited)",
        kind=int,
        metavar="N",
        accepts=_at_least(0),
        rule="must be 0 or more",
    ),
    SettingSpec(
        "round_ttl_seconds",
        "--round-ttl",
        "SPOT_ROUND_TTL",
        "seconds a round may be answered",
        kind=int,
        metavar="SECONDS",
        accepts=_at_least(1),
        rule="must be a positive number of seconds",
    ),
    MARGIN,
    SettingSpec(
        "answers_per_day",
        "--answers-per-day",
        "SPOT_ANSWERS_PER_DAY",
        "answers one person may give per UTC day (0: no cap)",
        kind=int,
        metavar="N",
        accepts=_at_least(0),
        rule="must be 0 or more",
    ),
    SettingSpec(
        "sync_to",
        "--sync-to",
        "SPOT_SYNC_TO",
        "push every vote, round and generation to hf://datasets/OWNER/NAME or a folder, "
        "and restore from it into an empty database",
        metavar="TARGET",
        accepts=lambda value: value.strip() != "",
        rule="must name hf://datasets/OWNER/NAME or a folder",
    ),
    SettingSpec(
        "sync_every_minutes",
        "--sync-every",
        "SPOT_SYNC_EVERY",
        "minutes between pushes to the sync target (and imports from the pool)",
        kind=float,
        metavar="MINUTES",
        accepts=lambda value: math.isfinite(value) and value > 0,
        rule="must be a positive number of minutes",
    ),
    SettingSpec(
        "sync_visibility",
        "--sync-visibility",
        "SPOT_SYNC_VISIBILITY",
        "private: the target is the database's backup; public: keyed hashes for session ids "
        "(SPOT_SYNC_KEY), no images and no answer key of an open round",
        choices=("private", "public"),
    ),
    SettingSpec(
        "pool",
        "--pool",
        "SPOT_POOL",
        "import ready rounds made by python -m core.bench.pool from this target",
        metavar="TARGET",
        accepts=lambda value: value.strip() != "",
        rule="must name hf://datasets/OWNER/NAME or a folder",
    ),
)

# Read by app.main only, never a flag (a secret on the command line shows in `ps`): the key
# that signs browser person ids and hashes account ids (core.game.identity). Unset: a key
# file beside the database, made on first use.
PERSON_KEY_VARIABLE = "SPOT_PERSON_KEY"
# A Space with `hf_oauth: true` sets these; with all four, the app offers "Sign in with
# Hugging Face" and a signed-in player is their account.
OAUTH_VARIABLES: tuple[str, ...] = (
    "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES", "OPENID_PROVIDER_URL",
)  # fmt: skip


def oauth_enabled(environ: Mapping[str, str]) -> bool:
    """Whether the environment enables Hugging Face OAuth (every OAUTH_VARIABLES set)."""
    return all(environ.get(name, "") != "" for name in OAUTH_VARIABLES)


# Setting name -> environment variable, documented in README.md.
ENV_VARS: dict[str, str] = {spec.name: spec.variable for spec in APP_SETTINGS}


def build_app_parser() -> argparse.ArgumentParser:
    """The app's command line (``python app.py --help``): one flag per APP_SETTINGS entry.

    The flags have no defaults of their own (``argparse.SUPPRESS``): a parsed namespace
    holds only the flags given, so AppSettings.from_argv can tell a flag from a default.
    """
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description="Spot the Quantized Model: can people tell BF16 FLUX from LLM.int8 and NF4?",
        epilog="Every flag can also be set with the environment variable in brackets; "
        "the flag wins.",
        argument_default=argparse.SUPPRESS,
    )
    for spec in APP_SETTINGS:
        if spec.kind is bool:
            parser.add_argument(
                spec.flag,
                dest=spec.name,
                action=argparse.BooleanOptionalAction,
                help=spec.help_text(),
            )
        else:
            parser.add_argument(
                spec.flag,
                dest=spec.name,
                type=spec.kind,
                choices=spec.choices,
                metavar=spec.metavar,
                help=spec.help_text(),
            )
    return parser


def check_offload(value: str) -> str:
    """``value`` if it is one of OFFLOAD_CHOICES (the app's --offload rule), else
    InvalidSettingError."""
    return OFFLOAD.check(value, "offload")


def check_max_gpu_memory(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise InvalidSettingError(f"max GPU memory must be a positive number of GB, got {value}")
    return value


def check_margin(points: float) -> float:
    """The verdicts' equivalence margin, in points of chance: more than 0, less than 50
    (the app's --margin rule), else InvalidSettingError."""
    return MARGIN.check(points, "--margin")
