"""The placement planner: sizes counted on the meta device, resident when everything fits,
offload when it does not, host RAM planned too — all without loading a weight."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.checkpoints.synthetic import component_configs
from core.checkpoints.tiny import ensure_tiny_checkpoint
from core.config import GIB, MODELS, SYNTHETIC_DEV, resolve_model
from core.config import VARIANTS as REGISTRY
from core.engine.loading import load_models
from core.engine.placement import (
    check_fits,
    folder_configs,
    format_plan,
    model_sizes,
    plan_placement,
    plan_problem,
)
from core.errors import InvalidSettingError, PlacementError

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("bf16", "int8", "nf4")
CUDA = torch.device("cuda", 0)
QUANTIZATION = {name: spec.quantization for name, spec in REGISTRY.items()}


@pytest.fixture(scope="module")
def flux_dev():
    """FLUX.1-dev's sizes, from its published configuration on the meta device."""
    return model_sizes(component_configs(MODELS[SYNTHETIC_DEV]))


def test_sizes_count_the_layers_the_loader_keeps(flux_dev):
    t5, transformer = flux_dev.components["text_encoder_2"], flux_dev.components["transformer"]
    # T5-XXL keeps its 24 ``wo`` projections unquantized (transformers' _keep_in_fp32_modules).
    assert t5.kept_linear_layers == 24
    assert t5.ratio("int8") == pytest.approx(0.62, abs=0.01)
    assert t5.ratio("nf4") == pytest.approx(0.45, abs=0.01)
    assert transformer.kept_linear_layers == 0
    assert transformer.bytes["none"] == pytest.approx(23.8e9, rel=0.01)
    assert transformer.ratio("int8") == pytest.approx(0.50, abs=0.01)
    assert transformer.ratio("nf4") == pytest.approx(0.28, abs=0.01)
    # Group offload's pinned copies round every tensor up to a power of two.
    assert 1.3 < transformer.pinned_bytes / transformer.bytes["none"] < 1.7


def test_planned_bytes_match_the_loaded_tiny_model():
    """The meta-device count equals what the real loader builds, quantization state included.

    A freshly loaded model: on the CPU, bitsandbytes repacks NF4 at its first forward and
    keeps absmax in bf16 there (3% smaller for the tiny model); the plan counts the stored
    float32 absmax that a GPU keeps.
    """
    spec = resolve_model("tiny", cuda_available=False)
    models = load_models(spec, device="cpu")
    sizes = model_sizes(folder_configs(ensure_tiny_checkpoint()))
    for variant, quantization in (("bf16", "none"), ("int8", "int8"), ("nf4", "nf4")):
        assert sizes.own_bytes(quantization) == models.weight_bytes(variant), variant
    assert sizes.shared_bytes() == models.shared_weight_bytes()


def test_everything_resident_on_an_80_gb_gpu(flux_dev):
    plan = plan_placement(flux_dev, VARIANTS, CUDA, "auto", int(79 * GIB))
    assert plan.per_variant == dict.fromkeys(VARIANTS, "resident")
    assert 55e9 < plan.estimated_bytes < 70e9
    assert plan.host_bytes == 0 and plan_problem(plan) is None


def test_24_gb_cap_offloads_and_groups_what_does_not_fit(flux_dev):
    plan = plan_placement(flux_dev, VARIANTS, CUDA, "auto", int(24e9), int(200e9))
    # bf16's transformer (23.8 GB) cannot be loaded whole: it streams block by block.
    assert plan.per_variant == {"bf16": "group", "int8": "model", "nf4": "model"}
    bf16 = plan.variants["bf16"]
    assert not bf16.low_cpu_mem_usage
    assert bf16.host_bytes > 1.1 * flux_dev.own_bytes("none")  # pinned, streams rounded up
    int8 = plan.variants["int8"]
    assert int8.pinned and 1 <= int8.host_bytes / flux_dev.own_bytes("int8") < 1.01
    assert plan.estimated_bytes + plan.headroom_bytes <= 24e9


def test_under_a_cap_bf16_keeps_what_fits_resident_and_streams_the_rest(flux_dev):
    plan = plan_placement(flux_dev, VARIANTS, CUDA, "auto", int(24e9), int(200e9))
    bf16, transformer = plan.variants["bf16"], flux_dev.components["transformer"]
    blocks = sum(size for size, _ in transformer.blocks.values())
    assert len(transformer.blocks) == 57  # FLUX.1-dev: 19 double + 38 single blocks
    assert 0 < len(bf16.resident_blocks) < 57
    assert bf16.resident_block_bytes + bf16.streamed_bytes == blocks
    assert bf16.resident_block_bytes == sum(transformer.blocks[n][0] for n in bf16.resident_blocks)
    # While bf16 runs, its resident blocks, one streamed block and the shared modules fill
    # the budget less the activations' room: no further block would fit.
    room = plan.budget_bytes - plan.headroom_bytes - plan.estimated_bytes
    assert 0 <= room < min(size for size, _ in transformer.blocks.values())
    # A larger card keeps more; an explicit --offload group streams every block.
    roomier = plan_placement(flux_dev, VARIANTS, CUDA, "auto", int(29e9), int(200e9))
    assert roomier.per_variant["bf16"] == "group"
    assert roomier.variants["bf16"].resident_block_bytes > bf16.resident_block_bytes
    streamed = plan_placement(flux_dev, VARIANTS, CUDA, "group", int(24e9), int(200e9))
    assert streamed.variants["bf16"].resident_blocks == ()
    assert streamed.variants["bf16"].streamed_bytes == blocks


def test_pinned_bytes_are_counted_and_pinning_falls_back_by_name(flux_dev):
    cap = int(24e9)  # bf16 group, int8 and nf4 model offload
    pinned = plan_placement(flux_dev, VARIANTS, CUDA, "auto", cap, int(500e9))
    assert pinned.variants["int8"].pinned and pinned.variants["nf4"].pinned
    assert pinned.shared_pinned and pinned.notes == ()
    assert 0 < pinned.pinned_bytes <= pinned.host_bytes
    # Short of host RAM, group offload first pins on the fly; model offload stays pinned.
    on_the_fly = plan_placement(flux_dev, VARIANTS, CUDA, "auto", cap, pinned.host_bytes - 1)
    assert on_the_fly.variants["bf16"].low_cpu_mem_usage and on_the_fly.notes == ()
    assert on_the_fly.variants["int8"].pinned
    # Shorter still, by less than the pinned chunks' rounding: the largest pinned copy
    # falls back to pageable memory, and the plan says so by name.
    just_short = on_the_fly.host_bytes - 1
    plan = plan_placement(flux_dev, VARIANTS, CUDA, "auto", cap, just_short)
    offloaded = on_the_fly.variants
    largest = max(offloaded, key=lambda n: offloaded[n].host_bytes)  # bf16's resident blocks
    note = f"{largest}: pageable host copies (pinning would not fit the host budget)"
    assert plan.notes == (note,)
    assert [n for n, v in plan.variants.items() if not v.pinned] == [largest]
    assert plan.host_bytes <= just_short and plan_problem(plan) is None


def test_short_host_ram_pins_on_the_fly_and_refuses_when_even_that_does_not_fit(flux_dev):
    roomy = plan_placement(flux_dev, VARIANTS, CUDA, "auto", int(24e9), int(200e9))
    short = plan_placement(flux_dev, VARIANTS, CUDA, "auto", int(24e9), int(70e9))
    assert short.variants["bf16"].low_cpu_mem_usage
    # Unpinned streams; the resident blocks' pinned copy rounds its last chunk up.
    own = flux_dev.own_bytes("none")
    assert own <= short.variants["bf16"].host_bytes < 1.01 * own
    assert short.host_bytes < roomy.host_bytes and plan_problem(short) is None
    tiny_host = plan_placement(flux_dev, VARIANTS, CUDA, "auto", int(24e9), int(40e9))
    with pytest.raises(PlacementError, match=r"host RAM needs about .* GiB.*Try"):
        check_fits(tiny_host)


def test_explicit_override_wins(flux_dev):
    plan = plan_placement(flux_dev, VARIANTS, CUDA, "none", int(24e9))
    assert set(plan.per_variant.values()) == {"resident"}
    assert "device needs" in plan_problem(plan)
    plan = plan_placement(flux_dev, VARIANTS, CUDA, "group", int(79 * GIB))
    # Only the unquantized variant can stream; the quantized ones stay resident.
    assert plan.per_variant == {"bf16": "group", "int8": "resident", "nf4": "resident"}


def test_cpu_runs_everything_on_the_cpu(flux_dev):
    plan = plan_placement(flux_dev, VARIANTS, torch.device("cpu"), "auto", None)
    assert set(plan.per_variant.values()) == {"cpu"}
    assert plan.host_bytes == flux_dev.shared_bytes() + sum(
        flux_dev.own_bytes(q) for q in ("none", "int8", "nf4")
    )


def test_unknown_offload_is_rejected(flux_dev):
    with pytest.raises(InvalidSettingError):
        plan_placement(flux_dev, VARIANTS, CUDA, "sometimes", None)


def test_quantized_variants_are_never_planned_group(flux_dev):
    # 12 GB: int8's transformer (~12 GB) does not fit either, but group offloading cannot
    # move bitsandbytes' quantization state, so quantized variants get model offload.
    plan = plan_placement(flux_dev, VARIANTS, CUDA, "auto", int(12e9))
    assert plan.per_variant == {"bf16": "group", "int8": "model", "nf4": "model"}


FIVE = ("bf16", "int8", "nf4", "fp8-layerwise", "torchao-int8")


def test_five_variants_keep_what_fits_resident_on_80_gb_and_none_on_24(flux_dev):
    """Memory allows what the plan allows: the same five variants on two card sizes."""
    own = {v: flux_dev.own_bytes(QUANTIZATION[v]) for v in FIVE}
    big = plan_placement(flux_dev, FIVE, CUDA, "auto", int(80e9), int(500e9))
    small = plan_placement(flux_dev, FIVE, CUDA, "auto", int(24e9), int(500e9))
    for plan in (big, small):
        assert plan_problem(plan) is None
        assert plan.estimated_bytes + plan.headroom_bytes <= plan.budget_bytes
        assert set(plan.resident) | set(plan.offloaded) == set(FIVE)
    # 80 GB: all five (97 GiB) do not fit, but some do; a 24 GB card keeps fewer.
    assert 0 < len(big.resident) < len(FIVE)
    assert len(small.resident) < len(big.resident) and small.resident == ()
    assert set(big.per_variant.values()) == {"resident", "model"}
    assert small.per_variant["bf16"] == "group"  # its transformer alone exceeds 24 GB
    # The resident set is the most bytes that fit beside the largest offloaded module.
    room = big.budget_bytes - big.headroom_bytes - big.shared_bytes
    largest = max(big.variants[v].device_bytes for v in big.offloaded)
    kept = sum(own[v] for v in big.resident)
    assert kept + largest <= room
    assert all(kept + own[v] + largest > room for v in big.offloaded)  # none more fits
    assert big.host_bytes < small.host_bytes  # resident weights need no host copy
    # The plan says which are resident, which are offloaded, and why.
    text = format_plan(big, flux_dev)
    assert f"{len(big.resident)} of 5 resident, {len(big.offloaded)} offloaded" in text
    (resident_line,) = [line for line in text.splitlines() if line.startswith("resident: ")]
    assert all(v in resident_line for v in big.resident) and "fit" in resident_line
    (offloaded_line,) = [line for line in text.splitlines() if line.startswith("offloaded ")]
    assert all(v in offloaded_line for v in big.offloaded)
    assert "model offload" in offloaded_line and "would not fit" in offloaded_line
    text = format_plan(small, flux_dev)
    assert "0 of 5 resident, 5 offloaded" in text
    assert "resident: none: the largest module of bf16" in text
    assert "streams block by block" in text
    # Three variants on the 80 GB card: all resident, nothing to explain.
    trio = plan_placement(flux_dev, VARIANTS, CUDA, "auto", int(80e9), int(500e9))
    assert trio.offloaded == () and trio.residency == ()


def test_plan_command_prints_bytes_per_variant_without_loading_weights():
    argv = ["--plan", "--model", "synthetic-flux-dev", "--max-gpu-memory", "24"]
    done = subprocess.run(
        [sys.executable, "-m", "core.engine", *argv, "--max-host-memory", "128"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(line.split()[:2] == ["bf16", "group"] for line in lines), done.stdout
    assert any(line.split()[:2] == ["int8", "model"] for line in lines)
    assert "host RAM for weights" in done.stdout and "verdict: fits" in done.stdout
    split = [line for line in lines if line.startswith("bf16 transformer while it runs:")]
    assert split and "blocks resident (" in split[0] and "GiB streamed per step" in split[0]
    assert any(line.split()[:3] == ["int8", "model", "11.10"] and "pinned" in line
               for line in lines)  # fmt: skip
    assert "text_encoder_2: int8 0.62 / nf4 0.45 (24 Linear kept)" in done.stdout
    short = subprocess.run(
        [sys.executable, "-m", "core.engine", *argv, "--max-host-memory", "32"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert short.returncode == 1 and "does not fit" in short.stdout


# --- The quantization backends' registry (core.engine.backends) ---------------------------


def test_every_variant_has_a_backend_and_the_engine_never_compares_backend_names():
    import ast

    from core.config import VARIANTS
    from core.engine.backends import BACKENDS, backend, quantized_backends

    assert {v.quantization for v in VARIANTS.values()} <= set(BACKENDS)
    assert [b.name for b in quantized_backends()] == [
        "int8",
        "nf4",
        "fp8-layerwise",
        "gguf-q8_0",
        "gguf-q4_1",
        "torchao-int8",
        "torchao-fp8",
    ]
    assert backend("none").group_offload and not backend("int8").group_offload
    names = set(BACKENDS) - {"none"}  # "none" is also an --offload value
    for module in ("loading", "placement", "measure", "pinned"):
        tree = ast.parse((REPO / "core" / "engine" / f"{module}.py").read_text())
        literals = {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        assert not literals & names, (module, literals & names)


def test_a_new_backend_is_one_class_and_one_variants_line(flux_dev, monkeypatch):
    """A backend that stores every layer at half its bf16 size, registered by one class
    and one VARIANTS line: sizing and the plan pick it up with no other change."""
    import dataclasses

    import core.engine.backends as backends
    from core.config import VARIANTS
    from core.engine.placement import ComponentSizes, ModelSizes

    class Half(backends.Backend):
        name = "half"
        quantized = True
        group_offload = False

        def storage_delta(self, layer: torch.nn.Module) -> int | None:
            if type(layer) is not torch.nn.Linear:
                return None
            return -layer.weight.numel() * backends.BF16_BYTES // 2

    monkeypatch.setitem(backends.BACKENDS, "half", Half())
    monkeypatch.setitem(VARIANTS, "half", dataclasses.replace(VARIANTS["nf4"], name="half",
                                                             quantization="half"))  # fmt: skip
    sizes = model_sizes(component_configs(MODELS[SYNTHETIC_DEV]))
    t5 = sizes.components["text_encoder_2"]
    assert 0.5 < t5.ratio("half") < 0.6 and t5.ratio("nf4") == flux_dev.components[
        "text_encoder_2"
    ].ratio("nf4")
    assert isinstance(sizes, ModelSizes) and isinstance(t5, ComponentSizes)
    plan = plan_placement(sizes, ("bf16", "half"), CUDA, "auto", int(24e9), int(500e9))
    assert plan.per_variant == {"bf16": "group", "half": "model"}
