"""Registries: where checkpoints live, units, models, variants and game modes.

Everything the UI, the command lines and the README tables offer about *what* is compared
is derived from the registries here, so a variant, a model or a mode is defined exactly
once. What a request may ask for lives in ``core.limits``; how an operator configures a
running app (flags and environment variables) in ``core.settings``. This module imports
neither torch nor gradio.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.errors import (
    DuplicateVariantError,
    IncompleteGenerationError,
    InvalidSettingError,
    ReferenceVariantMissingError,
    TooManyVariantsError,
    UnknownVariantError,
)
from core.limits import SIZE_MAX, SIZE_MIN

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


# --- Modes -------------------------------------------------------------------------

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
