"""FLIP beside PSNR/SSIM: finite figures, perfect on identity, worse with more noise."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from core.engine.perceptual import FLIP_VIEWING_CONDITIONS, flip_mean_error, image_metrics, main


def _scene(size: int = 96) -> Image.Image:
    """A smooth gradient with a few flat shapes: something with edges and texture."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.stack([x, y, 0.5 * (x + y)], axis=-1)
    rgb[20:50, 30:70] = (0.9, 0.2, 0.1)
    rgb[60:80, 10:40] = (0.1, 0.3, 0.9)
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def _noisy(image: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0.0, sigma, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).round().astype(np.uint8))


def test_identity_gives_the_perfect_value_of_every_metric():
    image = _scene()
    figures = image_metrics(image, image.copy())
    assert figures.flip_mean == 0.0
    assert figures.ssim == pytest.approx(1.0)
    assert figures.psnr_db == math.inf


def test_every_figure_is_finite_and_more_noise_scores_worse():
    image = _scene()
    light, heavy = image_metrics(image, _noisy(image, 4)), image_metrics(image, _noisy(image, 24))
    for figures in (light, heavy):
        assert all(math.isfinite(v) for v in figures.as_dict().values())
        assert 0.0 < figures.flip_mean < 1.0
    assert heavy.flip_mean > light.flip_mean
    assert heavy.psnr_db < light.psnr_db
    assert heavy.ssim < light.ssim


def test_flip_states_its_viewing_conditions_in_pixels_per_degree():
    distance_m, width_px, width_m = FLIP_VIEWING_CONDITIONS
    # FLIP's small-angle formula: pixels per metre x distance x radians per degree.
    expected = width_px / width_m * distance_m * math.pi / 180
    _, ppd = flip_mean_error(_scene(), _noisy(_scene(), 8))
    assert ppd == pytest.approx(expected, rel=1e-5)
    assert ppd == pytest.approx(67.02, abs=0.01)


def test_images_of_different_sizes_are_refused_by_name():
    with pytest.raises(ValueError, match="differ in size"):
        image_metrics(_scene(96), _scene(64))


def test_the_command_scores_every_png_against_bf16_and_refuses_a_folder_without_it(
    tmp_path, capsys
):
    image = _scene()
    image.save(tmp_path / "bf16.png")
    _noisy(image, 4).save(tmp_path / "int8.png")
    _noisy(image, 24).save(tmp_path / "nf4.png")
    assert main(["--dir", str(tmp_path), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert sorted(figures) == ["int8", "nf4"]
    assert figures["nf4"]["flip_mean"] > figures["int8"]["flip_mean"] > 0
    (tmp_path / "bf16.png").unlink()
    assert main(["--dir", str(tmp_path)]) == 2
