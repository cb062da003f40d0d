"""``core.engine.measure.tensor_bytes`` counts the bytes each backend really stores: torchao's
tensor subclasses by their parts, GGUF's packed blocks, float8 layerwise storage, and
bitsandbytes' state, each storage once. Small layers made by each library's own call."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import torch
from diffusers.hooks import apply_layerwise_casting
from diffusers.models.model_loading_utils import load_gguf_checkpoint
from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter
from torchao.quantization import Int8Tensor, Int8WeightOnlyConfig, quantize_

from core.checkpoints.gguf import write_gguf
from core.engine.measure import tensor_bytes

ROWS, COLS = 32, 96


def _linear() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(COLS, ROWS, dtype=torch.bfloat16))


def test_torchao_int8_is_counted_by_its_parts_not_its_logical_bf16_size():
    model = _linear()
    quantize_(model, Int8WeightOnlyConfig())  # torchao's own call, as TorchAoConfig runs it
    weight = model[0].weight
    assert isinstance(weight, Int8Tensor)
    # The wrapper's own storage reports its logical bf16 size: not what is stored.
    assert weight.untyped_storage().nbytes() == ROWS * COLS * 2
    # int8 values, one float32 scale and one int8 zero point per row, and the bf16 bias.
    expected = ROWS * COLS + ROWS * 4 + ROWS * 1 + ROWS * 2
    assert weight.qdata.dtype == torch.int8
    assert tensor_bytes([model]) == expected
    assert tensor_bytes([model]) < ROWS * COLS * 2


@pytest.mark.parametrize(
    ("qtype", "block_bytes"),
    [(gguf.GGMLQuantizationType.Q8_0, 34), (gguf.GGMLQuantizationType.Q4_1, 20)],
)
def test_a_gguf_layer_is_counted_by_its_packed_blocks(tmp_path: Path, qtype, block_bytes):
    weights = {
        "layer.weight": torch.randn(ROWS, COLS).to(torch.bfloat16),
        "layer.bias": torch.randn(ROWS).to(torch.bfloat16),
    }
    write_gguf(weights, tmp_path / "t.gguf", qtype)
    loaded = load_gguf_checkpoint(str(tmp_path / "t.gguf"))  # the reader from_single_file uses
    with torch.device("meta"):
        layer = GGUFLinear(COLS, ROWS, bias=True, compute_dtype=torch.bfloat16)
    layer.weight = loaded["layer.weight"]
    layer.bias = torch.nn.Parameter(loaded["layer.bias"], requires_grad=False)
    assert isinstance(layer.weight, GGUFParameter) and layer.weight.dtype == torch.uint8
    # 32 values a block; the bias stays F32 in the file.
    assert tensor_bytes([layer]) == ROWS * COLS // 32 * block_bytes + ROWS * 4


def test_float8_layerwise_storage_is_one_byte_a_value():
    model = _linear()
    apply_layerwise_casting(
        model,
        storage_dtype=torch.float8_e4m3fn,
        compute_dtype=torch.bfloat16,
        skip_modules_pattern=(),
    )
    assert model[0].weight.dtype == torch.float8_e4m3fn
    assert tensor_bytes([model]) == ROWS * COLS + ROWS  # weight and bias, a byte each


def test_a_storage_shared_by_two_modules_is_counted_once_and_non_modules_are_skipped():
    first = _linear()
    second = torch.nn.Sequential(first[0])  # the same layer in two places
    assert tensor_bytes([first, second, "not a module"]) == (ROWS * COLS + ROWS) * 2
    assert tensor_bytes([first], torch.device("cuda")) == 0  # nothing of it on that device
