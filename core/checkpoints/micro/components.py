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
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from core.checkpoints.micro.vocabulary import WORDS
from core.checkpoints.tiny import byte_clip_tokenizer

HIDDEN = 256
T5_DIM = 128
CLIP_DIM = 64
LATENT_CHANNELS = 16
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
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + word, -1.0) for word in sorted(WORDS)]
    pieces += [("\u2581" + chr(c), -2.0) for c in range(33, 127) if chr(c) not in WORDS]
    pieces += [(chr(c), -3.0) for c in range(33, 127)]
    pieces.append(("\u2581", -4.0))
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def clip_tokenizer() -> CLIPTokenizer:
    """The tiny model's byte-level tokenizer (``tiny.byte_clip_tokenizer``)."""
    return byte_clip_tokenizer()


def transformer() -> FluxTransformer2DModel:
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=64,
        num_attention_heads=HIDDEN // 64,
        joint_attention_dim=T5_DIM,
        pooled_projection_dim=CLIP_DIM,
        guidance_embeds=False,
        axes_dims_rope=(16, 24, 24),
    )


def text_encoder(vocab_size: int) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=CLIP_DIM,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=CLIP_DIM,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )


def text_encoder_2(vocab_size: int) -> T5EncoderModel:
    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=T5_DIM,
            d_kv=32,
            num_heads=4,
            d_ff=256,
            num_layers=2,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
            use_cache=False,
            pad_token_id=0,
            eos_token_id=1,
        )
    )


def vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=VAE_CHANNELS,
        layers_per_block=1,
        # One group: GroupNorm then keeps each pixel's channel pattern (its colour) and
        # removes only a global shift and scale. With 8 groups of 2 channels, each group's
        # own mean over a flat-coloured image was normalized away, and the first training
        # run's VAE confused red, green, blue, purple and black.
        norm_num_groups=1,
        latent_channels=LATENT_CHANNELS,
        sample_size=128,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(shift=SCHEDULER_SHIFT, use_dynamic_shifting=False)
