"""How well the micro model follows prompts, and what quantization does to it.

    python -m core.bench.micro_quality [--pairs 100] [--out micro-quality.json]

Loads the micro model through the engine (exactly as the app does: shared CLIP, VAE and
tokenizers; per-variant transformer and T5 in bf16, LLM.int8 and NF4 with real
bitsandbytes layers), generates every held-out (prompt, seed) pair at the model's default
settings and judges each variant's image with ``core.checkpoints.micro.checker``:

- one-shape prompts right (background, colour, position and size) and shape identity;
- two-shape colour binding (each stated position holds its own colour);
- the PSNR and SSIM of the LLM.int8 and NF4 images against the BF16 one, and how many
  images change verdict under quantization;
- the VAE's reconstruction PSNR on the held-out scenes (bf16, as the engine runs it);
- how much the BF16 T5's output for a colour word moves when its shape trades places with
  the other (``binding.position_sensitivity``; near 0, the model cannot bind colours);
- where BF16 misses: each one-shape image's prompted and read shape, and how each
  two-shape image fares on binding (``checker.binding_outcome``).

Held-out scenes are descriptions the training never drew (``scenes.is_held_out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from core.checkpoints.micro.binding import position_sensitivity
from core.checkpoints.micro.checker import binding_outcome, judge
from core.checkpoints.micro.dataset import to_tensor
from core.checkpoints.micro.scenes import draw, held_out_pairs
from core.checkpoints.micro.train import psnr_per_image
from core.config import MICRO_MODEL, MODELS, QUANTIZED_VARIANTS, REFERENCE_VARIANT, ModelSpec
from core.engine.generation import Engine

logger = logging.getLogger(__name__)


@torch.inference_mode()
def vae_psnr(engine: Engine, pairs: list, seed: int = 0) -> float:
    """Mean reconstruction PSNR (dB, 0-255 pixels) of the held-out scenes through the VAE."""
    vae = engine.models.shared["vae"]
    rng = random.Random(f"vae:{seed}")
    images = to_tensor([draw(scene, rng) for scene, _ in pairs])
    values: list[float] = []
    for start in range(0, len(images), 25):
        x = images[start : start + 25].to(vae.dtype)
        z = vae.encode(x).latent_dist.mode()
        values += psnr_per_image(vae.decode(z).sample, x).tolist()
    return statistics.fmean(values)


def t5_sensitivity(engine: Engine, pairs: list) -> float:
    """``binding.position_sensitivity`` of the BF16 variant's T5 on the two-shape pairs
    (it skips the one-shape ones)."""
    pipe = engine.models.pipelines[REFERENCE_VARIANT]
    return position_sensitivity(pipe.text_encoder_2, pipe.tokenizer_2, [s for s, _ in pairs])


def evaluate(spec: ModelSpec, pairs_count: int = 100, seed: int = 0) -> dict[str, Any]:
    """Every figure of the module docstring, as a JSON-ready dict."""
    engine = Engine.load(spec, device="cpu")
    pairs = held_out_pairs(pairs_count, seed)
    defaults = engine.default_settings()
    per_variant: dict[str, dict[str, list[bool]]] = {
        v: {"one_right": [], "shape": [], "two_bound": []} for v in engine.variants
    }
    quality: dict[str, dict[str, list[float]]] = {
        v: {"psnr": [], "ssim": []} for v in QUANTIZED_VARIANTS
    }
    changed = dict.fromkeys(QUANTIZED_VARIANTS, 0)
    shapes_read: Counter[str] = Counter()  # "prompted -> read" over BF16 one-shape images
    binding: Counter[str] = Counter()  # binding_outcome over BF16 two-shape images
    for scene, generation_seed in pairs:
        generation = engine.generate(scene.prompt(), defaults.with_(seed=generation_seed))
        verdicts = {v: judge(r.image, scene) for v, r in generation.results.items()}
        reference = verdicts[REFERENCE_VARIANT]
        if len(scene.shapes) == 1:
            shapes_read[f"{scene.shapes[0].shape} -> {reference.seen[0].shape}"] += 1
        else:
            binding[binding_outcome(reference, scene)] += 1
        for variant, verdict in verdicts.items():
            if len(scene.shapes) == 1:
                per_variant[variant]["one_right"].append(verdict.right)
                per_variant[variant]["shape"].append(verdict.shape)
            else:
                per_variant[variant]["two_bound"].append(verdict.right)
        for variant in QUANTIZED_VARIANTS:
            result = generation.results.get(variant)
            if result is None:
                continue
            quality[variant]["psnr"].append(result.psnr)
            quality[variant]["ssim"].append(result.ssim)
            changed[variant] += verdicts[variant] != verdicts[REFERENCE_VARIANT]
    report: dict[str, Any] = {
        "model": spec.name,
        "source": str(engine.models.source),
        "pairs": pairs_count,
        "seed": seed,
        "settings": {
            "steps": defaults.steps,
            "guidance": defaults.guidance,
            "guidance_kind": spec.guidance_kind,
            "size": defaults.width,
        },
        "variants": {},
        "vae_psnr_db": round(vae_psnr(engine, pairs, seed), 2),
        "t5_position_sensitivity": round(t5_sensitivity(engine, pairs), 4),
        "bf16_shapes_read": dict(sorted(shapes_read.items())),
        "bf16_binding": dict(binding.most_common()),
    }
    for variant, lists in per_variant.items():
        entry = {k: round(statistics.fmean(v), 3) if v else None for k, v in lists.items()}
        if variant in quality and quality[variant]["psnr"]:
            entry["psnr_vs_bf16_db"] = round(statistics.fmean(quality[variant]["psnr"]), 2)
            entry["ssim_vs_bf16"] = round(statistics.fmean(quality[variant]["ssim"]), 4)
            entry["min_psnr_vs_bf16_db"] = round(min(quality[variant]["psnr"]), 2)
            entry["verdict_changed"] = changed[variant]
        report["variants"][variant] = entry
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"model {report['model']}: {report['pairs']} held-out prompt/seed pairs, "
        f"settings {report['settings']}",
        f"VAE reconstruction PSNR (held-out scenes, bf16): {report['vae_psnr_db']:.2f} dB",
        "BF16 T5 position sensitivity (a colour's output moved when its shape moves): "
        f"{report['t5_position_sensitivity']:.2%}",
        "variant  one-shape right  shape identity  two-shape binding  PSNR vs BF16  SSIM  changed",
    ]
    for variant, e in report["variants"].items():
        lines.append(
            f"{variant:7}  {e['one_right']:15.0%}  {e['shape']:14.0%}  {e['two_bound']:17.0%}  "
            + (
                f"{e['psnr_vs_bf16_db']:9.2f} dB  {e['ssim_vs_bf16']:.4f}  {e['verdict_changed']:7}"
                if "psnr_vs_bf16_db" in e
                else f"{'-':>12}  {'-':>6}  {'-':>7}"
            )
        )
    lines.append(
        "BF16 one-shape images, prompted -> read: "
        + ", ".join(f"{k} {n}" for k, n in report["bf16_shapes_read"].items())
    )
    lines.append(
        "BF16 two-shape images: " + ", ".join(f"{k} {n}" for k, n in report["bf16_binding"].items())
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.bench.micro_quality", description=__doc__)
    parser.add_argument("--model", default=MICRO_MODEL, help="micro, or a micro pipeline folder")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.pairs < 2:  # the second half of the pairs has two shapes: fewer has none
        parser.error(f"--pairs must be at least 2, not {args.pairs}")
    logging.basicConfig(level=logging.WARNING)
    # bitsandbytes warns on every int8 matmul that it casts bf16 inputs to fp16.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    spec = MODELS[MICRO_MODEL]
    if args.model != MICRO_MODEL:
        spec = ModelSpec(**{**spec.__dict__, "name": args.model, "source": args.model})
    report = evaluate(spec, args.pairs, args.seed)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.write(format_report(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
