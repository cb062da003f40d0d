"""The micro model's parts: FLUX's architecture at a size a CPU trains in an hour.

- ``FluxTransformer2DModel``: hidden 256 (4 heads x 64), 2 double + 4 single blocks, no
  guidance embedding (classifier-free guidance runs through ``true_cfg_scale``);
- ``AutoencoderKL``: 8x down (channels 32/64/64/64, one GroupNorm group), 16 latent
  channels, so a 128-pixel picture is 16x16 latents and 8x8 = 64 image tokens;
- a T5 encoder (d_model 128, 2 layers) whose tokenizer has one piece per vocabulary word,
  so every colour, shape and position is one token;
- a CLIP text model (hidden 64, 2 layers) over the tiny model's byte-level tokenizer,
  for the pooled vector FLUX conditions on.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer

from core.checkpoints.micro.vocabulary import WORDS
from core.checkpoints.parts import (
    byte_clip_tokenizer,
    clip_text_config,
    scheduler_config,
    t5_encoder_config,
    transformer_config,
    unigram_t5_tokenizer,
    vae_config,
)

HIDDEN = 256
T5_DIM = 128
CLIP_DIM = 64
# The VAE's channels per level, full resolution first. The first shipped model had
# (16, 32, 64, 64) and reconstructed 26.7 dB; the two full- and half-resolution levels, where
# the edges are drawn, are twice as wide now (``core.checkpoints.micro.decoder``).
VAE_CHANNELS = (32, 64, 64, 64)
MAX_SEQUENCE_LENGTH = 32  # T5 tokens a prompt is padded to, in training and by default
# The sampling schedule's shift, sigma' = 3 sigma / (1 + 2 sigma): more of the steps at high
# noise levels, where the layout and colours are decided. Training draws its noise levels
# towards pure noise too (logit-normal with mean logit ln 3, ``train._noise_levels``); with
# shift 1 the sampler spent half its steps below sigma 0.5, where the prompt barely matters
# any more, and the shipped model got 8 of 40 held-out one-shape prompts right against 12
# with shift 3 (12 steps, true CFG 4).
SCHEDULER_SHIFT = 3.0


def t5_tokenizer() -> T5Tokenizer:
    """A unigram vocabulary: every vocabulary word as one piece, plus printable ASCII pieces
    (with and without the word marker) so that any text still tokenizes."""
    return unigram_t5_tokenizer(WORDS)


def clip_tokenizer() -> CLIPTokenizer:
    """The tiny model's byte-level tokenizer (``parts.byte_clip_tokenizer``)."""
    return byte_clip_tokenizer()


def transformer() -> FluxTransformer2DModel:
    """No guidance embedding: classifier-free guidance runs through ``true_cfg_scale``."""
    config = transformer_config(
        (2, 4), (HIDDEN // 64, 64), (T5_DIM, CLIP_DIM), (16, 24, 24), guidance=False
    )
    return FluxTransformer2DModel(**config)


def text_encoder(vocab_size: int) -> CLIPTextModel:
    return CLIPTextModel(clip_text_config(vocab_size, CLIP_DIM, layers=2, heads=2, ff=128))


def text_encoder_2(vocab_size: int) -> T5EncoderModel:
    return T5EncoderModel(t5_encoder_config(vocab_size, T5_DIM, heads=(4, 32), ff=256, layers=2))


def vae() -> AutoencoderKL:
    # One group: GroupNorm then keeps each pixel's channel pattern (its colour) and removes
    # only a global shift and scale. With 8 groups of 2 channels, each group's own mean over
    # a flat-coloured image was normalized away, and the first training run's VAE confused
    # red, green, blue, purple and black.
    return AutoencoderKL(**vae_config(VAE_CHANNELS, 1, norm_groups=1, sample_size=128))


def scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(**scheduler_config(SCHEDULER_SHIFT, dynamic=False))
