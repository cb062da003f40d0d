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

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

from core.checkpoints.writer import CHECKPOINT_SEED, ensure_pipeline_folder, write_pipeline_folder
from core.config import MODELS_DIR

logger = logging.getLogger(__name__)

# Bump when the architecture or the weights change, so stale caches are rebuilt.
TINY_VERSION = "1"
TINY_SEED = CHECKPOINT_SEED
DEFAULT_TINY_DIR = MODELS_DIR / f"tiny-flux-v{TINY_VERSION}"

HIDDEN = 64  # transformer width = 2 heads x 32
TEXT_DIM = 64  # CLIP hidden = pooled projection dim, T5 d_model = joint attention dim


def byte_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE with no merges: every byte is a token, so any text tokenizes (77
    tokens at most, start and end included). Shared by the tiny, micro and synthetic
    checkpoints."""
    symbols = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in symbols:
        vocab.setdefault(s, len(vocab))
    for s in symbols:
        vocab.setdefault(s + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def ascii_t5_tokenizer() -> T5Tokenizer:
    """A unigram vocabulary of printable ASCII pieces, with and without the word marker, so
    any text tokenizes. Shared by the tiny and synthetic checkpoints."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + chr(c), -2.0) for c in range(33, 127)]
    pieces += [(chr(c), -3.0) for c in range(33, 127)]
    pieces.append(("\u2581", -4.0))
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _components(seed: int) -> dict[str, object]:
    torch.manual_seed(seed)
    clip_tokenizer = byte_clip_tokenizer()
    t5_tokenizer = ascii_t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=32,
        num_attention_heads=HIDDEN // 32,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM,
        guidance_embeds=True,
        axes_dims_rope=(8, 12, 12),
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tokenizer),
            hidden_size=TEXT_DIM,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=TEXT_DIM,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=TEXT_DIM,
            d_kv=32,
            num_heads=2,
            d_ff=128,
            num_layers=2,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
            use_cache=False,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=16,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return {
        "transformer": transformer,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": clip_tokenizer,
        "tokenizer_2": t5_tokenizer,
        "vae": vae,
        "scheduler": scheduler,
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
