"""The variants beyond the game's trio, on the micro model on the CPU: FP8 layerwise
casting, GGUF Q8_0 / Q4_1 and torchao int8 weight-only, each loaded through its library's
own API, really quantized, deterministic, sharing CLIP and the VAE with BF16, and sized on
the meta device by the plan; torchao float8 is refused on the CPU by name."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import gguf
import pytest
import torch
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN
from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter
from torchao.quantization import Int8Tensor

from core.checkpoints.gguf import cached_transformer_gguf
from core.config import (
    ALL_VARIANT_NAMES,
    MICRO_DIR,
    PER_VARIANT_COMPONENTS,
    SHARED_COMPONENTS,
    VARIANT_NAMES,
    VARIANTS,
    resolve_model,
)
from core.engine.backends import backend, stored_tensors
from core.engine.generation import Engine
from core.engine.loading import load_models
from core.engine.placement import folder_configs, model_sizes
from core.errors import InvalidSettingError

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a large red circle in the middle, on a white background"
CPU_VARIANTS = ("fp8-layerwise", "gguf-q8", "gguf-q4", "torchao-int8")
GPU_ONLY = ("torchao-fp8",)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def engine(cache_dir: Path) -> Engine:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPOT_CACHE_DIR", str(cache_dir))  # the GGUF files are written here
        return Engine.load("micro", variants=["bf16", *CPU_VARIANTS], device="cpu")


@pytest.fixture(scope="module")
def images(engine: Engine):
    settings = engine.default_settings(seed=3).with_(steps=2)
    return settings, engine.generate(PROMPT, settings)


def test_the_default_is_still_the_trio_and_the_others_are_named():
    assert VARIANT_NAMES == ("bf16", "int8", "nf4")
    assert set(ALL_VARIANT_NAMES) >= {*VARIANT_NAMES, *CPU_VARIANTS, *GPU_ONLY}
    for name in (*CPU_VARIANTS, *GPU_ONLY):
        assert not VARIANTS[name].default
        assert backend(VARIANTS[name].quantization).quantized


def test_fp8_layerwise_stores_float8_and_computes_in_bf16(engine):
    transformer = engine.models.pipelines["fp8-layerwise"].transformer

    def hooked(layer: torch.nn.Module) -> bool:
        registry = getattr(layer, "_diffusers_hook", None)
        return registry is not None and registry.get_hook("layerwise_casting") is not None

    named = [(n, m) for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)]
    cast = [m for _, m in named if hooked(m)]  # diffusers' own casting hook
    assert len(cast) > len(named) // 2
    assert all(p.dtype == torch.float8_e4m3fn for m in cast for p in m.parameters())
    assert all(p.element_size() == 1 for m in cast for p in m.parameters())
    # The layers diffusers and the model name (norms, pos_embed, proj_out) stay bf16.
    skip = (*DEFAULT_SKIP_MODULES_PATTERN, *transformer._skip_layerwise_casting_patterns)
    for name, layer in named:
        if not hooked(layer):
            assert any(re.search(pattern, name) for pattern in skip), name
            assert all(p.dtype == torch.bfloat16 for p in layer.parameters())
    # T5 stays bf16 (the transformer is what the seed blog casts).
    t5 = engine.models.pipelines["fp8-layerwise"].text_encoder_2
    assert all(p.dtype == torch.bfloat16 for p in t5.parameters())


@pytest.mark.parametrize(
    ("variant", "qtype"),
    [("gguf-q8", gguf.GGMLQuantizationType.Q8_0), ("gguf-q4", gguf.GGMLQuantizationType.Q4_1)],
)
def test_gguf_transformer_holds_packed_blocks_in_gguf_linear(engine, variant, qtype):
    transformer = engine.models.pipelines[variant].transformer
    layers = [m for m in transformer.modules() if isinstance(m, GGUFLinear)]
    assert layers
    block, type_bytes = gguf.GGML_QUANT_SIZES[qtype]
    for layer in layers:
        assert isinstance(layer.weight, GGUFParameter)
        assert layer.weight.quant_type == qtype
        assert layer.weight.dtype == torch.uint8
        assert layer.weight.numel() == layer.in_features * layer.out_features // block * type_bytes
    assert not [m for m in transformer.modules() if type(m) is torch.nn.Linear]


def test_gguf_file_is_cached_and_deterministic(engine, cache_dir, tmp_path):
    first = cached_transformer_gguf("micro", "q8_0", cache_dir)
    assert first.parent == cache_dir / "gguf" and first.is_file()
    again = cached_transformer_gguf(MICRO_DIR, "q8_0", tmp_path)  # written afresh
    assert again != first and again.read_bytes() == first.read_bytes()


@pytest.mark.parametrize("component", PER_VARIANT_COMPONENTS)
def test_torchao_int8_weights_are_int8_tensors(engine, component):
    module = getattr(engine.models.pipelines["torchao-int8"], component)
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m.weight, Int8Tensor) for m in linears)
    for layer in linears:
        parts = {t.dtype for t in stored_tensors(layer.weight)}
        assert torch.int8 in parts
        stored = sum(t.untyped_storage().nbytes() for t in stored_tensors(layer.weight))
        assert stored < layer.weight.numel() * 2 * 0.6  # int8 and a scale a row, not bf16


def test_gguf_and_torchao_load_through_their_librarys_own_quantizer(engine):
    from diffusers.quantizers.gguf.gguf_quantizer import GGUFQuantizer
    from diffusers.quantizers.torchao.torchao_quantizer import (
        TorchAoHfQuantizer as DiffusersTorchAo,
    )
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers.quantizers.quantizer_torchao import (
        TorchAoHfQuantizer as TransformersTorchAo,
    )

    pipes = engine.models.pipelines
    for variant in ("gguf-q8", "gguf-q4"):  # from_single_file + GGUFQuantizationConfig
        assert isinstance(pipes[variant].transformer.hf_quantizer, GGUFQuantizer)
        assert getattr(pipes[variant].text_encoder_2, "hf_quantizer", None) is None  # bf16
    # from_pretrained + TorchAoConfig(Int8WeightOnlyConfig()), diffusers' and transformers'.
    ao = pipes["torchao-int8"]
    loaded = ((ao.transformer, DiffusersTorchAo), (ao.text_encoder_2, TransformersTorchAo))
    for module, quantizer in loaded:
        assert isinstance(module.hf_quantizer, quantizer)
        assert isinstance(module.hf_quantizer.quantization_config.quant_type, Int8WeightOnlyConfig)
    # Layerwise casting is no quantizer: diffusers' hook, checked above.
    assert getattr(pipes["fp8-layerwise"].transformer, "hf_quantizer", None) is None


def test_each_variant_weighs_less_than_bf16_in_the_expected_order(engine):
    sizes = {v: engine.models.weight_bytes(v) for v in ("bf16", *CPU_VARIANTS)}
    assert 0 < sizes["gguf-q4"] < sizes["gguf-q8"] < sizes["fp8-layerwise"] < sizes["bf16"]
    assert 0 < sizes["torchao-int8"] < sizes["fp8-layerwise"]  # T5 quantized too


def test_plan_counts_each_variant_on_the_meta_device(engine):
    sizes = model_sizes(folder_configs(MICRO_DIR))
    for variant in CPU_VARIANTS:
        planned = sizes.own_bytes(VARIANTS[variant].quantization)
        assert engine.models.plan.variants[variant].host_bytes == planned
        # The meta-device count is exact: what loading really stores.
        assert planned == engine.models.weight_bytes(variant), variant
        assert planned < sizes.own_bytes("none")


def test_shared_components_are_the_same_objects_as_bf16s(engine):
    pipes = engine.models.pipelines
    for name in SHARED_COMPONENTS:
        assert all(getattr(pipes[v], name) is getattr(pipes["bf16"], name) for v in CPU_VARIANTS)
    for name in PER_VARIANT_COMPONENTS:
        assert len({id(getattr(p, name)) for p in pipes.values()}) == len(pipes)


def test_psnr_against_bf16_is_finite_and_below_identity(images):
    _, generation = images
    for variant in CPU_VARIANTS:
        psnr = generation.results[variant].psnr
        assert psnr is not None and 0 < psnr < math.inf, variant
        assert generation.results[variant].image.tobytes() != (
            generation.results["bf16"].image.tobytes()
        )
    # Q8_0 keeps more precision than Q4_1.
    assert generation.results["gguf-q8"].psnr > generation.results["gguf-q4"].psnr


def test_each_variant_is_deterministic_per_seed(engine, images):
    settings, first = images
    again = engine.generate(PROMPT, settings)
    for variant in CPU_VARIANTS:
        assert again.results[variant].image.tobytes() == first.results[variant].image.tobytes()


@pytest.mark.parametrize("variant", GPU_ONLY)
def test_torchao_fp8_is_refused_on_the_cpu_by_name(variant):
    with pytest.raises(InvalidSettingError, match=variant):
        load_models(resolve_model("micro", cuda_available=False), variants=[variant], device="cpu")


def test_engine_command_line_refuses_torchao_fp8_on_the_cpu(tmp_path):
    out = tmp_path / "o"
    flags = ["--model", "micro", "--device", "cpu", "--variants", "bf16,torchao-fp8"]
    result = subprocess.run(
        [sys.executable, "-m", "core.engine", *flags, "--prompt", "x", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "torchao-fp8" in result.stderr
    assert not out.exists()


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="torchao-fp8: float8 weight-only runs on CUDA GPUs of compute capability 8.9+",
)
def test_torchao_fp8_on_a_gpu_is_float8_deterministic_and_shares_clip_and_the_vae():
    from torchao.quantization import Float8Tensor

    engine = Engine.load("micro", variants=["bf16", "torchao-fp8"], device="cuda")
    pipes = engine.models.pipelines
    for component in PER_VARIANT_COMPONENTS:
        linears = [
            m for m in getattr(pipes["torchao-fp8"], component).modules()
            if isinstance(m, torch.nn.Linear)
        ]  # fmt: skip
        assert linears and all(isinstance(m.weight, Float8Tensor) for m in linears)
        for layer in linears:
            parts = list(stored_tensors(layer.weight))
            assert torch.float8_e4m3fn in {t.dtype for t in parts}
            stored = sum(t.untyped_storage().nbytes() for t in parts)
            assert stored < layer.weight.numel() * 2 * 0.6  # a byte a value and row scales
    for name in SHARED_COMPONENTS:
        assert getattr(pipes["torchao-fp8"], name) is getattr(pipes["bf16"], name)
    settings = engine.default_settings(seed=3).with_(steps=2)
    first, again = engine.generate(PROMPT, settings), engine.generate(PROMPT, settings)
    result = first.results["torchao-fp8"]
    assert result.psnr is not None and 0 < result.psnr < math.inf
    assert result.image.tobytes() == again.results["torchao-fp8"].image.tobytes()
