"""The generation engine: one prompt, one image per variant, every variant measured.

``Engine.generate`` validates its input before any work, then runs the variants one
after the other (one accelerator job at a time, serialized by a lock), each with a
fresh CPU generator seeded identically, so the only difference between the images is
quantization. Per variant it records seconds and memory (see ``VariantResult``); for the
quantized variants the PSNR, SSIM and FLIP mean error of their image against the BF16
one (``core.engine.perceptual``, at the viewing conditions of ``core.records.FLIP_PPD``).
The command line is ``core.engine.cli`` (``python -m core.engine``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import time
from typing import Any

import torch

from core.checkpoints.micro import vocabulary
from core.config import REFERENCE_VARIANT, VARIANT_NAMES, ModelSpec, resolve_model
from core.engine import perceptual
from core.engine.loading import ModelSet, cuda_available, load_models
from core.engine.measure import measure, release_memory
from core.errors import (
    GenerationFailedError,
    GenerationOutOfMemoryError,
    PromptOutOfVocabularyError,
    SpotError,
)
from core.limits import GenerationSettings, validate_prompt
from core.records import Generation, ProgressCallback, VariantResult
from core.settings import check_max_gpu_memory

logger = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "bitsandbytes", "accelerate")


def library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in VERSIONED_PACKAGES}


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def pipeline_arguments(spec: ModelSpec, settings: GenerationSettings) -> dict[str, Any]:
    """The keyword arguments of one pipeline call besides the prompt, generator and callback.

    Everything that shapes the image comes from the settings (and, for what a model
    declares in its spec, from the spec): a model that needs more arguments adds them here.
    Guidance is the guidance embedding's scale, or, for a model that declares
    ``guidance_kind="true_cfg"``, true classifier-free guidance against an empty negative
    prompt (two transformer passes per step when above 1).
    """
    if spec.guidance_kind == "true_cfg":
        guidance: dict[str, Any] = {"true_cfg_scale": settings.guidance, "negative_prompt": ""}
    else:
        guidance = {"guidance_scale": settings.guidance}
    return {
        "num_inference_steps": settings.steps,
        **guidance,
        "width": settings.width,
        "height": settings.height,
        "max_sequence_length": settings.max_sequence_length,
    }


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
        max_host_memory_gb: float | None = None,
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
                max_host_memory_gb=max_host_memory_gb,
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

    def covers(self, prompt: str, max_sequence_length: int) -> bool:
        """Whether the model can draw ``prompt`` read at ``max_sequence_length`` T5 tokens:
        for a model with a known vocabulary (micro), every word and symbol is one it was
        trained on and nothing is cut; any prompt for the others."""
        if self.spec.kind != "micro":
            return True
        return vocabulary.covers(prompt, max_sequence_length)

    def check_prompt(self, prompt: str, settings: GenerationSettings) -> str:
        """What of ``prompt`` the T5 encoder would not read: the text past
        ``settings.max_sequence_length`` tokens ("" when it all fits), read with the model's
        own tokenizer (the pipeline truncates there and only logs it).

        A model with a known vocabulary (micro) draws only the prompts it was trained on:
        for it, a word or symbol it never saw, or a prompt longer than it reads, raises
        PromptOutOfVocabularyError (naming them, with a nearby prompt it can draw). Other
        models take any text.
        """
        if self.spec.kind == "micro":
            problem = vocabulary.refusal(prompt, settings.max_sequence_length)
            if problem is not None:
                raise PromptOutOfVocabularyError(problem)
        tokenizer = next(iter(self.models.pipelines.values())).tokenizer_2
        ids = tokenizer(prompt, truncation=False, add_special_tokens=True).input_ids
        limit = settings.max_sequence_length
        if len(ids) <= limit:
            return ""
        # The pipeline keeps limit - 1 tokens and the end-of-text token.
        return tokenizer.decode(ids[limit - 1 :], skip_special_tokens=True).strip()

    def generate(
        self,
        prompt: str,
        settings: GenerationSettings,
        progress: ProgressCallback | None = None,
    ) -> Generation:
        """Make one image per variant; raises a named error on bad input before any work
        (a prompt outside a micro model's vocabulary included: ``check_prompt``).

        Raises GenerationOutOfMemoryError when a variant runs out of accelerator memory
        (memory is released first, so the next call works) and GenerationFailedError for
        any other failure inside a pipeline.
        """
        prompt = validate_prompt(prompt)
        settings = settings.validate(self.spec)
        self.check_prompt(prompt, settings)
        with self._lock:
            results: dict[str, VariantResult] = {}
            shared_bytes = self.models.shared_weight_bytes()
            for variant in self.models.variants:
                results[variant] = self._run_variant(
                    variant, prompt, settings, shared_bytes, progress
                )
            # Everything loaded, on the device between calls: the resident trio's figure.
            # Read after the calls, like each variant's weight bytes: on the CPU,
            # bitsandbytes repacks NF4's quantization state at its first forward.
            resident_bytes = self.models.device_bytes()
            reference = results.get(REFERENCE_VARIANT)
            if reference is not None:
                for variant, result in results.items():
                    if variant != REFERENCE_VARIANT:
                        figures = perceptual.image_metrics(reference.image, result.image)
                        result.psnr = figures.psnr_db
                        result.ssim = figures.ssim
                        result.flip_mean = figures.flip_mean
            return Generation(
                prompt=prompt,
                settings=settings,
                model=self.spec.name,
                device=self.device_label,
                placement=self.models.placement,
                results=results,
                versions=dict(self.versions),
                created_at=time.time(),
                resident_weight_bytes=resident_bytes,
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
        # Its own and the shared modules' bytes already on the device before the call: with
        # the activation peak, what this variant would peak at alone with this placement.
        on_device_before = self.models.device_bytes(variant)

        def on_step_end(pipeline: object, step: int, timestep: object, kwargs: dict) -> dict:
            if progress is not None:
                progress(variant, step + 1, settings.steps)
            return kwargs

        failure: str | None = None
        try:
            with measure(device) as measured, torch.inference_mode():
                image = pipe(
                    prompt,
                    **pipeline_arguments(self.spec, settings),
                    # A fresh CPU generator per variant: identical noise whatever the device.
                    generator=torch.Generator("cpu").manual_seed(settings.seed),
                    callback_on_step_end=on_step_end,
                ).images[0]
        except torch.OutOfMemoryError:
            failure = "oom"
        except SpotError:
            raise
        except Exception as exc:
            logger.exception("the %s variant failed", variant)
            failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if failure is not None:
            # Outside the except block: the exception, its traceback and the frames holding
            # the call's activations are gone, so releasing memory frees them; the raised
            # error carries no context that would keep them alive.
            self.models.settle(variant)
            release_memory(device)
            if failure == "oom":
                raise GenerationOutOfMemoryError(
                    f"the {variant} variant ran out of GPU memory at "
                    f"{settings.width}x{settings.height}; memory was released. Try a smaller "
                    "size, or start the app with --offload model or --offload group."
                )
            raise GenerationFailedError(f"the {variant} variant failed: {failure}")
        activation = measured.activation_peak_bytes
        growth = measured.reserved_growth_bytes
        return VariantResult(
            variant=variant,
            image=image,
            seconds=measured.seconds,
            weight_bytes=self.models.weight_bytes(variant),
            shared_weight_bytes=shared_bytes,
            peak_allocated_bytes=measured.peak_allocated_bytes,
            peak_reserved_bytes=measured.peak_reserved_bytes,
            peak_rss_bytes=measured.peak_rss_bytes,
            activation_peak_bytes=activation,
            # In the seed's terms (max_memory_reserved): what this variant's own and the shared
            # modules hold on the device, plus how far the reserved peak rose during its call.
            standalone_peak_bytes=None if growth is None else on_device_before + growth,
        )
