"""A GGUF file of a FLUX transformer (Q8_0 or Q4), made from its BF16 safetensors weights.

The quantizers are the ``gguf`` package's own (llama.cpp's reference code ported to
numpy; Q8_0 is bit-exact with ggml-quants.c). The file loads the way a user loads any
GGUF transformer in diffusers::

    FluxTransformer2DModel.from_single_file(
        path, config=PIPELINE_DIR, subfolder="transformer",
        quantization_config=GGUFQuantizationConfig(compute_dtype=torch.bfloat16))

What goes in the file:

- Tensors keep diffusers' own names (the model's ``state_dict`` keys). diffusers then loads
  them as they are, without its BFL-to-diffusers converter. That converter is written for
  FLUX.1's width: ``convert_flux_transformer_checkpoint_to_diffusers`` fixes
  ``inner_dim = 3072`` when it splits ``single_blocks.N.linear1``, so a smaller model
  (micro, tiny) written under BFL/ComfyUI names could not be loaded.
- A weight with two dimensions whose rows are a whole number of quantization blocks (32
  values) is quantized. Everything else stays F32: biases, norm scales, and any odd-shaped
  matrix. F32 holds every BF16 value exactly. This is GGUF's "mostly Q8_0 / Q4_1, except
  1-d tensors" file type.
- ``config=`` is needed because this file, unlike the published FLUX.1 GGUFs, is not one
  of the hub checkpoints that diffusers recognises by key. A pipeline folder of the same
  model gives it the config.

Command line::

    python -m core.checkpoints.gguf --model assets/micro-flux --out micro-q8_0.gguf --type q8_0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import load_file

from core.config import MICRO_DIR, MICRO_MODEL, MODELS_DIR
from core.errors import InvalidSettingError

logger = logging.getLogger(__name__)

# Spellings on the command line -> the gguf package's quantization types.
QUANT_TYPES: dict[str, gguf.GGMLQuantizationType] = {
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "q4_1": gguf.GGMLQuantizationType.Q4_1,
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
}
# GGUF's general.file_type for each: "mostly this type, except 1-d tensors".
FILE_TYPES: dict[gguf.GGMLQuantizationType, gguf.LlamaFileType] = {
    gguf.GGMLQuantizationType.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
    gguf.GGMLQuantizationType.Q4_1: gguf.LlamaFileType.MOSTLY_Q4_1,
    gguf.GGMLQuantizationType.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0,
}
# general.architecture, as the published FLUX.1 GGUFs (ComfyUI-GGUF) write it.
ARCHITECTURE = "flux"
TRANSFORMER_CONFIG = "config.json"


@dataclass(frozen=True)
class GGUFSummary:
    """What ``write_transformer_gguf`` wrote: the file, its type and its tensors.

    ``quantized`` and ``kept_f32`` count tensors; ``file_bytes`` is the file's size.
    """

    path: Path
    quant_type: str
    quantized: int
    kept_f32: int
    file_bytes: int


def quant_type_named(name: str) -> gguf.GGMLQuantizationType:
    """The quantization type spelt ``name`` (q8_0, q4_1 or q4_0; case-insensitive)."""
    key = name.strip().lower()
    if key not in QUANT_TYPES:
        raise InvalidSettingError(
            f"--type {name!r} is not one of {', '.join(QUANT_TYPES)} (GGUF quantization types)"
        )
    return QUANT_TYPES[key]


def transformer_folder(model: Path | str) -> Path:
    """The transformer folder of ``model``: a pipeline folder (its ``transformer/``), a
    transformer folder itself, or the name ``micro`` (the project's micro model)."""
    path = MICRO_DIR if str(model) == MICRO_MODEL else Path(model).expanduser()
    for folder in (path / "transformer", path):
        if (folder / TRANSFORMER_CONFIG).is_file() and any(folder.glob("*.safetensors")):
            config = json.loads((folder / TRANSFORMER_CONFIG).read_text())
            if config.get("_class_name") != "FluxTransformer2DModel":
                raise InvalidSettingError(
                    f"{folder} holds a {config.get('_class_name')!r}, not a FluxTransformer2DModel"
                )
            return folder
    raise InvalidSettingError(
        f"--model {str(model)!r} is neither 'micro' nor a folder holding a FLUX transformer "
        "(config.json and safetensors weights, or a pipeline folder with transformer/)"
    )


def read_transformer_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the transformer's safetensors file(s) in ``folder``, by diffusers name."""
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(shard))
    return weights


def tensor_type(
    name: str, tensor: torch.Tensor, quant: gguf.GGMLQuantizationType
) -> gguf.GGMLQuantizationType:
    """``quant`` for a 2-d weight whose rows are whole quantization blocks, F32 otherwise."""
    block_size, _ = gguf.GGML_QUANT_SIZES[quant]
    if name.endswith(".weight") and tensor.ndim == 2 and tensor.shape[1] % block_size == 0:
        return quant
    return gguf.GGMLQuantizationType.F32


def encode_tensor(
    tensor: torch.Tensor, qtype: gguf.GGMLQuantizationType
) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """The bytes (uint8, rows of blocks) or F32 values to store for ``tensor`` as ``qtype``."""
    values = tensor.detach().to(torch.float32).cpu().numpy()
    if qtype == gguf.GGMLQuantizationType.F32:
        return values, qtype
    return gguf.quants.quantize(values, qtype), qtype


def write_gguf(
    weights: Mapping[str, torch.Tensor],
    out: Path,
    quant: gguf.GGMLQuantizationType,
    *,
    name: str = "",
) -> tuple[int, int]:
    """Write ``weights`` to the GGUF file ``out`` (atomically); return (quantized, kept F32).

    Tensors are written in sorted name order, so the same weights give the same bytes.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, staging_name = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".gguf", dir=out.parent)
    os.close(fd)
    staging = Path(staging_name)
    counts = {True: 0, False: 0}
    try:
        writer = gguf.GGUFWriter(staging, arch=ARCHITECTURE)
        if name:
            writer.add_name(name)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_file_type(int(FILE_TYPES[quant]))
        for key in sorted(weights):
            data, qtype = encode_tensor(weights[key], tensor_type(key, weights[key], quant))
            writer.add_tensor(key, data, raw_dtype=qtype)
            counts[qtype != gguf.GGMLQuantizationType.F32] += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        staging.chmod(0o644)  # mkstemp made it private; a model file is readable
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)
    return counts[True], counts[False]


def write_transformer_gguf(model: Path | str, out: Path, quant_type: str) -> GGUFSummary:
    """Quantize the BF16 transformer of ``model`` into the GGUF file ``out``.

    ``model`` is what ``transformer_folder`` takes; ``quant_type`` is q8_0, q4_1 or q4_0.
    """
    quant = quant_type_named(quant_type)
    folder = transformer_folder(model)
    weights = read_transformer_weights(folder)
    quantized, kept = write_gguf(weights, out, quant, name=f"{folder.parent.name} transformer")
    logger.info("wrote %s: %d tensors %s, %d kept F32", out, quantized, quant.name, kept)
    return GGUFSummary(Path(out), quant.name, quantized, kept, Path(out).stat().st_size)


def cached_transformer_gguf(
    model: Path | str, quant_type: str, cache_dir: Path | None = None
) -> Path:
    """The GGUF file of ``model``'s transformer as ``quant_type``, written on first use.

    Files live in ``gguf/`` under ``cache_dir``, else $SPOT_CACHE_DIR, else data/models,
    named by a hash of the weights' resolved paths, sizes and modification times (so a
    retrained model gets a new file) and the type. The same weights give the same bytes
    (``write_gguf`` writes in sorted order with the gguf package's deterministic
    quantizers), and the write is atomic, so two processes racing write the same file.
    """
    quant = quant_type_named(quant_type)
    folder = transformer_folder(model)
    key = hashlib.sha256()
    for shard in sorted(folder.glob("*.safetensors")):
        stat = shard.stat()
        key.update(f"{shard.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    root = Path(cache_dir or os.environ.get("SPOT_CACHE_DIR") or MODELS_DIR) / "gguf"
    out = root / f"{folder.parent.name}-{key.hexdigest()[:16]}-{quant.name.lower()}.gguf"
    if not out.is_file():
        write_transformer_gguf(folder, out, quant.name.lower())
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m core.checkpoints.gguf --model DIR --out FILE --type q8_0|q4_1|q4_0``."""
    parser = argparse.ArgumentParser(
        prog="python -m core.checkpoints.gguf",
        description="Write a GGUF file (Q8_0 or Q4) of a FLUX transformer from its BF16 "
        "safetensors, loadable with diffusers' from_single_file + GGUFQuantizationConfig.",
    )
    parser.add_argument(
        "--model", required=True, help="micro, a pipeline folder or a transformer folder"
    )
    parser.add_argument("--out", type=Path, required=True, help="the .gguf file to write")
    parser.add_argument("--type", default="q8_0", help=f"one of {', '.join(QUANT_TYPES)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.out.suffix != ".gguf":
        logger.error("--out %s must end in .gguf (diffusers picks its loader by it)", args.out)
        return 2
    try:
        summary = write_transformer_gguf(args.model, args.out, args.type)
    except InvalidSettingError as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write(
        f"{summary.path}\t{summary.quant_type}\t{summary.quantized} quantized\t"
        f"{summary.kept_f32} F32\t{summary.file_bytes} bytes\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
