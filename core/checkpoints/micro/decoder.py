"""A wider VAE for a trained micro model, in the latent space its transformer already knows.

    python -m core.checkpoints.micro.decoder --teacher DIR/vae --out VAE_DIR --seed 14

Generation only ever runs the VAE's decoder on the transformer's latents, so the decoder
can be replaced without retraining the transformer, as long as it reads the same latents.
This command builds a VAE with ``components.vae()``'s (wider) channels and trains it on
freshly drawn scenes against the teacher, the VAE the transformer was trained with:

- its decoder reconstructs each scene from the *teacher's* latents, with a little latent
  noise (2% of their spread) so it forgives the transformer's small errors; shape pixels
  weigh 4x (``train._foreground_weights``);
- its encoder learns to give the teacher's latents (mean squared error over their
  variance), so encode-then-decode and the training command's cached latents still agree.

The teacher's ``shift_factor`` and ``scaling_factor`` are copied, since the transformer
was trained on latents scaled by them. The state is saved every few minutes in
``--state`` (default ``<out>.state``) and a rerun resumes; every batch and noise is a
function of (seed, step), so a resumed run takes the same batches.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from tqdm import tqdm

from core.checkpoints.micro import cli, components
from core.checkpoints.micro.dataset import training_images
from core.checkpoints.micro.train import (
    AUTOCAST,
    checkpoint,
    lr_factor,
    pixel_loss,
    psnr,
    resume,
    step_generator,
)

logger = logging.getLogger(__name__)

# The phase in ``train.step_generator``'s seeds: 1-3 are train's phases, and 4 is also its
# binding pre-phase (``train.BINDING_PHASE``), which draws batch indices in another command.
PHASE = 4
FIRST_SCENE = 2_000_000  # scene indices this command draws from, apart from training's
LATENT_NOISE = 0.02  # of the latents' spread
PROVENANCE_FILE = "distilled.json"


def distill(
    teacher: AutoencoderKL,
    seed: int,
    steps: int,
    batch: int,
    lr: float,
    state_dir: Path,
    save_every_seconds: float = 240.0,
) -> tuple[AutoencoderKL, dict[str, Any]]:
    """Train (or resume) the wider VAE against ``teacher`` (frozen); return it and figures."""
    student = components.vae().to(memory_format=torch.channels_last)
    student.register_to_config(
        shift_factor=teacher.config.shift_factor, scaling_factor=teacher.config.scaling_factor
    )
    teacher.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "distill.pt"
    start, seconds = resume(path, "model", student, optimizer)
    student.train()
    began, last_save = time.perf_counter() - seconds, time.perf_counter()
    bar = tqdm(range(start, steps), desc="VAE", initial=start, total=steps, mininterval=15)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, steps, 50)
        first = FIRST_SCENE + step * batch
        x = training_images(seed, range(first, first + batch))
        with torch.autocast("cpu", dtype=AUTOCAST):
            with torch.no_grad():
                target = teacher.encode(x).latent_dist.mode().float()
            spread = target.std()
            noise = torch.randn(target.shape, generator=step_generator(seed, PHASE, step))
            y = student.decode((target + LATENT_NOISE * spread * noise).to(AUTOCAST))
            y = y.sample.float()
            z = student.encode(x).latent_dist.mode().float()
        pixels = pixel_loss(y, x)
        latent_loss = (z - target).pow(2).mean() / spread.pow(2)
        loss = pixels + latent_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(
            pixels=f"{pixels.item():.4f}",
            latents=f"{latent_loss.item():.4f}",
            psnr=f"{psnr(y.detach(), x):.1f}",
        )
        done = step + 1
        if done == steps or time.perf_counter() - last_save > save_every_seconds:
            checkpoint(path, "model", student, optimizer, done, began)
            last_save = time.perf_counter()
    bar.close()
    student.eval().requires_grad_(False)
    return student, {"steps": steps, "seconds": round(time.perf_counter() - began, 1)}


@torch.no_grad()
def held_out_psnr(vae: AutoencoderKL, seed: int, count: int = 64) -> float:
    """Mean encode-then-decode PSNR (dB) on ``count`` scenes drawn after the training ones."""
    x = training_images(seed, range(FIRST_SCENE - count, FIRST_SCENE))
    with torch.autocast("cpu", dtype=AUTOCAST):
        y = vae.decode(vae.encode(x).latent_dist.mode()).sample.float()
    return psnr(y, x)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.checkpoints.micro.decoder",
        description="Train a wider VAE in a trained micro model's latent space.",
    )
    parser.add_argument("--teacher", type=Path, required=True, help="the model's vae folder")
    parser.add_argument("--out", type=Path, required=True, help="vae folder to write")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    cli.add_run_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.check_minimums(parser, args, (("steps", 1), ("batch", 1), ("threads", 1)))
    if not (args.teacher / "config.json").is_file():
        parser.error(f"--teacher {args.teacher} is not a diffusers VAE folder")
    state = cli.start_run(args)
    teacher = AutoencoderKL.from_pretrained(args.teacher, torch_dtype=torch.float32)
    student, figures = distill(teacher, args.seed, args.steps, args.batch, args.lr, state)
    figures["teacher_psnr"] = round(held_out_psnr(teacher, args.seed), 2)
    figures["psnr"] = round(held_out_psnr(student, args.seed), 2)
    student.to(memory_format=torch.contiguous_format).to(torch.bfloat16)
    student.save_pretrained(args.out)
    provenance = {
        "command": "python -m core.checkpoints.micro.decoder " + " ".join(argv),
        "seed": args.seed,
        "batch": args.batch,
        "lr": args.lr,
        "threads": args.threads,
        "torch": torch.__version__,
        **figures,
    }
    (args.out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    sys.stdout.write(json.dumps({"out": str(args.out), **figures}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
