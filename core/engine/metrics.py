"""Objective image differences against the BF16 image (scikit-image's reference code)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def psnr(reference: Image.Image, other: Image.Image) -> float:
    """PSNR in dB of ``other`` against ``reference`` (8-bit RGB); inf for identical images."""
    a, b = _pixels(reference), _pixels(other)
    if np.array_equal(a, b):
        return math.inf
    return float(peak_signal_noise_ratio(a, b, data_range=255))


def ssim(reference: Image.Image, other: Image.Image) -> float:
    """Mean SSIM (1.0 = identical) of ``other`` against ``reference`` over RGB channels."""
    return float(
        structural_similarity(_pixels(reference), _pixels(other), channel_axis=2, data_range=255)
    )
