"""Perceptual differences of a quantized image against the BF16 image, beside PSNR/SSIM.

``image_metrics(bf16, other)`` returns every figure for one pair. Nothing here downloads
anything at run time.

- **FLIP** (NVIDIA's ``flip-evaluator``, LDR-FLIP): the mean of the per-pixel FLIP error
  map, in [0, 1]; 0 means no visible difference. FLIP models a viewer who flips between
  the two images, which is how the game's slider is used. Its answer depends on the viewing
  conditions. They are fixed here to FLIP's own default: a 0.7 m wide monitor of 3840
  pixels seen from 0.7 m, which is 67.0 pixels per degree. The function returns the ppd
  with the figures.
- **PSNR / SSIM**: scikit-image's reference code (``core.engine.metrics``).

Left out here, and why:

- ColorVideoVDP (``cvvdp``) imports torchvision. The only torchvision on PyPI for torch
  2.13 is the CUDA build. Beside this project's torch 2.13.0+cpu it fails to load
  ("operator torchvision::nms does not exist"), and once installed it breaks
  ``import transformers``. The CPU build is not on PyPI.
- SSIMULACRA2: the only Python package, ``ssimulacra2`` 0.3.0, is a one-author port with a
  single release. It is not a maintained reference.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import flip_evaluator
import numpy as np
from PIL import Image

from core.engine.metrics import psnr, ssim
from core.records import FLIP_DISPLAY_WIDTH_M, FLIP_DISPLAY_WIDTH_PX, FLIP_DISTANCE_M

logger = logging.getLogger(__name__)
REFERENCE_IMAGE = "bf16.png"

# FLIP's viewing conditions (core.records, stated once): distance to the display (m), its
# width (pixels), its width (m). 0.7 m from a 0.7 m wide 4K monitor = 67.02 pixels per
# degree of visual angle (FLIP_PPD).
FLIP_VIEWING_CONDITIONS: tuple[float, float, float] = (
    FLIP_DISTANCE_M,
    float(FLIP_DISPLAY_WIDTH_PX),
    FLIP_DISPLAY_WIDTH_M,
)


@dataclass(frozen=True)
class ImageMetrics:
    """Every objective figure of one image against the BF16 image.

    ``psnr_db``: dB, inf when identical. ``ssim``: mean SSIM, 1.0 when identical.
    ``flip_mean``: mean LDR-FLIP error in [0, 1], 0.0 when identical.
    ``flip_ppd``: the pixels per degree FLIP assumed.
    """

    psnr_db: float
    ssim: float
    flip_mean: float
    flip_ppd: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _unit_rgb(image: Image.Image) -> np.ndarray:
    """8-bit sRGB pixels as float32 in [0, 1], HxWx3 (what LDR-FLIP takes)."""
    return np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255.0)


def _check_same_size(reference: Image.Image, other: Image.Image) -> None:
    if reference.size != other.size:
        raise ValueError(
            f"images differ in size: {reference.size} against {other.size} (width, height)"
        )


def flip_mean_error(reference: Image.Image, other: Image.Image) -> tuple[float, float]:
    """(mean LDR-FLIP error of ``other`` against ``reference``, pixels per degree used)."""
    _check_same_size(reference, other)
    _, mean, parameters = flip_evaluator.evaluate(
        _unit_rgb(reference),
        _unit_rgb(other),
        "LDR",
        applyMagma=False,
        parameters={"vc": list(FLIP_VIEWING_CONDITIONS)},
    )
    return float(mean), float(parameters["ppd"])


def image_metrics(bf16: Image.Image, other: Image.Image) -> ImageMetrics:
    """Every figure of ``other`` against ``bf16`` (two images of the same size)."""
    _check_same_size(bf16, other)
    flip_mean, ppd = flip_mean_error(bf16, other)
    return ImageMetrics(
        psnr_db=psnr(bf16, other), ssim=ssim(bf16, other), flip_mean=flip_mean, flip_ppd=ppd
    )


def folder_metrics(directory: Path) -> dict[str, ImageMetrics]:
    """Every PNG in ``directory`` but ``bf16.png``, against ``bf16.png``, by file stem."""
    reference_path = directory / REFERENCE_IMAGE
    if not reference_path.is_file():
        raise FileNotFoundError(f"{reference_path} not found (the BF16 image to compare with)")
    with Image.open(reference_path) as reference:
        reference.load()
        figures = {}
        for path in sorted(directory.glob("*.png")):
            if path.name != REFERENCE_IMAGE:
                with Image.open(path) as other:
                    figures[path.stem] = image_metrics(reference, other)
    return figures


def main(argv: list[str] | None = None) -> int:
    """``python -m core.engine.perceptual --dir DIR [--json]``: the figures of each image."""
    parser = argparse.ArgumentParser(
        prog="python -m core.engine.perceptual",
        description="PSNR, SSIM and FLIP mean error of every PNG in DIR against DIR/bf16.png.",
    )
    parser.add_argument("--dir", type=Path, required=True, help="folder with bf16.png")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        figures = folder_metrics(args.dir)
    except (FileNotFoundError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    if args.json:
        sys.stdout.write(json.dumps({k: v.as_dict() for k, v in figures.items()}, indent=2))
        sys.stdout.write("\n")
        return 0
    sys.stdout.write(f"{'image':>8} {'PSNR dB':>8} {'SSIM':>7} {'FLIP mean':>10}  (FLIP at ppd)\n")
    for name, f in figures.items():
        sys.stdout.write(
            f"{name:>8} {f.psnr_db:8.2f} {f.ssim:7.4f} {f.flip_mean:10.4f}  ({f.flip_ppd:.1f})\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
