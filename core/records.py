"""Plain records passed between the engine, the game and storage (no torch, no gradio)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from PIL import Image

from core.limits import GenerationSettings

# Called as progress(variant, step, steps) while a generation runs; steps counts from 1.
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class VariantResult:
    """One variant's image and what it cost.

    Bytes are bytes; seconds are wall-clock seconds of the pipeline call alone
    (synchronized, loading excluded). PSNR (dB), SSIM and ``flip_mean`` (the mean LDR-FLIP
    error in [0, 1] at ``FLIP_PPD`` pixels per degree) compare this image with the BF16
    one (``IMAGE_METRICS``); they are None for BF16 itself, and None in rows stored before
    they were measured. Memory, honest per variant:

    - ``weight_bytes``: its own transformer + T5, bitsandbytes' quantization state
      included; ``shared_weight_bytes``: the CLIP encoder and VAE all variants share;
    - ``activation_peak_bytes`` (GPU): the peak during its call above what was allocated
      just before it (under offload, modules brought onto the device count in it);
    - ``standalone_peak_bytes`` (GPU): what this variant would peak at alone with the same
      placement, in the seed's terms (``max_memory_reserved``) — its own and the shared
      modules already on the device + how far the reserved peak rose during its call; the
      figure comparable to the seed's table;
    - ``peak_allocated_bytes`` / ``peak_reserved_bytes`` (GPU): the device's peaks during
      the call, *every* loaded variant included;
    - ``peak_rss_bytes`` (CPU): the whole process's peak RSS during the call — a process
      figure (all variants, the app), never this variant's own.
    """

    variant: str
    image: Image.Image
    seconds: float
    weight_bytes: int
    shared_weight_bytes: int
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    peak_rss_bytes: int | None = None
    activation_peak_bytes: int | None = None
    standalone_peak_bytes: int | None = None
    psnr: float | None = None
    ssim: float | None = None
    flip_mean: float | None = None

    def stats(self) -> dict[str, Any]:
        """Every figure of this result except the image, JSON-ready.

        A PSNR of an image identical to BF16 is infinite; JSON has no infinity, so it is
        written as the string "inf".
        """
        out = asdict(self)
        out.pop("image")
        return {k: "inf" if isinstance(v, float) and math.isinf(v) else v for k, v in out.items()}

    def figures(self) -> tuple[float | int | None, ...]:
        """The values of IMAGE_FIGURES, in that order: seconds as a float, the two weight
        byte counts as ints, the rest as they are (None where not measured)."""
        values = {name: getattr(self, name) for name in IMAGE_FIGURES}
        values["seconds"] = float(self.seconds)
        values["weight_bytes"] = int(self.weight_bytes)
        values["shared_weight_bytes"] = int(self.shared_weight_bytes)
        return tuple(values.values())


# The figures of an image against the BF16 image of its generation (VariantResult). The
# public export and a public sync target leave them out: two served images of a
# generation that can still be played give the same figures, which would tie each image
# to its variant.
IMAGE_METRICS: tuple[str, ...] = ("psnr", "ssim", "flip_mean")
IMAGE_METRIC_LABELS: dict[str, str] = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "flip_mean": "FLIP mean error",
}

# The viewing conditions FLIP assumes, stated once (FLIP's own default): a display
# FLIP_DISPLAY_WIDTH_M wide of FLIP_DISPLAY_WIDTH_PX pixels, seen from FLIP_DISTANCE_M.
# Pixels per degree of visual angle = distance * (pixels / width) * pi / 180 = 67.02.
FLIP_DISTANCE_M = 0.7
FLIP_DISPLAY_WIDTH_PX = 3840
FLIP_DISPLAY_WIDTH_M = 0.7
FLIP_PPD = FLIP_DISTANCE_M * (FLIP_DISPLAY_WIDTH_PX / FLIP_DISPLAY_WIDTH_M) * math.pi / 180
VIEWING_CONDITIONS = (
    f"FLIP at {FLIP_PPD:.1f} pixels per degree: a {FLIP_DISPLAY_WIDTH_M:g} m wide display of "
    f"{FLIP_DISPLAY_WIDTH_PX} pixels seen from {FLIP_DISTANCE_M:g} m (FLIP's default)"
)

# Every per-image figure of a VariantResult, in field order: all its fields but the variant
# and the image. The images table stores each in a column of the same name, and
# core.store writes and reads them through this list.
IMAGE_FIGURES: tuple[str, ...] = tuple(
    f.name for f in fields(VariantResult) if f.name not in ("variant", "image")
)


@dataclass
class Generation:
    """One prompt + settings turned into one image per variant."""

    prompt: str
    settings: GenerationSettings
    model: str
    device: str
    placement: str
    results: dict[str, VariantResult]
    versions: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    synthetic: bool = False
    # Bytes of every loaded module on the generation's device between calls (the resident
    # trio's total on a GPU; in RAM on the CPU); None where not measured.
    resident_weight_bytes: int | None = None

    def stats(self) -> dict[str, Any]:
        """The JSON written as stats.json: settings, environment, per-variant figures."""
        return {
            "prompt": self.prompt,
            "settings": asdict(self.settings),
            "model": self.model,
            "device": self.device,
            "placement": self.placement,
            "versions": dict(self.versions),
            "created_at": self.created_at,
            "synthetic": self.synthetic,
            "resident_weight_bytes": self.resident_weight_bytes,
            "variants": {name: r.stats() for name, r in self.results.items()},
        }
