"""Synthetic FLUX checkpoints: the published shapes of FLUX.1-dev / schnell, random weights.

Memory and time of a model depend on its shapes and dtypes, not on the values of its
weights, so a pipeline folder with FLUX.1's exact configuration and random bf16 weights
measures full-scale memory and speed on any GPU without a download or a licence. The one
exception is LLM.int8: its outlier path (threshold 6.0) depends on activation values, so
int8 timings measured on random weights may differ from the real model's.

The folder is an ordinary diffusers pipeline (``model_index.json``, one sub-folder per
component, safetensors) loaded through exactly the same ``core.engine.loading.load_models`` path as
a real model, so quantization and placement are the real ones. The two large components
(transformer, T5) are created on the meta device and filled on the build device (the GPU
when there is one) with a seeded generator, so a build is fast and deterministic per device
type. The tokenizers are ``core.checkpoints.parts``' (a byte-level CLIP BPE and an ASCII
unigram T5 vocabulary); their ids stay far below the real vocabulary sizes the embeddings have.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from core.checkpoints import parts
from core.checkpoints.writer import (
    CHECKPOINT_SEED,
    ensure_pipeline_folder,
    is_pipeline_folder,
    save_component,
    write_model_index,
)
from core.config import MODELS, MODELS_DIR, SYNTHETIC_DEV_QUARTER, ModelSpec
from core.errors import InvalidSettingError

logger = logging.getLogger(__name__)

# Bump when the shapes or the way weights are filled change, so stale caches are rebuilt.
SYNTHETIC_VERSION = "1"
SYNTHETIC_SEED = CHECKPOINT_SEED
DTYPE = torch.bfloat16
DEFAULT_CACHE_DIR = MODELS_DIR
SYNTHETIC_NOTE = (
    "synthetic: FLUX.1 shapes with random bf16 weights (no download); memory and BF16/NF4 "
    "timings match the real model closely, LLM.int8 timings may differ from real weights "
    "(its outlier path, threshold 6.0, depends on activation values)"
)
CLIP_VOCAB = 49408
T5_VOCAB = 32128


def component_configs(spec: ModelSpec) -> dict[str, Any]:
    """The published configuration of every component of ``spec`` (FLUX.1-dev or schnell;
    the quarter-width dev for ``synthetic-flux-dev-quarter``).

    Returns constructor keyword arguments (transformer, vae, scheduler) or config objects
    (text_encoder, text_encoder_2), keyed by pipeline component name.
    """
    if spec.kind != "synthetic":
        raise InvalidSettingError(f"{spec.name} is not a synthetic model")
    configs = _published_configs(spec.guidance_embeds)
    return quarter_width(configs) if spec.name == SYNTHETIC_DEV_QUARTER else configs


def _published_configs(dev: bool) -> dict[str, Any]:
    return {
        # FluxTransformer2DModel's defaults are FLUX.1's: 19 double + 38 single blocks,
        # 24 heads x 128, joint_attention_dim 4096, pooled 768, axes_dims_rope (16, 56, 56).
        "transformer": {"guidance_embeds": dev},
        # CLIP ViT-L/14 text model and the T5-XXL v1.1 encoder, with the real vocabulary
        # sizes (the byte-level and ASCII tokenizers' ids stay far below them).
        "text_encoder": parts.clip_text_config(CLIP_VOCAB, 768, layers=12, heads=12, ff=3072),
        "text_encoder_2": parts.t5_encoder_config(
            T5_VOCAB, 4096, heads=(64, 64), ff=10240, layers=24
        ),
        "vae": parts.vae_config(
            (128, 256, 512, 512), 2, sample_size=1024, **parts.FLUX_LATENT_SCALE
        ),
        # dev: shift 3.0 with resolution-dependent shifting; schnell: the published
        # schnell scheduler (shift 1.0, no dynamic shifting).
        "scheduler": parts.scheduler_config(3.0 if dev else 1.0, dynamic=dev),
    }


def quarter_width(configs: dict[str, Any]) -> dict[str, Any]:
    """``configs`` with every width divided by four, depths and layer kinds unchanged.

    Attention heads keep their width (128 in the transformer, 64 in the encoders) and
    shrink in number, so the rotary embedding and the attention kernels are the full
    model's; the VAE (0.17 GB) and the vocabularies stay as they are.
    """
    clip, t5 = configs["text_encoder"], configs["text_encoder_2"]
    return {
        **configs,
        "transformer": {
            **configs["transformer"],
            "num_attention_heads": 6,
            "joint_attention_dim": 1024,
            "pooled_projection_dim": 192,
        },
        "text_encoder": type(clip)(
            **{
                **clip.to_dict(),
                "hidden_size": 192,
                "intermediate_size": 768,
                "num_attention_heads": 3,
                "projection_dim": 192,
            }
        ),
        "text_encoder_2": type(t5)(
            **{**t5.to_dict(), "d_model": 1024, "num_heads": 16, "d_ff": 2560}
        ),
    }


def parameter_counts(configs: Mapping[str, Any]) -> dict[str, int]:
    """Parameters of each model component, counted on the meta device (no memory used)."""
    counts = {}
    for name in parts.MODEL_COMPONENTS:
        with torch.device("meta"):
            module = parts.instantiate(name, configs[name])
        # parameters() yields tied weights (T5's shared embedding) once.
        counts[name] = sum(p.numel() for p in module.parameters())
    return counts


@torch.no_grad()
def _fill(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Fill every parameter in place with random values that keep activations at unit scale.

    Linear / conv weights: uniform with variance 1/fan_in; embeddings: standard normal;
    norm weights 1; biases 0. Visiting modules in a fixed order with one seeded generator
    makes the weights a function of (seed, build device type).
    """
    done: set[int] = set()
    for module_name, child in module.named_modules():
        for param_name, param in child.named_parameters(recurse=False):
            if id(param) in done:
                continue
            done.add(id(param))
            if param_name == "bias":
                param.zero_()
            elif "Norm" in type(child).__name__:
                param.fill_(1.0)
            elif isinstance(child, torch.nn.Embedding):
                param.normal_(0.0, 1.0, generator=generator)
            elif param.dim() >= 2:
                fan_in = math.prod(param.shape[1:])
                bound = math.sqrt(3.0 / fan_in)
                param.uniform_(-bound, bound, generator=generator)
            else:
                logger.debug("filling %s.%s with N(0, 0.02)", module_name, param_name)
                param.normal_(0.0, 0.02, generator=generator)


def build_component(
    name: str, config: Any, device: torch.device, seed: int = SYNTHETIC_SEED
) -> torch.nn.Module:
    """One component with random bf16 weights on ``device``, made on the meta device first."""
    with torch.device("meta"):
        module = parts.instantiate(name, config)
    module.to(DTYPE)
    if any(True for _ in module.buffers()):
        # Buffers (CLIP's position ids) would be left uninitialized by to_empty: build
        # such (small) modules the ordinary way on the CPU.
        torch.manual_seed(seed)
        module = parts.instantiate(name, config).to(DTYPE)
        device = torch.device("cpu")
    else:
        module.to_empty(device=device)
        if hasattr(module, "tie_weights"):
            module.tie_weights()  # to_empty unties T5's shared input embedding
    generator = torch.Generator(device).manual_seed(seed)
    _fill(module, generator)
    return module.eval()


def write_synthetic_checkpoint(
    directory: Path,
    configs: Mapping[str, Any],
    device: torch.device,
    *,
    seed: int = SYNTHETIC_SEED,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a pipeline folder with ``configs``' shapes and random weights into ``directory``.

    ``directory`` must not exist. Components are built one at a time on ``device`` and
    freed after saving, so the peak is the largest component (23.8 GB for FLUX.1's
    transformer in bf16), not the whole pipeline.
    """
    directory.mkdir(parents=True)
    index: dict[str, list[str]] = {}
    for offset, name in enumerate(("transformer", "text_encoder_2", "text_encoder", "vae")):
        module = build_component(name, configs[name], device, seed + offset)
        index[name] = save_component(directory, name, module)
        logger.info("wrote synthetic %s (%s)", name, type(module).__name__)
        del module
        if device.type == "cuda":
            torch.cuda.empty_cache()
    tokenizers = {
        "tokenizer": parts.byte_clip_tokenizer(),
        "tokenizer_2": parts.unigram_t5_tokenizer(),
    }
    for name, tokenizer in tokenizers.items():
        index[name] = save_component(directory, name, tokenizer)
    scheduler = FlowMatchEulerDiscreteScheduler(**configs["scheduler"])
    index["scheduler"] = save_component(directory, "scheduler", scheduler)
    write_model_index(directory, index)
    (directory / "synthetic.json").write_text(
        json.dumps(
            {
                "version": SYNTHETIC_VERSION,
                "seed": seed,
                "build_device": device.type,
                **(meta or {}),
            },
            indent=2,
        )
    )
    return directory


def estimated_bytes(configs: Mapping[str, Any]) -> int:
    """Bytes the checkpoint takes on disk (bf16: two bytes per parameter)."""
    return 2 * sum(parameter_counts(configs).values())


def synthetic_dir(spec: ModelSpec, cache_dir: Path | None = None) -> Path:
    """Where ``spec``'s checkpoint is built: ``cache_dir``, else $SPOT_CACHE_DIR, else
    data/models."""
    root = cache_dir or os.environ.get("SPOT_CACHE_DIR") or DEFAULT_CACHE_DIR
    return Path(root) / f"{spec.name}-v{SYNTHETIC_VERSION}"


def ensure_synthetic_checkpoint(
    spec: ModelSpec, cache_dir: Path | None = None, device: torch.device | None = None
) -> Path:
    """Return the folder of ``spec``'s synthetic checkpoint, building it if it is missing.

    Built atomically (``core.checkpoints.writer``), so an interrupted build never leaves a
    half-written checkpoint. Raises InvalidSettingError when the disk is too small.
    """
    directory = synthetic_dir(spec, cache_dir)
    if is_pipeline_folder(directory):
        logger.info("using the synthetic checkpoint at %s", directory)
        return directory
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    configs = component_configs(spec)
    needed = estimated_bytes(configs)
    directory.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory.parent).free
    if free < needed * 1.05:
        raise InvalidSettingError(
            f"building {spec.name} needs about {needed / 1e9:.1f} GB on disk; "
            f"{directory.parent} has {free / 1e9:.1f} GB free (choose another --cache-dir)"
        )
    logger.info(
        "building the synthetic checkpoint %s (%.1f GB) on %s into %s",
        spec.name,
        needed / 1e9,
        device,
        directory,
    )
    return ensure_pipeline_folder(
        directory,
        lambda path: write_synthetic_checkpoint(path, configs, device, meta={"model": spec.name}),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m core.checkpoints.synthetic --model NAME [--cache-dir DIR]``: build (or find)
    a synthetic checkpoint and print its folder."""
    parser = argparse.ArgumentParser(
        prog="python -m core.checkpoints.synthetic",
        description="Build a synthetic FLUX checkpoint (published shapes, random bf16 weights).",
    )
    names = [name for name, spec in MODELS.items() if spec.kind == "synthetic"]
    parser.add_argument("--model", choices=names, required=True)
    parser.add_argument("--cache-dir", type=Path, help="default: $SPOT_CACHE_DIR or data/models")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        folder = ensure_synthetic_checkpoint(MODELS[args.model], args.cache_dir)
    except InvalidSettingError as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write(f"{folder}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
