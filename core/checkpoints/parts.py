"""The building blocks of every built-in checkpoint: FLUX's five component kinds, any size.

The tiny, synthetic and micro checkpoints are all ``FluxPipeline`` folders with the same
component kinds, the same tokenizers and the same fixed settings (token ids, FLUX's latent
layout, the scheduler's shift range); they differ only in widths and depths. This module
holds what they share, once:

- the two tokenizers: a byte-level CLIP BPE and a unigram T5 vocabulary (optionally with
  whole-word pieces), both of which tokenize any text;
- one configuration builder per component, taking only the sizes that vary. The result is
  what ``from_pretrained`` records: keyword arguments for the diffusers classes
  (transformer, VAE, scheduler), config objects for the transformers ones (text encoders);
- ``instantiate``, which turns one such configuration into its module.

Every checkpoint's configurations are a mapping ``component name -> configuration`` in this
format; ``core.engine.placement`` sizes models from the same mapping.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

# The model components, in the order the tiny checkpoint draws their random weights.
MODEL_COMPONENTS = ("transformer", "text_encoder", "text_encoder_2", "vae")
CLIP_MAX_TOKENS = 77  # CLIP's context, start and end tokens included
FLUX_LATENT_CHANNELS = 16
# FLUX.1's published VAE latent normalization (the micro model measures its own).
FLUX_LATENT_SCALE = {"scaling_factor": 0.3611, "shift_factor": 0.1159}
# The special ids of the two tokenizers below, as the text encoders' configs name them:
# CLIP's pooling reads the hidden state at the first end id.
BYTE_CLIP_IDS = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
UNIGRAM_T5_IDS = {"pad_token_id": 0, "eos_token_id": 1}
# What makes a T5Config FLUX's T5 v1.1 encoder: gated GELU, no decoder, no cache.
T5_V1_1_ENCODER = {
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": False,
    "use_cache": False,
}


def byte_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE with no merges: every byte is a token, so any text tokenizes (77
    tokens at most, start and end included). Start is id 0, end (and padding) id 1."""
    symbols = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in symbols:
        vocab.setdefault(s, len(vocab))
    for s in symbols:
        vocab.setdefault(s + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_MAX_TOKENS)


def unigram_t5_tokenizer(words: Iterable[str] = ()) -> T5Tokenizer:
    """A unigram vocabulary: each of ``words`` as one piece (sorted), then printable ASCII
    pieces with and without the word marker, so that any text tokenizes. Padding is id 0,
    end id 1, unknown id 2."""
    words = sorted(words)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + word, -1.0) for word in words]
    pieces += [("\u2581" + chr(c), -2.0) for c in range(33, 127) if chr(c) not in words]
    pieces += [(chr(c), -3.0) for c in range(33, 127)]
    pieces.append(("\u2581", -4.0))
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def transformer_config(
    layers: tuple[int, int],
    heads: tuple[int, int],
    text_dims: tuple[int, int],
    rope: tuple[int, int, int],
    guidance: bool,
) -> dict[str, Any]:
    """``FluxTransformer2DModel`` keyword arguments over FLUX's 2x2-patched latents.

    ``layers``: (double-stream, single-stream) blocks; ``heads``: (count, width), so the
    hidden width is their product; ``text_dims``: (T5 width, CLIP pooled width), the joint
    attention and pooled projection inputs; ``rope``: the rotary axes' widths (summing to
    the head width); ``guidance``: FLUX.1-dev's guidance embedding.
    """
    return {
        "patch_size": 1,
        "in_channels": 4 * FLUX_LATENT_CHANNELS,
        "num_layers": layers[0],
        "num_single_layers": layers[1],
        "attention_head_dim": heads[1],
        "num_attention_heads": heads[0],
        "joint_attention_dim": text_dims[0],
        "pooled_projection_dim": text_dims[1],
        "guidance_embeds": guidance,
        "axes_dims_rope": rope,
    }


def clip_text_config(
    vocab_size: int, width: int, layers: int, heads: int, ff: int
) -> CLIPTextConfig:
    """A CLIP text model (quick GELU, as CLIP ViT-L/14) over ``byte_clip_tokenizer``'s ids;
    its pooled projection is as wide as the model."""
    sizes = {
        "vocab_size": vocab_size,
        "max_position_embeddings": CLIP_MAX_TOKENS,
        "hidden_size": width,
        "projection_dim": width,
        "intermediate_size": ff,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
    }
    return CLIPTextConfig(**sizes, **BYTE_CLIP_IDS)


def t5_encoder_config(
    vocab_size: int, width: int, heads: tuple[int, int], ff: int, layers: int
) -> T5Config:
    """A T5 v1.1 encoder over ``unigram_t5_tokenizer``'s ids; ``heads``: (count, width)."""
    sizes = {
        "vocab_size": vocab_size,
        "d_model": width,
        "d_kv": heads[1],
        "num_heads": heads[0],
        "d_ff": ff,
        "num_layers": layers,
    }
    return T5Config(**sizes, **UNIGRAM_T5_IDS, **T5_V1_1_ENCODER)


def vae_config(
    channels: tuple[int, ...], layers_per_block: int, norm_groups: int = 32, **extra: Any
) -> dict[str, Any]:
    """``AutoencoderKL`` keyword arguments: 8x down over four levels of ``channels`` (full
    resolution first), FLUX's 16 latent channels, no quant convolutions. ``extra``:
    ``sample_size``, ``scaling_factor``, ``shift_factor``."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": channels,
        "layers_per_block": layers_per_block,
        "norm_num_groups": norm_groups,
        "latent_channels": FLUX_LATENT_CHANNELS,
        **extra,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
    }


def scheduler_config(shift: float, dynamic: bool) -> dict[str, Any]:
    """``FlowMatchEulerDiscreteScheduler`` keyword arguments: ``shift``, or with ``dynamic``
    a shift that grows with the image's token count over FLUX.1's published range."""
    return {
        "shift": shift,
        "use_dynamic_shifting": dynamic,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
    }


def instantiate(name: str, config: Any) -> torch.nn.Module:
    """The model component ``name`` (one of ``MODEL_COMPONENTS``) built from its
    configuration, with the constructor's own (random, global-seed) initialization."""
    if name == "transformer":
        return FluxTransformer2DModel(**config)
    if name == "text_encoder":
        return CLIPTextModel(config)
    if name == "text_encoder_2":
        return T5EncoderModel(config)
    if name == "vae":
        return AutoencoderKL(**config)
    raise ValueError(f"not a model component: {name}")
