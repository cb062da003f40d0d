"""Train the micro model from scratch on drawn scenes and write a FluxPipeline folder.

    python -m core.checkpoints.micro.train --out assets/micro-flux --seed 14

Three phases, each resumable from the state it saves every few minutes (``--state``,
default ``<out>.state``; a rerun with the same arguments continues where it stopped):

1. the VAE, on freshly drawn 128-pixel scenes or random square crops of them (``vae_crop``:
   the VAE is convolutional, so a 64-pixel crop teaches it at about a third of a whole
   scene's cost); MSE + L1 on pixels, shape pixels weighted 4x; in the second half, a little
   noise on the latents so the decoder forgives the transformer's errors;
   then every training scene is encoded once, and the latent mean and spread become the
   VAE's ``shift_factor`` and ``scaling_factor``;
2. the transformer with both text encoders, by rectified flow on those cached latents
   (noise levels weighted towards pure noise, tokens that hold a shape weighted up to 4x,
   10% empty prompts for classifier-free guidance, bf16 autocast, AdamW with warmup and
   cosine decay, an exponential moving average of the weights, which is what gets written);
   with ``binding_steps``, the T5 encoder first learns alone to carry each phrase's words
   on every token of the phrase (``binding.py``), and with ``binding_weight`` that
   objective stays beside the denoising loss;
3. the VAE decoder alone (``decoder_steps``), encoder frozen, so the latents phase 2
   learned stay valid.

``--init DIR`` warm-starts from a micro pipeline folder instead: its VAE (and latent
scaling) is kept, phase 1 is skipped, and phase 2 starts from its transformer and text
encoders with a fresh optimizer (``--lr`` sets the peak rate), after the binding pre-phase
if there is one.

Everything random comes from ``--seed``: scene ``i`` from a generator named by
(seed, i), every step's batch and noise from a generator seeded by (seed, phase, step),
so a resumed run takes the same batches as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel
from tqdm import tqdm

from core.checkpoints.micro import cli, components
from core.checkpoints.micro.binding import IGNORE, BindingHead, evaluating, label_tensor
from core.checkpoints.micro.dataset import random_crops, token_ids, training_images
from core.checkpoints.micro.scenes import IMAGE_SIZE
from core.checkpoints.micro.writer import write_pipeline

logger = logging.getLogger(__name__)

CLIP_LENGTH = 77  # FluxPipeline pads CLIP prompts to the tokenizer's model_max_length
CFG_DROPOUT = 0.1
AUTOCAST = torch.bfloat16
CROP_PHASE = 5  # step_generator phase of phase 1's crop offsets (1-4 are taken)


@dataclass(frozen=True)
class Budget:
    """How much training: steps and batch sizes of both phases, and the scene count."""

    vae_steps: int
    vae_batch: int
    vae_lr: float
    scenes: int
    steps: int
    batch: int
    lr: float
    warmup: int
    ema: float
    save_every_seconds: float
    decoder_steps: int = 0
    # Phase 1 trains on square crops of this many pixels (0: whole 128-pixel scenes). The VAE
    # is convolutional, so a 64-pixel crop costs about a third of a scene: on two threads, a
    # batch-16 step took 0.36 s on crops (the ``full`` run, 604 s for 1700 steps) against
    # 1.19 s on whole scenes (the run before, 620 s for 520; README).
    vae_crop: int = 0
    # Share of the denoiser's noise levels drawn from the plain logit-normal (mean logit 0,
    # half of them below 0.5) instead of ``_noise_levels``' mixture: more training where
    # edges and corners are drawn. 0 in the budgets; set with ``--low-noise-share``. Tried
    # at 0.5 on a warm start of the shipped model, it recognised fewer shapes than 0 (README).
    low_noise_share: float = 0.0
    # The T5 binding objective (``binding.py``): steps of T5 + head alone before the
    # denoiser (whenever phase 2 starts anew, warm starts included, but not on resume),
    # and its weight beside the denoising loss.
    binding_steps: int = 0
    binding_weight: float = 0.0


BUDGETS: dict[str, Budget] = {
    # 59 minutes from scratch on the 2-core dev machine (AMD EPYC, AVX-512 with bf16, no
    # GPU), two torch threads (README): VAE on 64-pixel crops 604 s; encoding the scenes, the
    # binding pre-phase and start-up about 5 minutes; denoiser 2,303 s (0.68 s a step);
    # decoder 328 s. On the checker (100 held-out pairs): one-shape 100%, shape identity 74%,
    # binding 100%, VAE 33.52 dB: all four targets. The run before, on whole scenes (520 VAE
    # steps, 500 decoder steps, 58 minutes), reached 28.15 dB and 56% shapes.
    "full": Budget(
        vae_steps=1700,
        vae_batch=16,
        vae_lr=2e-3,
        vae_crop=64,
        scenes=16_000,
        steps=3400,
        batch=32,
        lr=8e-4,
        warmup=150,
        ema=0.998,
        save_every_seconds=240.0,
        decoder_steps=350,
        binding_steps=1000,
        binding_weight=0.1,
    ),
    # Seconds: for tests and smoke runs; the model it writes is untrained.
    "smoke": Budget(
        vae_steps=2,
        vae_batch=2,
        vae_lr=1e-3,
        scenes=8,
        steps=2,
        batch=2,
        lr=6e-4,
        warmup=1,
        ema=0.9,
        save_every_seconds=0.0,
        decoder_steps=2,
    ),
}


def step_generator(seed: int, phase: int, step: int) -> torch.Generator:
    """The generator of one step of one phase: a function of (seed, phase, step) only, so a
    resumed run draws what an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 1_000_003 + phase * 100_000 + step)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """The learning rate at ``step`` of ``total`` as a share of the peak: linear warm-up over
    ``warmup`` steps, then a cosine decay to a tenth of the peak at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def resume(path: Path, key: str, module: torch.nn.Module, optimizer: Any) -> tuple[int, float]:
    """Load ``module`` (under ``key``) and ``optimizer`` from the state file ``path`` if it
    exists; return (steps done, seconds spent), (0, 0.0) for a fresh start."""
    if not path.is_file():
        return 0, 0.0
    state = torch.load(path, weights_only=False)
    module.load_state_dict(state[key])
    optimizer.load_state_dict(state["optimizer"])
    logger.info("%s: resuming at step %d", path.name, state["step"])
    return state["step"], state["seconds"]


def checkpoint(
    path: Path, key: str, module: torch.nn.Module, optimizer: Any, done: int, began: float
) -> None:
    """Save what ``resume`` loads: ``module`` under ``key``, ``optimizer``, the steps done
    and the seconds since ``began`` (a ``time.perf_counter`` value)."""
    _save(
        path,
        {
            key: module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": done,
            "seconds": time.perf_counter() - began,
        },
    )


def _foreground_weights(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel loss weights: 4 on shapes, 1 on the background (the corner pixel's colour,
    which no shape ever reaches), so the few shape pixels are not drowned by flat colour."""
    corner = x[:, :, :1, :1]
    return 1.0 + 3.0 * ((x - corner).abs().sum(1, keepdim=True) > 0.1).float()


def pixel_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction loss of images ``y`` against ``x`` (both in [-1, 1]): MSE + 0.5 L1 per
    pixel, shape pixels weighted 4x (``_foreground_weights``), normalized by the weights."""
    weights = _foreground_weights(x)
    per_pixel = ((y - x) ** 2 + 0.5 * (y - x).abs()).mean(1, keepdim=True)
    return (weights * per_pixel).mean() / weights.mean()


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image of two batches in [-1, 1] (computed on rounded 0-255
    values), as an (N,) tensor."""
    a = ((a.float().clamp(-1, 1) + 1) * 127.5).round()
    b = ((b.float().clamp(-1, 1) + 1) * 127.5).round()
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(255.0**2 / mse)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR in dB of two image batches in [-1, 1] (``psnr_per_image``, averaged)."""
    return float(psnr_per_image(a, b).mean())


# --- Phase 1: the VAE --------------------------------------------------------------------


def train_vae(seed: int, budget: Budget, state_dir: Path) -> tuple[Any, dict[str, float]]:
    """Train (or resume) the VAE; return it with its figures."""
    vae = components.vae().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=budget.vae_lr, weight_decay=0.0)
    path = state_dir / "vae.pt"
    start, seconds = resume(path, "model", vae, optimizer)
    vae.train()
    began, last_save = time.perf_counter() - seconds, time.perf_counter()
    bar = tqdm(
        range(start, budget.vae_steps),
        desc="VAE",
        initial=start,
        total=budget.vae_steps,
        mininterval=15,
    )
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = budget.vae_lr * lr_factor(step, budget.vae_steps, 20)
        first = step * budget.vae_batch
        x = training_images(seed, range(first, first + budget.vae_batch))
        x = random_crops(x, budget.vae_crop, step_generator(seed, CROP_PHASE, step))
        with torch.autocast("cpu", dtype=AUTOCAST):
            z = vae.encode(x).latent_dist.mode()
            if step >= budget.vae_steps // 2:
                noise = torch.randn(z.shape, generator=step_generator(seed, 1, step))
                z = z + 0.02 * z.detach().float().std() * noise.to(z.dtype)
            y = vae.decode(z).sample.float()
        loss = pixel_loss(y, x) + 1e-4 * z.float().pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done == budget.vae_steps or time.perf_counter() - last_save > budget.save_every_seconds:
            checkpoint(path, "model", vae, optimizer, done, began)
            last_save = time.perf_counter()
    bar.close()
    vae.eval()
    figures = {"vae_seconds": round(time.perf_counter() - began, 1)}
    return vae, figures


@torch.no_grad()
def encode_scenes(vae: Any, seed: int, budget: Budget, state_dir: Path) -> torch.Tensor:
    """Latent means (N, C, h, w) of the ``budget.scenes`` training scenes, cached on disk."""
    path = state_dir / "latents.pt"
    if path.is_file():
        return torch.load(path)
    chunks = []
    for first in tqdm(range(0, budget.scenes, 64), desc="encode"):
        x = training_images(seed, range(first, min(budget.scenes, first + 64)))
        with torch.autocast("cpu", dtype=AUTOCAST):
            chunks.append(vae.encode(x).latent_dist.mode().float())
    latents = torch.cat(chunks)
    _save(path, latents)
    return latents


# --- Phase 2: transformer and text encoders -----------------------------------------------


def _noise_levels(count: int, generator: torch.Generator, low_share: float = 0.0) -> torch.Tensor:
    """Noise levels in (0, 1): a logit-normal shifted towards noise (mean logit ln 3, as
    SD3's shift 3), mixed with 30% uniform levels. An 8x8-token picture shows its colours
    through much of the noise, so only levels near 1 teach the model to read the prompt;
    the plain logit-normal (0.2% above 0.95) left the first run ignoring it.

    With ``low_share`` > 0, that share of the levels is replaced by plain logit-normal ones
    (more of them low, where edges and corners are decided); with 0 the draws, and so the
    levels, are exactly those above."""
    shifted = torch.sigmoid(torch.randn(count, generator=generator) + math.log(3.0))
    uniform = torch.rand(count, generator=generator)
    pick = torch.rand(count, generator=generator) < 0.3
    levels = torch.where(pick, uniform, shifted)
    if low_share > 0:
        plain = torch.sigmoid(torch.randn(count, generator=generator))
        levels = torch.where(torch.rand(count, generator=generator) < low_share, plain, levels)
    return levels.clamp(1e-3, 1.0 - 1e-4)


class _Ema:
    """An exponential moving average of some parameters, kept in fp32."""

    def __init__(self, modules: list[torch.nn.Module], decay: float) -> None:
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, self.params, strict=True):
            s.lerp_(p.detach().float(), 1 - decay)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for s, p in zip(self.shadow, self.params, strict=True):
            p.copy_(s)


def _token_weights(x0: torch.Tensor) -> torch.Tensor:
    """Per-token loss weights (B, tokens) for packed latents: 1 on the background, rising to
    4 on the tokens that hold a shape. The background is each picture's median token (shapes
    never cover half the picture); a token's distance from it is its RMS over channels, in
    units of the scaled latents, where flat background reads under 0.25 and shapes mostly
    0.4-2."""
    distance = (x0 - x0.median(1, keepdim=True).values).pow(2).mean(-1).sqrt()
    return 1.0 + 3.0 * ((distance - 0.25) / 0.35).clamp(0.0, 1.0)


def _initial_weights(modules: list[torch.nn.Module], init: Path) -> None:
    """Load the transformer, CLIP and T5 weights of the pipeline folder ``init``."""
    from transformers import CLIPTextModel, T5EncoderModel

    loaded = [
        FluxTransformer2DModel.from_pretrained(init / "transformer", torch_dtype=torch.float32),
        CLIPTextModel.from_pretrained(init / "text_encoder", torch_dtype=torch.float32),
        T5EncoderModel.from_pretrained(init / "text_encoder_2", torch_dtype=torch.float32),
    ]
    for module, source in zip(modules, loaded, strict=True):
        module.load_state_dict(source.state_dict())


BINDING_LR = 1e-3  # the binding pre-phase's rate (T5 + head only; converges in ~1000 steps)
BINDING_PHASE = 4  # step_generator phase of the binding pre-phase
BINDING_PROBE = 512  # training prompts the binding figures are measured on


@torch.no_grad()
def _binding_loss(
    text_encoder_2: torch.nn.Module, head: BindingHead, t5_ids: torch.Tensor, labels: torch.Tensor
) -> float:
    """The binding objective (nats) on the first ``BINDING_PROBE`` training prompts, in
    fp32 with the encoder in eval mode (no dropout); its mode is restored."""
    with evaluating(text_encoder_2), torch.autocast("cpu", enabled=False):
        encoded = text_encoder_2(t5_ids[:BINDING_PROBE])[0]
    return float(head.loss(encoded, labels[:BINDING_PROBE]))


def train_binding(
    text_encoder_2: torch.nn.Module,
    head: BindingHead,
    t5_ids: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
    budget: Budget,
) -> float | None:
    """The binding pre-phase: ``budget.binding_steps`` AdamW steps of the T5 encoder (bf16
    autocast) and ``head`` alone on ``binding.py``'s objective, batch ``budget.batch``,
    constant rate ``BINDING_LR``. Return ``_binding_loss`` after it, or None with no steps
    (then nothing is touched)."""
    if budget.binding_steps == 0:
        return None
    params = [*text_encoder_2.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=BINDING_LR, weight_decay=0.0)
    for step in tqdm(range(budget.binding_steps), desc="binding", mininterval=15):
        g = step_generator(seed, BINDING_PHASE, step)
        idx = torch.randint(len(t5_ids), (budget.batch,), generator=g)
        with torch.autocast("cpu", dtype=AUTOCAST):
            encoded = text_encoder_2(t5_ids[idx])[0]
        head.loss(encoded, labels[idx]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    loss = _binding_loss(text_encoder_2, head, t5_ids, labels)
    logger.info("binding pre-phase: %d steps, loss %.4f", budget.binding_steps, loss)
    return loss


def train_denoiser(
    latents: torch.Tensor,
    prompts: list[str],
    seed: int,
    budget: Budget,
    state_dir: Path,
    init: Path | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Train (or resume) transformer + T5 + CLIP on cached latents (already scaled),
    starting from the weights of the pipeline folder ``init`` when one is given."""
    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = components.clip_tokenizer(), components.t5_tokenizer()
    transformer = components.transformer()
    text_encoder = components.text_encoder(len(tokenizer))
    text_encoder_2 = components.text_encoder_2(len(tokenizer_2))
    modules = [transformer, text_encoder, text_encoder_2]
    if init is not None:
        _initial_weights(modules, init)
    with torch.random.fork_rng(devices=[]):  # the global draws (T5 dropout) stay as before
        head = BindingHead(components.T5_DIM)
    params = [p for m in [*modules, head] for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=budget.lr, weight_decay=0.0, betas=(0.9, 0.99))

    clip_ids = token_ids(tokenizer, prompts, CLIP_LENGTH)
    t5_ids = token_ids(tokenizer_2, prompts, components.MAX_SEQUENCE_LENGTH)
    empty_clip = token_ids(tokenizer, [""], CLIP_LENGTH)
    empty_t5 = token_ids(tokenizer_2, [""], components.MAX_SEQUENCE_LENGTH)
    labels = label_tensor(tokenizer_2, t5_ids)
    n, c, h, w = latents.shape
    packed = FluxPipeline._pack_latents(latents, n, c, h, w)
    img_ids = FluxPipeline._prepare_latent_image_ids(n, h // 2, w // 2, "cpu", torch.float32)
    txt_ids = torch.zeros(components.MAX_SEQUENCE_LENGTH, 3)

    path = state_dir / "denoiser.pt"
    start, seconds = 0, 0.0
    state = torch.load(path, weights_only=False) if path.is_file() else None
    running = None  # the smoothed denoising loss, carried across a resume
    if state is not None and "binding_head" not in state:
        raise ValueError(
            f"{path} was written by an older version of this command (no binding head); "
            "delete it to start phase 2 again"
        )
    if state is not None:
        for module, sd in zip(modules, state["models"], strict=True):
            module.load_state_dict(sd)
        optimizer.load_state_dict(state["optimizer"])
        head.load_state_dict(state["binding_head"])
        start, seconds = state["step"], state["seconds"]
        binding_loss = state["binding_pre_loss"]
        running = state.get("loss")  # None in a state written before it held the loss
        logger.info("denoiser: resuming at step %d", start)
    else:
        binding_loss = train_binding(text_encoder_2, head, t5_ids, labels, seed, budget)
    ema = _Ema(modules, budget.ema)  # after the pre-phase: the average starts from its T5
    if state is not None:
        ema.shadow = state["ema"]
    for m in modules:
        m.train()
    began, last_save = time.perf_counter() - seconds, time.perf_counter()
    bar = tqdm(
        range(start, budget.steps),
        desc="denoiser",
        initial=start,
        total=budget.steps,
        mininterval=15,
    )
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = budget.lr * lr_factor(step, budget.steps, budget.warmup)
        g = step_generator(seed, 2, step)
        idx = torch.randint(n, (budget.batch,), generator=g)
        drop = torch.rand(budget.batch, generator=g) < CFG_DROPOUT
        clip_batch = torch.where(drop[:, None], empty_clip, clip_ids[idx])
        t5_batch = torch.where(drop[:, None], empty_t5, t5_ids[idx])
        x0 = packed[idx]
        noise = torch.randn(x0.shape, generator=g)
        sigma = _noise_levels(budget.batch, g, budget.low_noise_share)
        xt = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
        with torch.autocast("cpu", dtype=AUTOCAST):
            pooled = text_encoder(clip_batch).pooler_output
            encoded = text_encoder_2(t5_batch)[0]
            v = transformer(
                hidden_states=xt,
                encoder_hidden_states=encoded,
                pooled_projections=pooled,
                timestep=sigma,
                img_ids=img_ids,
                txt_ids=txt_ids,
                return_dict=False,
            )[0]
        per_token = (v.float() - (noise - x0)).pow(2).mean(-1)
        weights = _token_weights(x0)
        objective = (per_token * weights).sum().div(weights.sum())
        if budget.binding_weight:
            # Dropped prompts are empty: their tokens are outside every phrase.
            kept = torch.where(drop[:, None, None], IGNORE, labels[idx])
            objective = objective + budget.binding_weight * head.loss(encoded, kept)
        objective.backward()
        loss = per_token.mean()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(step)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
        done = step + 1
        if done == budget.steps or time.perf_counter() - last_save > budget.save_every_seconds:
            _save(
                path,
                {
                    "models": [m.state_dict() for m in modules],
                    "optimizer": optimizer.state_dict(),
                    "ema": ema.shadow,
                    "binding_head": head.state_dict(),
                    "binding_pre_loss": binding_loss,
                    "loss": running,
                    "step": done,
                    "seconds": time.perf_counter() - began,
                },
            )
            last_save = time.perf_counter()
            logger.info("denoiser step %d, loss %.4f", done, running)
    bar.close()
    ema.copy_to_params()
    for m in modules:
        m.eval()
    parts = {
        "transformer": transformer,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
    }
    figures = {"denoiser_seconds": round(time.perf_counter() - began, 1), "loss": running}
    if budget.binding_steps or budget.binding_weight:
        figures["binding_pre_loss"] = None if binding_loss is None else round(binding_loss, 4)
        figures["binding_loss"] = round(_binding_loss(text_encoder_2, head, t5_ids, labels), 4)
    return parts, figures


# --- Phase 3: the decoder alone ---------------------------------------------------------------


def finetune_decoder(vae: Any, seed: int, budget: Budget, state_dir: Path) -> dict[str, float]:
    """Fine-tune the VAE decoder with the encoder frozen (the latents the transformer
    learned stay valid), on fresh scenes, weighting shape pixels 4x, with slight latent
    noise (2% of the latents' spread) so the decoder forgives small transformer errors."""
    path = state_dir / "decoder.pt"
    decoder = [*vae.decoder.parameters()]
    for p in decoder:
        p.requires_grad_(True)
    lr = budget.vae_lr / 5  # a fresh optimizer at phase 1's rate first undoes phase 1
    optimizer = torch.optim.AdamW(decoder, lr=lr, weight_decay=0.0)
    start, seconds = resume(path, "decoder", vae.decoder, optimizer)
    vae.decoder.train()
    began, last_save = time.perf_counter() - seconds, time.perf_counter()
    offset = budget.vae_steps * budget.vae_batch  # scenes phase 1 never drew
    bar = tqdm(
        range(start, budget.decoder_steps),
        desc="decoder",
        initial=start,
        total=budget.decoder_steps,
        mininterval=15,
    )
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, budget.decoder_steps, 30)
        first = offset + step * budget.vae_batch
        x = training_images(seed, range(first, first + budget.vae_batch))
        with torch.autocast("cpu", dtype=AUTOCAST):
            with torch.no_grad():
                z = vae.encode(x).latent_dist.mode()
                noise = torch.randn(z.shape, generator=step_generator(seed, 3, step))
                z = z + 0.02 * z.float().std() * noise.to(z.dtype)
            y = vae.decode(z).sample.float()
        loss = pixel_loss(y, x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr(y.detach(), x):.1f}")
        done = step + 1
        if (
            done == budget.decoder_steps
            or time.perf_counter() - last_save > budget.save_every_seconds
        ):
            checkpoint(path, "decoder", vae.decoder, optimizer, done, began)
            last_save = time.perf_counter()
    bar.close()
    vae.eval()
    for p in decoder:
        p.requires_grad_(False)
    return {"decoder_seconds": round(time.perf_counter() - began, 1)}


# --- The command ---------------------------------------------------------------------------


def train(
    out: Path, seed: int, budget: Budget, state_dir: Path, command: str, init: Path | None = None
) -> Path:
    """Run the phases (resuming from ``state_dir``) and write the pipeline to ``out``.

    With ``init`` (a micro pipeline folder) the run is a warm start: its VAE is kept as it
    is (phase 1 skipped, its latent shift and scale kept, so its transformer's latents stay
    valid) and phase 2 starts from its transformer and text encoders."""
    state_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    if init is None:
        vae, vae_figures = train_vae(seed, budget, state_dir)
    else:
        vae = AutoencoderKL.from_pretrained(init / "vae", torch_dtype=torch.float32)
        vae = vae.to(memory_format=torch.channels_last).eval()
        vae_figures = {"init": str(init)}
    for p in vae.parameters():
        p.requires_grad_(False)
    latents = encode_scenes(vae, seed, budget, state_dir)
    if init is None:
        shift = float(latents.mean())
        scale = float(1.0 / latents.std())
        vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    shift, scale = vae.config.shift_factor, vae.config.scaling_factor
    scaled = (latents - shift) * scale
    from core.checkpoints.micro.dataset import training_scene

    prompts = [training_scene(seed, i)[0].prompt() for i in range(budget.scenes)]
    parts, figures = train_denoiser(scaled, prompts, seed, budget, state_dir, init)
    figures.update(finetune_decoder(vae, seed, budget, state_dir))
    provenance = {
        "command": command,
        "seed": seed,
        "budget": asdict(budget),
        **vae_figures,
        **figures,
        "latent_shift": shift,
        "latent_scale": scale,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "wall_seconds_this_run": round(time.perf_counter() - began, 1),
    }
    write_pipeline(
        out,
        {
            **parts,
            "vae": vae.to(memory_format=torch.contiguous_format),
            "scheduler": components.scheduler(),
        },
        provenance,
    )
    logger.info("wrote the micro pipeline to %s", out)
    return out


# The least value of each numeric argument (None, not given, takes the budget's).
ARGUMENT_MINIMUMS: tuple[tuple[str, float], ...] = (
    ("steps", 1),
    ("vae_steps", 1),
    ("vae_batch", 1),
    ("decoder_steps", 0),
    ("binding_steps", 0),
    ("binding_weight", 0.0),
    ("threads", 1),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.checkpoints.micro.train",
        description="Train the micro FLUX model on drawn scenes; write a FluxPipeline folder.",
    )
    parser.add_argument("--out", type=Path, required=True, help="pipeline folder to write")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    parser.add_argument("--steps", type=int, help="denoiser steps (default: the budget's)")
    parser.add_argument("--vae-steps", type=int, help="VAE steps (default: the budget's)")
    parser.add_argument("--vae-batch", type=int, help="scenes per VAE step (default: the budget's)")
    parser.add_argument(
        "--vae-crop",
        type=int,
        help="phase 1 trains on square crops of this many pixels, a multiple of 8; 0 or "
        f"{IMAGE_SIZE}: whole scenes (default: the budget's)",
    )
    parser.add_argument(
        "--decoder-steps", type=int, help="decoder fine-tune steps (default: the budget's)"
    )
    parser.add_argument("--lr", type=float, help="denoiser peak learning rate")
    parser.add_argument(
        "--low-noise-share",
        type=float,
        help="share (0-1) of noise levels from the plain logit-normal (default: the budget's)",
    )
    parser.add_argument(
        "--binding-steps",
        type=int,
        help="steps of the T5 binding pre-phase (binding.py; default: the budget's)",
    )
    parser.add_argument(
        "--binding-weight",
        type=float,
        help="weight of the T5 binding objective in the denoiser phase (default: the budget's)",
    )
    parser.add_argument(
        "--init", type=Path, help="warm start: a micro pipeline folder to continue from"
    )
    cli.add_run_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.low_noise_share is not None and not 0.0 <= args.low_noise_share <= 1.0:
        parser.error(f"--low-noise-share {args.low_noise_share} is not between 0 and 1")
    cli.check_minimums(parser, args, ARGUMENT_MINIMUMS)
    crop = args.vae_crop
    if crop is not None and not (0 <= crop <= IMAGE_SIZE and crop % 8 == 0):
        parser.error(f"--vae-crop must be 0 or a multiple of 8 up to {IMAGE_SIZE}, not {crop}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be positive, not {args.lr}")
    if args.init is not None and not (args.init / "model_index.json").is_file():
        parser.error(f"--init {args.init} is not a pipeline folder")
    state = cli.start_run(args)
    overrides = {
        "steps": args.steps,
        "vae_steps": args.vae_steps,
        "vae_batch": args.vae_batch,
        "vae_crop": args.vae_crop,
        "decoder_steps": args.decoder_steps,
        "lr": args.lr,
        "low_noise_share": args.low_noise_share,
        "binding_steps": args.binding_steps,
        "binding_weight": args.binding_weight,
    }
    budget = replace(BUDGETS[args.budget], **{k: v for k, v in overrides.items() if v is not None})
    line = "python -m core.checkpoints.micro.train " + " ".join(argv)
    train(args.out, args.seed, budget, state, line, args.init)
    sys.stdout.write(json.dumps({"out": str(args.out)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
