"""The built-in tiny FLUX checkpoint: FLUX's architecture with random weights.

It is written by this module, deterministically, as an ordinary diffusers pipeline
folder (``model_index.json``, one sub-folder per component, safetensors weights, real
tokenizers) and then loaded through exactly the same ``from_pretrained`` path as a hub
model. It exists so that tests and CPU-only machines exercise every real code path —
shared components, bitsandbytes layers, the scheduler — in seconds. Its images are
coloured noise, not pictures: the UI says so whenever it is in use.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from core.checkpoints.parts import (
    FLUX_LATENT_SCALE,
    MODEL_COMPONENTS,
    byte_clip_tokenizer,
    clip_text_config,
    instantiate,
    scheduler_config,
    t5_encoder_config,
    transformer_config,
    unigram_t5_tokenizer,
    vae_config,
)
from core.checkpoints.writer import CHECKPOINT_SEED, ensure_pipeline_folder, write_pipeline_folder
from core.config import MODELS_DIR

logger = logging.getLogger(__name__)

# Bump when the architecture or the weights change, so stale caches are rebuilt.
TINY_VERSION = "1"
TINY_SEED = CHECKPOINT_SEED
DEFAULT_TINY_DIR = MODELS_DIR / f"tiny-flux-v{TINY_VERSION}"

HIDDEN = 64  # transformer width = 2 heads x 32
TEXT_DIM = 64  # CLIP hidden = pooled projection dim, T5 d_model = joint attention dim


def tiny_configs(clip_vocab: int, t5_vocab: int) -> dict[str, Any]:
    """The tiny model's component configurations (``core.checkpoints.parts``' format), for
    tokenizers of ``clip_vocab`` and ``t5_vocab`` ids."""
    return {
        "transformer": transformer_config(
            (1, 2), (HIDDEN // 32, 32), (TEXT_DIM, TEXT_DIM), (8, 12, 12), guidance=True
        ),
        "text_encoder": clip_text_config(clip_vocab, TEXT_DIM, layers=2, heads=2, ff=128),
        "text_encoder_2": t5_encoder_config(t5_vocab, TEXT_DIM, heads=(2, 32), ff=128, layers=2),
        "vae": vae_config((16, 16, 32, 32), 1, norm_groups=8, **FLUX_LATENT_SCALE),
        "scheduler": scheduler_config(3.0, dynamic=True),
    }


def _components(seed: int) -> dict[str, object]:
    clip_tokenizer = byte_clip_tokenizer()
    t5_tokenizer = unigram_t5_tokenizer()
    configs = tiny_configs(len(clip_tokenizer), len(t5_tokenizer))
    torch.manual_seed(seed)
    # The weights are drawn in MODEL_COMPONENTS' order, one global stream.
    modules = {name: instantiate(name, configs[name]) for name in MODEL_COMPONENTS}
    return {
        **modules,
        "tokenizer": clip_tokenizer,
        "tokenizer_2": t5_tokenizer,
        "scheduler": FlowMatchEulerDiscreteScheduler(**configs["scheduler"]),
    }


def write_tiny_checkpoint(directory: Path) -> Path:
    """Write the tiny pipeline into ``directory`` (which must not exist) and return it."""
    components = _components(TINY_SEED)
    for component in components.values():
        if isinstance(component, torch.nn.Module):
            component.to(torch.bfloat16)
    return write_pipeline_folder(directory, components)


def ensure_tiny_checkpoint(directory: Path | None = None) -> Path:
    """Return the folder of the tiny checkpoint, writing it first (atomically) if missing."""
    directory = Path(directory or os.environ.get("SPOT_TINY_DIR") or DEFAULT_TINY_DIR)
    return ensure_pipeline_folder(directory, write_tiny_checkpoint)
