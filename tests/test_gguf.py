"""The GGUF writer: Q8_0/Q4_1 round trips within their error bounds, and a file that
diffusers' own ``from_single_file`` loads into GGUF layers holding quantized storage."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel, GGUFQuantizationConfig
from diffusers.models.model_loading_utils import load_gguf_checkpoint
from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter, dequantize_gguf_tensor

from core.checkpoints.gguf import (
    main,
    read_transformer_weights,
    transformer_folder,
    write_gguf,
    write_transformer_gguf,
)
from core.config import MICRO_DIR
from core.engine.metrics import psnr
from core.errors import InvalidSettingError

Q8_0 = gguf.GGMLQuantizationType.Q8_0
Q4_1 = gguf.GGMLQuantizationType.Q4_1
BLOCK = 32


def _weights(rows: int = 8, cols: int = 96, seed: int = 3) -> dict[str, torch.Tensor]:
    """A BF16 weight with blocks of very different scales, a bias and a norm scale."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-3, 1, rows * cols // BLOCK).reshape(rows, cols // BLOCK, 1)
    weight = (torch.randn(rows, cols // BLOCK, BLOCK, generator=g) * scales).reshape(rows, cols)
    return {
        "layer.weight": weight.to(torch.bfloat16),
        "layer.bias": torch.randn(rows, generator=g).to(torch.bfloat16),
        "norm.weight": torch.ones(cols, dtype=torch.bfloat16),
    }


def _blocks(t: torch.Tensor) -> np.ndarray:
    return t.to(torch.float32).numpy().reshape(-1, BLOCK)


def _fp16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def test_a_q8_0_tensor_read_back_is_within_half_a_step_of_its_block(tmp_path):
    weights = _weights()
    path = tmp_path / "t.gguf"
    assert write_gguf(weights, path, Q8_0) == (1, 2)

    loaded = load_gguf_checkpoint(str(path))  # the reader from_single_file uses
    stored = loaded["layer.weight"]
    assert isinstance(stored, GGUFParameter) and stored.quant_type == Q8_0
    assert stored.dtype == torch.uint8
    assert stored.numel() == weights["layer.weight"].numel() // BLOCK * 34  # fp16 d + 32 int8
    original = _blocks(weights["layer.weight"])
    # The values the file holds: q * fp16(d), in float32 (gguf's own dequantizer).
    back = gguf.quants.dequantize(stored.numpy(), Q8_0).reshape(-1, BLOCK)

    # Q8_0: per 32-block, step d = absmax / 127, values rounded to the nearest step; d is
    # stored as fp16, which moves the 127th step by at most 127 |d - fp16(d)|.
    d = np.abs(original).max(axis=1, keepdims=True) / 127
    bound = d / 2 + 127 * np.abs(d - _fp16(d))
    error = np.abs(back - original)
    assert (error <= bound * (1 + 1e-6)).all()
    # diffusers multiplies in fp16 (its scales are half): the same values, rounded to fp16.
    np.testing.assert_array_equal(_blocks(dequantize_gguf_tensor(stored)), _fp16(back))
    assert error.max() > 0  # really quantized, not stored as is
    # gguf's own reader sees the same type and bytes
    reader_tensor = {t.name: t for t in gguf.GGUFReader(path).tensors}["layer.weight"]
    assert reader_tensor.tensor_type == Q8_0
    np.testing.assert_array_equal(reader_tensor.data, stored.numpy())


def test_a_q4_1_tensor_read_back_is_within_half_a_step_of_its_block(tmp_path):
    weights = _weights()
    path = tmp_path / "t.gguf"
    write_gguf(weights, path, Q4_1)
    stored = load_gguf_checkpoint(str(path))["layer.weight"]
    assert stored.quant_type == Q4_1
    back = gguf.quants.dequantize(stored.numpy(), Q4_1).reshape(-1, BLOCK)
    original = _blocks(weights["layer.weight"])
    # Q4_1: step d = (max - min) / 15 from the block's min m; d and m stored as fp16.
    low, high = original.min(axis=1, keepdims=True), original.max(axis=1, keepdims=True)
    d = (high - low) / 15
    bound = d / 2 + 15 * np.abs(d - _fp16(d)) + np.abs(low - _fp16(low))
    assert (np.abs(back - original) <= bound * (1 + 1e-5)).all()


def test_biases_and_norm_scales_stay_exact_f32(tmp_path):
    weights = _weights()
    path = tmp_path / "t.gguf"
    write_gguf(weights, path, Q8_0)
    loaded = load_gguf_checkpoint(str(path))
    for key in ("layer.bias", "norm.weight"):
        assert not isinstance(loaded[key], GGUFParameter)
        assert loaded[key].dtype == torch.float32
        torch.testing.assert_close(loaded[key], weights[key].to(torch.float32), rtol=0, atol=0)


def test_the_same_weights_write_the_same_bytes(tmp_path):
    write_gguf(_weights(), tmp_path / "a.gguf", Q8_0)
    write_gguf(_weights(), tmp_path / "b.gguf", Q8_0)
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


# --- The micro model, loaded as a user would --------------------------------------------


def _load(path) -> FluxTransformer2DModel:
    return FluxTransformer2DModel.from_single_file(
        str(path),
        config=str(MICRO_DIR),
        subfolder="transformer",
        quantization_config=GGUFQuantizationConfig(compute_dtype=torch.bfloat16),
    )


@pytest.fixture(scope="module")
def micro_ggufs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {
        kind: write_transformer_gguf("micro", folder / f"micro-{kind}.gguf", kind)
        for kind in ("q8_0", "q4_1")
    }


@pytest.fixture(scope="module")
def bf16_micro():
    return FluxTransformer2DModel.from_pretrained(
        MICRO_DIR, subfolder="transformer", dtype=torch.bfloat16
    ).eval()


def _inputs(model: FluxTransformer2DModel, seed: int = 0) -> dict[str, torch.Tensor]:
    config = model.config
    g = torch.Generator().manual_seed(seed)
    side, words = 4, 6
    ids = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1)
    img_ids = torch.cat([torch.zeros(side * side, 1), ids.reshape(-1, 2).float()], dim=1)
    return {
        "hidden_states": torch.randn(1, side * side, config.in_channels, generator=g),
        "encoder_hidden_states": torch.randn(1, words, config.joint_attention_dim, generator=g),
        "pooled_projections": torch.randn(1, config.pooled_projection_dim, generator=g),
        "timestep": torch.tensor([0.5]),
        "img_ids": img_ids,
        "txt_ids": torch.zeros(words, 3),
    }


def _run(model: FluxTransformer2DModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        cast = {k: v.to(torch.bfloat16) if k != "timestep" else v for k, v in inputs.items()}
        return model(**cast, return_dict=False)[0].float()


@pytest.mark.parametrize("kind", ["q8_0", "q4_1"])
def test_from_single_file_gives_gguf_layers_holding_quantized_storage(
    micro_ggufs, bf16_micro, kind
):
    summary = micro_ggufs[kind]
    model = _load(summary.path)
    expected_type = {"q8_0": Q8_0, "q4_1": Q4_1}[kind]
    bf16_linears = {n for n, m in bf16_micro.named_modules() if isinstance(m, torch.nn.Linear)}
    gguf_linears = {n: m for n, m in model.named_modules() if isinstance(m, GGUFLinear)}
    assert set(gguf_linears) == bf16_linears  # every Linear of the micro model is quantized
    assert summary.quantized == len(gguf_linears)
    bf16_weights = dict(bf16_micro.named_parameters())
    for name, layer in gguf_linears.items():
        weight = layer.weight
        assert isinstance(weight, GGUFParameter) and weight.quant_type == expected_type
        assert weight.dtype == torch.uint8
        original = bf16_weights[f"{name}.weight"]
        assert weight.numel() < original.numel() * 2  # fewer bytes than BF16's
        assert tuple(weight.quant_shape) == tuple(original.shape)
    assert model.get_memory_footprint() < bf16_micro.get_memory_footprint()


def test_the_gguf_models_outputs_are_deterministic_and_near_bf16(micro_ggufs, bf16_micro):
    inputs = _inputs(bf16_micro)
    reference = _run(bf16_micro, inputs)
    errors = {}
    for kind, summary in micro_ggufs.items():
        first, second = _run(_load(summary.path), inputs), _run(_load(summary.path), inputs)
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        assert torch.isfinite(first).all()
        errors[kind] = (first - reference).abs().mean().item()
    assert 0 < errors["q8_0"] < errors["q4_1"]  # 8 bits nearer BF16 than 4
    assert errors["q4_1"] < reference.abs().mean().item()


# --- Bad input, the command line --------------------------------------------------------


def test_a_folder_without_a_flux_transformer_is_refused_by_name(tmp_path):
    with pytest.raises(InvalidSettingError, match="FLUX transformer"):
        transformer_folder(tmp_path)
    with pytest.raises(InvalidSettingError, match="not a FluxTransformer2DModel"):
        transformer_folder(MICRO_DIR / "vae")


def test_the_transformer_folder_is_found_from_the_pipeline_or_itself():
    assert transformer_folder("micro") == MICRO_DIR / "transformer"
    assert transformer_folder(MICRO_DIR) == MICRO_DIR / "transformer"
    assert transformer_folder(MICRO_DIR / "transformer") == MICRO_DIR / "transformer"
    assert "x_embedder.weight" in read_transformer_weights(MICRO_DIR / "transformer")


def test_the_command_writes_the_file_and_refuses_bad_input_with_exit_2(tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert main(["--model", "micro", "--out", str(out), "--type", "q4_1"]) == 0
    assert "Q4_1" in capsys.readouterr().out and out.is_file()
    assert main(["--model", "micro", "--out", str(tmp_path / "x.gguf"), "--type", "q3"]) == 2
    assert main(["--model", str(tmp_path), "--out", str(tmp_path / "y.gguf")]) == 2
    assert main(["--model", "micro", "--out", str(tmp_path / "z.bin")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]  # the refusals wrote nothing


def test_a_pipeline_with_the_gguf_transformer_draws_the_same_image_per_seed(micro_ggufs):
    bf16 = FluxPipeline.from_pretrained(MICRO_DIR, dtype=torch.bfloat16)
    # The BF16 pipeline's components, its own scheduler, the GGUF transformer.
    q8 = FluxPipeline(
        **{
            **bf16.components,
            "transformer": _load(micro_ggufs["q8_0"].path),
            "scheduler": type(bf16.scheduler).from_config(bf16.scheduler.config),
        }
    )
    assert q8.vae is bf16.vae and q8.text_encoder is bf16.text_encoder  # shared, as a user would

    def draw(pipe, seed: int):
        return pipe(
            "a red circle above a blue square",
            num_inference_steps=2,
            height=64,
            width=64,
            guidance_scale=4.0,
            max_sequence_length=32,
            generator=torch.Generator("cpu").manual_seed(seed),
        ).images[0]

    reference, first, again = draw(bf16, 0), draw(q8, 0), draw(q8, 0)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert np.isfinite(psnr(reference, first)) and psnr(reference, first) > 20
