"""Training data: rendered scenes as tensors, and the token ids of their prompts.

Everything is a function of (seed, index): scene ``i`` of seed ``s`` is drawn from
``random.Random(f"{s}:{i}")``, so any batch can be re-made after a restart.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from core.checkpoints.micro.scenes import Scene, draw, sample_scene


def scene_rng(seed: int, index: int, split: str = "train") -> random.Random:
    return random.Random(f"{split}:{seed}:{index}")


def training_scene(seed: int, index: int) -> tuple[Scene, random.Random]:
    """Scene ``index`` of the training split, and the generator that jitters its drawing."""
    rng = scene_rng(seed, index)
    return sample_scene(rng), rng


def to_tensor(images: list) -> torch.Tensor:
    """PIL RGB images -> float tensor (N, 3, H, W) in [-1, 1], channels-last."""
    array = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    tensor = torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0
    return tensor.contiguous(memory_format=torch.channels_last)


def training_images(seed: int, indices: range | list[int]) -> torch.Tensor:
    """The drawn training scenes ``indices`` as a (N, 3, H, W) tensor in [-1, 1]."""
    images = []
    for i in indices:
        scene, rng = training_scene(seed, i)
        images.append(draw(scene, rng))
    return to_tensor(images)


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One ``size``-pixel square crop of each image of (N, C, H, W) ``images``, at an offset
    drawn from ``generator`` (uniform over every position that fits), channels-last. A
    ``size`` of 0, or of at least the image side, returns ``images`` unchanged and draws
    nothing."""
    side = images.shape[-1]
    if not 0 < size < side:
        return images
    offsets = torch.randint(0, side - size + 1, (len(images), 2), generator=generator)
    crops = [
        image[:, y : y + size, x : x + size]
        for image, (y, x) in zip(images, offsets.tolist(), strict=True)
    ]
    return torch.stack(crops).contiguous(memory_format=torch.channels_last)


def token_ids(tokenizer: object, prompts: list[str], max_length: int) -> torch.Tensor:
    """Token ids exactly as ``FluxPipeline`` makes them: padded to ``max_length``, truncated."""
    return tokenizer(  # type: ignore[operator]
        prompts,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
