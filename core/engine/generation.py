"""The generation engine: one prompt, one image per variant, every variant measured.

``Engine.generate`` validates its input before any work, then runs the variants one
after the other (one accelerator job at a time, serialized by a lock), each with a
fresh CPU generator seeded identically, so the only difference between the images is
quantization. Per variant it records seconds, weight bytes and peak memory; for the
quantized variants the PSNR and SSIM of their image against the BF16 one.

Command line::

    python -m core.engine --model tiny --prompt "a red fox in snow" --seed 7 --out DIR
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import sys
import threading
import time
from pathlib import Path

import torch

from core.config import (
    MIB,
    OFFLOAD_CHOICES,
    REFERENCE_VARIANT,
    VARIANT_NAMES,
    GenerationSettings,
    ModelSpec,
    check_max_gpu_memory,
    resolve_model,
    validate_prompt,
)
from core.engine import metrics
from core.engine.measure import measure, release_memory
from core.engine.models import ModelSet, cuda_available, load_models
from core.errors import GenerationFailedError, GenerationOutOfMemoryError, SpotError
from core.records import Generation, ProgressCallback, VariantResult

logger = logging.getLogger(__name__)

# progress(variant, step, total_steps): called after every denoising step.

VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "bitsandbytes", "accelerate")


def library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in VERSIONED_PACKAGES}


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def guidance_arguments(spec: ModelSpec, guidance: float) -> dict[str, object]:
    """FluxPipeline keyword arguments for ``guidance``: the guidance embedding's scale, or,
    for a model that declares ``guidance_kind="true_cfg"``, true classifier-free guidance
    against an empty negative prompt (two transformer passes per step when above 1)."""
    if spec.guidance_kind == "true_cfg":
        return {"true_cfg_scale": guidance, "negative_prompt": ""}
    return {"guidance_scale": guidance}


class Engine:
    """Generates one image per variant from a prompt, measuring each variant honestly."""

    def __init__(self, models: ModelSet) -> None:
        self.models = models
        self._lock = threading.Lock()
        self.versions = library_versions()
        self.device_label = describe_device(models.device)

    @classmethod
    def load(
        cls,
        model: str | ModelSpec = "auto",
        *,
        variants: tuple[str, ...] | list[str] = VARIANT_NAMES,
        device: str | None = None,
        offload: str = "auto",
        max_gpu_memory_gb: float | None = None,
    ) -> Engine:
        spec = (
            model
            if isinstance(model, ModelSpec)
            else resolve_model(model, cuda_available=cuda_available())
        )
        return cls(
            load_models(
                spec,
                variants=variants,
                device=device,
                offload=offload,
                max_gpu_memory_gb=check_max_gpu_memory(max_gpu_memory_gb),
            )
        )

    @property
    def spec(self) -> ModelSpec:
        return self.models.spec

    @property
    def variants(self) -> tuple[str, ...]:
        """The variants this engine generates, in generation order."""
        return self.models.variants

    @property
    def busy(self) -> bool:
        """True while a generation is running."""
        return self._lock.locked()

    def default_settings(self, seed: int = 0) -> GenerationSettings:
        return GenerationSettings.defaults(self.spec, seed)

    def generate(
        self,
        prompt: str,
        settings: GenerationSettings,
        progress: ProgressCallback | None = None,
    ) -> Generation:
        """Make one image per variant; raises a named error on bad input before any work.

        Raises GenerationOutOfMemoryError when a variant runs out of accelerator memory
        (memory is released first, so the next call works) and GenerationFailedError for
        any other failure inside a pipeline.
        """
        prompt = validate_prompt(prompt)
        settings = settings.validate(self.spec)
        with self._lock:
            results: dict[str, VariantResult] = {}
            shared_bytes = self.models.shared_weight_bytes()
            for variant in self.models.variants:
                results[variant] = self._run_variant(
                    variant, prompt, settings, shared_bytes, progress
                )
            reference = results.get(REFERENCE_VARIANT)
            if reference is not None:
                for variant, result in results.items():
                    if variant != REFERENCE_VARIANT:
                        result.psnr = metrics.psnr(reference.image, result.image)
                        result.ssim = metrics.ssim(reference.image, result.image)
            return Generation(
                prompt=prompt,
                settings=settings,
                model=self.spec.name,
                device=self.device_label,
                placement=self.models.placement,
                results=results,
                versions=dict(self.versions),
                created_at=time.time(),
            )

    def _run_variant(
        self,
        variant: str,
        prompt: str,
        settings: GenerationSettings,
        shared_bytes: int,
        progress: ProgressCallback | None,
    ) -> VariantResult:
        device = self.models.device
        pipe = self.models.prepare(variant)

        def on_step_end(pipeline: object, step: int, timestep: object, kwargs: dict) -> dict:
            if progress is not None:
                progress(variant, step + 1, settings.steps)
            return kwargs

        guidance = guidance_arguments(self.spec, settings.guidance)
        try:
            with measure(device) as measured, torch.inference_mode():
                image = pipe(
                    prompt,
                    num_inference_steps=settings.steps,
                    **guidance,
                    width=settings.width,
                    height=settings.height,
                    max_sequence_length=settings.max_sequence_length,
                    # A fresh CPU generator per variant: identical noise whatever the device.
                    generator=torch.Generator("cpu").manual_seed(settings.seed),
                    callback_on_step_end=on_step_end,
                ).images[0]
        except torch.OutOfMemoryError as exc:
            del exc  # drop the traceback's references to the tensors before releasing
            release_memory(device)
            raise GenerationOutOfMemoryError(
                f"the {variant} variant ran out of GPU memory at "
                f"{settings.width}x{settings.height}; "
                "memory was released. Try a smaller size, or start the app with --offload model "
                "or --offload group."
            ) from None
        except SpotError:
            raise
        except Exception as exc:
            release_memory(device)
            raise GenerationFailedError(f"the {variant} variant failed: {exc}") from exc
        return VariantResult(
            variant=variant,
            image=image,
            seconds=measured.seconds,
            weight_bytes=self.models.weight_bytes(variant),
            shared_weight_bytes=shared_bytes,
            peak_allocated_bytes=measured.peak_allocated_bytes,
            peak_reserved_bytes=measured.peak_reserved_bytes,
            peak_rss_bytes=measured.peak_rss_bytes,
        )


# --- Command line -------------------------------------------------------------------------


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:,.1f}"


def format_table(generation: Generation) -> str:
    """A short per-variant table of the generation's figures (MiB, seconds, dB)."""
    rows = [
        (
            "variant",
            "seconds",
            "weights MiB",
            "peak alloc MiB",
            "peak rsv MiB",
            "peak RSS MiB",
            "PSNR dB",
            "SSIM",
        )
    ]
    for name, r in generation.results.items():
        rows.append(
            (
                name,
                f"{r.seconds:.2f}",
                _mib(r.weight_bytes),
                _mib(r.peak_allocated_bytes),
                _mib(r.peak_reserved_bytes),
                _mib(r.peak_rss_bytes),
                "-" if r.psnr is None else f"{r.psnr:.2f}",
                "-" if r.ssim is None else f"{r.ssim:.4f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    shared = next(iter(generation.results.values())).shared_weight_bytes
    lines.append(
        f"shared components (CLIP + VAE): {_mib(shared)} MiB; model {generation.model}; "
        f"device {generation.device}; placement {generation.placement}"
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.engine",
        description="Generate one image per variant (bf16, int8, nf4) and write their stats.",
    )
    parser.add_argument(
        "--model", default="auto", help="auto, tiny, a hub id or a local diffusers folder"
    )
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="default: the model's")
    parser.add_argument("--guidance", type=float, help="default: the model's")
    parser.add_argument("--width", type=int, help="default: the model's")
    parser.add_argument("--height", type=int, help="default: the model's")
    parser.add_argument("--max-sequence-length", type=int, help="default: the model's")
    parser.add_argument("--variants", default=",".join(VARIANT_NAMES), help="comma-separated")
    parser.add_argument("--offload", choices=OFFLOAD_CHOICES, default="auto")
    parser.add_argument("--max-gpu-memory", type=float, metavar="GB", help="cap on GPU memory")
    parser.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the PNGs and stats.json"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        engine = Engine.load(
            args.model,
            variants=[v.strip() for v in args.variants.split(",") if v.strip()],
            device=args.device,
            offload=args.offload,
            max_gpu_memory_gb=args.max_gpu_memory,
        )
        overrides = {
            "steps": args.steps,
            "guidance": args.guidance,
            "width": args.width,
            "height": args.height,
            "max_sequence_length": args.max_sequence_length,
        }
        settings = engine.default_settings(args.seed).with_(
            **{k: v for k, v in overrides.items() if v is not None}
        )
        generation = engine.generate(args.prompt, settings)
    except SpotError as exc:
        logger.error("%s", exc)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name, result in generation.results.items():
        result.image.save(args.out / f"{name}.png")
    stats = generation.stats()
    stats["load_seconds"] = engine.models.load_seconds
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2, allow_nan=False, default=str))
    sys.stdout.write(format_table(generation) + "\n")
    sys.stdout.write(
        f"wrote {', '.join(f'{n}.png' for n in generation.results)} and stats.json to {args.out}\n"
    )
    return 0
