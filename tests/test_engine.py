"""The engine on the tiny FLUX checkpoint, on the CPU: real bitsandbytes layers, shared
components, determinism, input validation and recovery from out-of-memory errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch

from core import errors
from core.checkpoints.tiny import ensure_tiny_checkpoint
from core.config import PER_VARIANT_COMPONENTS, SHARED_COMPONENTS, VARIANT_NAMES, resolve_model
from core.engine import pinned
from core.engine.generation import Engine
from core.engine.int8 import int8_tensors
from core.engine.loading import load_models
from core.limits import GenerationSettings

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a red fox in snow"

EXPECTED_LAYER = {
    "int8": (bnb.nn.Linear8bitLt, torch.int8),
    "nf4": (bnb.nn.Linear4bit, torch.uint8),
}


@pytest.fixture(scope="module")
def trio(tiny_engine: Engine):
    return tiny_engine.generate(PROMPT, tiny_engine.default_settings(seed=7))


@pytest.mark.parametrize("variant", ["int8", "nf4"])
@pytest.mark.parametrize("component", PER_VARIANT_COMPONENTS)
def test_quantized_variants_hold_real_bitsandbytes_layers(tiny_engine, variant, component):
    module = getattr(tiny_engine.models.pipelines[variant], component)
    layer_type, storage = EXPECTED_LAYER[variant]
    layers = [m for m in module.modules() if isinstance(m, layer_type)]
    assert layers, f"{variant} {component} has no {layer_type.__name__}"
    assert all(layer.weight.dtype == storage for layer in layers)
    # No plain Linear layer escaped quantization inside the transformer blocks / T5 layers,
    # except those the model class keeps unquantized on purpose (T5's ``wo``).
    kept = set(getattr(module, "_keep_in_fp32_modules", None) or [])
    plain = [
        name
        for name, m in module.named_modules()
        if type(m) is torch.nn.Linear
        and ("blocks" in name or "block." in name)
        and name.rsplit(".", 1)[-1] not in kept
    ]
    assert not plain, plain


def test_bf16_variant_is_not_quantized(tiny_engine):
    pipe = tiny_engine.models.pipelines["bf16"]
    for component in PER_VARIANT_COMPONENTS:
        module = getattr(pipe, component)
        assert not any(
            isinstance(m, bnb.nn.Linear8bitLt | bnb.nn.Linear4bit) for m in module.modules()
        )
        assert module.dtype == torch.bfloat16


def test_weight_bytes_order_nf4_int8_bf16(tiny_engine):
    sizes = {v: tiny_engine.models.weight_bytes(v) for v in VARIANT_NAMES}
    assert 0 < sizes["nf4"] < sizes["int8"] < sizes["bf16"]


def test_shared_components_are_the_same_objects_and_stay_bf16(tiny_engine):
    pipes = tiny_engine.models.pipelines
    for name in SHARED_COMPONENTS:
        first = getattr(pipes["bf16"], name)
        assert all(getattr(p, name) is first for p in pipes.values()), name
        if isinstance(first, torch.nn.Module):
            assert all(p.dtype == torch.bfloat16 for p in first.parameters()), name
    # Schedulers are stateful: one instance per pipeline, from the same config.
    schedulers = [p.scheduler for p in pipes.values()]
    assert len({id(s) for s in schedulers}) == len(schedulers)
    assert len({json.dumps(dict(s.config), sort_keys=True, default=str) for s in schedulers}) == 1
    # Per-variant components are distinct objects.
    for name in PER_VARIANT_COMPONENTS:
        assert len({id(getattr(p, name)) for p in pipes.values()}) == len(pipes)


def test_trio_images_and_figures(trio, tiny_engine):
    assert set(trio.results) == set(VARIANT_NAMES)
    for name, result in trio.results.items():
        assert result.image.size == (256, 256), name
        assert result.seconds > 0
        assert result.peak_rss_bytes and result.peak_rss_bytes > 0
        assert result.peak_allocated_bytes is None  # no GPU
        assert result.shared_weight_bytes == tiny_engine.models.shared_weight_bytes() > 0
    assert trio.results["bf16"].psnr is None
    for name in ("int8", "nf4"):
        assert 0 < trio.results[name].psnr < math.inf
        assert -1 <= trio.results[name].ssim < 1
    assert trio.results["bf16"].flip_mean is None
    for name in ("int8", "nf4"):
        assert 0 < trio.results[name].flip_mean < 1
    # The three images differ from one another.
    raw = {name: r.image.tobytes() for name, r in trio.results.items()}
    assert len(set(raw.values())) == 3
    # LLM.int8 keeps more precision than NF4.
    assert trio.results["int8"].psnr > trio.results["nf4"].psnr
    assert trio.settings.seed == 7 and trio.model == "tiny" and trio.device == "cpu"
    assert set(trio.versions) >= {"torch", "diffusers", "bitsandbytes"}


def test_metrics_are_stored_with_each_image_and_bf16_against_itself_is_perfect(trio, tmp_path):
    """PSNR, SSIM and FLIP mean of each quantized image are stored with it (finite); BF16
    has none (it is the reference), and measured against itself it scores inf, 1, 0."""
    from core.engine.perceptual import image_metrics
    from core.records import FLIP_PPD, IMAGE_METRICS
    from core.store.storage import Store

    with Store(tmp_path / "arena.db", tmp_path / "images") as store:
        stored = store.image_stats(store.save_generation(trio))
    assert all(stored["bf16"][name] is None for name in IMAGE_METRICS)
    for variant in ("int8", "nf4"):
        result = trio.results[variant]
        for name in IMAGE_METRICS:
            assert math.isfinite(stored[variant][name])
            assert stored[variant][name] == getattr(result, name)
    itself = image_metrics(trio.results["bf16"].image, trio.results["bf16"].image)
    assert (itself.psnr_db, itself.ssim, itself.flip_mean) == (math.inf, 1.0, 0.0)
    assert itself.flip_ppd == pytest.approx(FLIP_PPD) and round(FLIP_PPD, 2) == 67.02


def test_same_seed_gives_bit_identical_bf16_image(trio, tiny_engine):
    again = tiny_engine.generate(PROMPT, tiny_engine.default_settings(seed=7))
    assert again.results["bf16"].image.tobytes() == trio.results["bf16"].image.tobytes()
    other = tiny_engine.generate(PROMPT, tiny_engine.default_settings(seed=8))
    assert other.results["bf16"].image.tobytes() != trio.results["bf16"].image.tobytes()


@pytest.fixture
def count_pipeline_calls(tiny_engine, monkeypatch):
    calls: list[str] = []
    for name, pipe in tiny_engine.models.pipelines.items():
        forward = pipe.transformer.forward

        def spy(*args, _forward=forward, _name=name, **kwargs):
            calls.append(_name)
            return _forward(*args, **kwargs)

        monkeypatch.setattr(pipe.transformer, "forward", spy)
    return calls


BAD_INPUTS = [
    ("", {}, errors.EmptyPromptError),
    ("   \n\t ", {}, errors.EmptyPromptError),
    ("x" * 100_000, {}, errors.PromptTooLongError),
    ("a fox\x00", {}, errors.PromptControlCharacterError),
    ("a fox \x1b[31m", {}, errors.PromptControlCharacterError),
    (PROMPT, {"seed": -1}, errors.SeedOutOfRangeError),
    (PROMPT, {"seed": 2**32}, errors.SeedOutOfRangeError),
    (PROMPT, {"width": 250}, errors.InvalidSizeError),
    (PROMPT, {"height": 4096}, errors.InvalidSizeError),
    (PROMPT, {"width": 128}, errors.InvalidSizeError),
    (PROMPT, {"steps": 0}, errors.StepsOutOfRangeError),
    (PROMPT, {"steps": 101}, errors.StepsOutOfRangeError),
    (PROMPT, {"guidance": -0.5}, errors.GuidanceOutOfRangeError),
    (PROMPT, {"guidance": float("nan")}, errors.GuidanceOutOfRangeError),
    (PROMPT, {"max_sequence_length": 4}, errors.SequenceLengthOutOfRangeError),
    (PROMPT, {"max_sequence_length": 1024}, errors.SequenceLengthOutOfRangeError),
]


@pytest.mark.parametrize(("prompt", "changes", "error"), BAD_INPUTS)
def test_bad_input_raises_its_error_and_does_no_work(
    tiny_engine, count_pipeline_calls, prompt, changes, error
):
    settings = tiny_engine.default_settings(seed=1).with_(**changes)
    with pytest.raises(error):
        tiny_engine.generate(prompt, settings)
    assert count_pipeline_calls == []
    assert not tiny_engine.busy


def test_injected_out_of_memory_leaves_nothing_behind(tiny_engine, monkeypatch):
    transformer = tiny_engine.models.pipelines["int8"].transformer
    real_forward = transformer.forward
    activations: list[weakref.ref] = []

    def out_of_memory(hidden_states, *args, **kwargs):
        if not activations:
            # An activation held only by the failing frame, as a real OOM's would be.
            activation = hidden_states * 2
            activations.append(weakref.ref(activation))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_forward(hidden_states, *args, **kwargs)

    monkeypatch.setattr(transformer, "forward", out_of_memory)
    settings = tiny_engine.default_settings(seed=3).with_(steps=2)
    with pytest.raises(
        errors.GenerationOutOfMemoryError, match=r"int8.*ran out of GPU memory"
    ) as caught:
        tiny_engine.generate(PROMPT, settings)
    # The raised error keeps no chain back to the frames of the failed call ...
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    # ... so the failed call's activation was freed before the error reached the caller.
    assert activations and activations[0]() is None
    assert not tiny_engine.busy
    result = tiny_engine.generate(PROMPT, settings)
    assert set(result.results) == set(VARIANT_NAMES)


def test_out_of_memory_while_loading_is_a_named_one_line_error(monkeypatch, tmp_path):
    from core.engine import cli, loading

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 23.80 GiB")

    monkeypatch.setattr(loading, "_load_variant_components", out_of_memory)
    with pytest.raises(errors.LoadOutOfMemoryError) as caught:
        load_models(resolve_model("tiny", cuda_available=False), variants=["nf4"], device="cpu")
    message = str(caught.value)
    assert "\n" not in message and caught.value.__context__ is None
    assert "nf4: cpu" in message and "--max-gpu-memory" in message and "--offload" in message
    argv = ["--model", "tiny", "--device", "cpu", "--variants", "nf4", "--prompt", PROMPT]
    assert cli.main([*argv, "--out", "unused-never-written"]) == 2
    assert not Path("unused-never-written").exists()
    import app

    assert app.main(["--model", "tiny", "--db", str(tmp_path / "arena.db")]) == 2
    # The model loads before the database is opened: a failed start leaves no file.
    assert not (tmp_path / "arena.db").exists()


def _int8_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every int8 layer's weight and state tensors, by name (held, so no address is reused)."""
    found = {}
    for name, layer in module.named_modules():
        if isinstance(layer, bnb.nn.Linear8bitLt):
            for part, tensor in int8_tensors(layer).items():
                found[f"{name}.{part}"] = tensor
    return found


def _address(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _move_to_new_storage(module: torch.nn.Module) -> None:
    # What offload does to a module (a parent's .to(), i.e. nn.Module._apply), with a
    # function that gives every tensor new storage on the same (CPU) device.
    module._apply(lambda t: t.clone())


def test_int8_memory_follows_a_move_through_a_parent(trio, tiny_engine):
    settings = tiny_engine.default_settings(seed=7)
    # A fresh int8 pipeline: moved before its first call (weight.CB / SCB in use) ...
    engine = Engine(load_models(resolve_model("tiny", cuda_available=False), variants=["int8"],
                                device="cpu"))  # fmt: skip
    pipe = engine.models.pipelines["int8"]
    for _ in range(2):  # ... and again after a call (state.CB / SCB in use)
        for component in (pipe.transformer, pipe.text_encoder_2):
            before = _int8_tensors(component)
            assert any(".state." in n or ".weight." in n for n in before)
            _move_to_new_storage(component)
            after = _int8_tensors(component)
            assert before.keys() == after.keys()
            old = {_address(t) for t in before.values()}
            stale = [n for n, t in after.items() if _address(t) in old]
            assert not stale, f"{len(stale)} int8 tensors left on the old storage: {stale[:3]}"
        image = engine.generate(PROMPT, settings).results["int8"].image
        assert image.tobytes() == trio.results["int8"].image.tobytes()


def test_weights_count_quantization_state(tiny_engine, trio):
    models = tiny_engine.models
    nf4 = models.pipelines["nf4"]
    footprint = sum(getattr(nf4, c).get_memory_footprint() for c in PER_VARIANT_COMPONENTS)
    absmax = sum(
        m.weight.quant_state.absmax.nbytes
        for c in PER_VARIANT_COMPONENTS
        for m in getattr(nf4, c).modules()
        if isinstance(m, bnb.nn.Linear4bit)
    )
    assert models.weight_bytes("nf4") >= footprint + absmax
    # On the CPU every loaded module is in RAM: the resident total is all weights, once.
    assert trio.resident_weight_bytes == models.shared_weight_bytes() + sum(
        models.weight_bytes(v) for v in VARIANT_NAMES
    )
    for result in trio.results.values():
        assert result.activation_peak_bytes is None and result.standalone_peak_bytes is None


def test_progress_follows_variants_and_steps(tiny_engine):
    seen: list[tuple[str, int, int]] = []
    settings = tiny_engine.default_settings(seed=2).with_(steps=2)
    tiny_engine.generate(PROMPT, settings, progress=lambda v, s, n: seen.append((v, s, n)))
    assert seen == [(v, s, 2) for v in VARIANT_NAMES for s in (1, 2)]


def test_loading_from_a_local_folder(tmp_path):
    folder = tmp_path / "my-flux"
    shutil.copytree(ensure_tiny_checkpoint(), folder)
    spec = resolve_model(str(folder), cuda_available=False)
    assert spec.kind == "local" and spec.source == str(folder.resolve())
    models = load_models(spec, variants=["bf16", "nf4"], device="cpu")
    assert models.variants == ("bf16", "nf4")
    engine = Engine(models)
    generation = engine.generate(
        PROMPT,
        GenerationSettings.defaults(spec, 5).with_(
            steps=2, width=256, height=256, max_sequence_length=64
        ),
    )
    assert generation.results["nf4"].image.size == (256, 256)


def test_a_folder_that_is_not_a_pipeline_is_rejected(tmp_path):
    with pytest.raises(errors.InvalidSettingError, match=r"model_index\.json"):
        resolve_model(str(tmp_path), cuda_available=False)


def test_auto_model_is_micro_without_cuda_and_dev_with_it():
    assert resolve_model("auto", cuda_available=False).name == "micro"
    assert resolve_model("auto", cuda_available=True).name == "black-forest-labs/FLUX.1-dev"


def test_unreachable_hub_model_gives_a_clear_message(tmp_path):
    code = (
        "from core.config import resolve_model\n"
        "from core.engine.generation import Engine\n"
        "from core.errors import ModelUnavailableError\n"
        "spec = resolve_model('black-forest-labs/FLUX.1-dev', cuda_available=False)\n"
        "try:\n"
        "    Engine.load(spec, device='cpu')\n"
        "except ModelUnavailableError as e:\n"
        "    print('MESSAGE', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert "MESSAGE" in out.stdout, out.stderr[-2000:]
    message = out.stdout.split("MESSAGE", 1)[1]
    assert "black-forest-labs/FLUX.1-dev" in message
    assert "HF_TOKEN" in message and "--model micro" in message and "local" in message


def test_engine_command_line_writes_images_and_stats(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "core.engine", "--model", "tiny", "--device", "cpu",
         "--prompt", PROMPT, "--seed", "7", "--steps", "2", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for name in VARIANT_NAMES:
        assert (out / f"{name}.png").is_file()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["settings"]["seed"] == 7 and stats["settings"]["steps"] == 2
    figures = stats["variants"]
    assert (
        figures["nf4"]["weight_bytes"]
        < figures["int8"]["weight_bytes"]
        < figures["bf16"]["weight_bytes"]
    )
    assert figures["int8"]["psnr"] > figures["nf4"]["psnr"]
    assert all(
        figures[v]["seconds"] > 0 and figures[v]["peak_rss_bytes"] > 0 for v in VARIANT_NAMES
    )
    assert "variant" in result.stdout and "nf4" in result.stdout
    # On the CPU the process peak is labelled as the whole process's; no GPU figures.
    assert "whole process" in result.stdout
    assert all(figures[v]["standalone_peak_bytes"] is None for v in VARIANT_NAMES)
    assert stats["resident_weight_bytes"] > figures["bf16"]["weight_bytes"]
    # LLM.int8's per-matmul cast warning: one line per process, not one per matmul.
    assert result.stderr.count("inputs will be cast") == 1, result.stderr.count("will be cast")


def test_engine_command_line_rejects_bad_input_without_writing(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "core.engine", "--model", "tiny", "--device", "cpu",
         "--prompt", "  ", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 2
    assert "prompt is empty" in result.stderr
    assert not out.exists()


@pytest.mark.gpu
def test_gpu_trio_is_measured_with_cuda_peaks():
    engine = Engine.load("tiny", device="cuda")
    generation = engine.generate(PROMPT, engine.default_settings(seed=7))
    for result in generation.results.values():
        assert (
            result.peak_allocated_bytes
            and result.peak_reserved_bytes >= result.peak_allocated_bytes
        )
        assert result.peak_rss_bytes is None
    assert generation.placement == "resident"


# --- Pinned host copies of offloaded modules (core.engine.pinned) -------------------------


@pytest.fixture
def pinned_buffers(monkeypatch):
    """The pinned buffers the copies allocate. Without CUDA, page-locked memory cannot be
    had: only then is the allocation a plain host buffer; everything else is real."""
    made: list[torch.Tensor] = []
    real = pinned.allocate_pinned

    def allocate(nbytes: int) -> torch.Tensor:
        buffer = (
            real(nbytes) if torch.cuda.is_available() else torch.empty(nbytes, dtype=torch.uint8)
        )
        made.append(buffer)
        return buffer

    monkeypatch.setattr(pinned, "allocate_pinned", allocate)
    return made


def _in_buffers(tensor: torch.Tensor, buffers: list[torch.Tensor]) -> bool:
    start = tensor.data_ptr()
    return any(b.data_ptr() <= start < b.data_ptr() + b.numel() for b in buffers)


def _slot_tensors(mover: pinned.PinnedModules) -> list[torch.Tensor]:
    return [getattr(h, a) for h, a in pinned.state_slots(mover.modules)]


def test_pinned_copies_hold_every_tensor_move_on_and_come_back_without_allocating(
    trio, pinned_buffers
):
    """Each variant's transformer and T5 get one pinned copy each (int8's CB/SCB and NF4's
    quant state included); a move on gives new tensors and the same images; a move off
    through ``module.to("cpu")`` points every tensor back at the pinned buffers, copying
    and allocating nothing."""
    engine = Engine(load_models(resolve_model("tiny", cuda_available=False), device="cpu"))
    settings = engine.default_settings(seed=7)
    engine.generate(PROMPT, settings)  # NF4 repacks its state on the CPU at its first call
    movers = {}
    for variant in engine.variants:
        for module in engine.models.own_modules(variant):
            mover = pinned.PinnedModules([module], allocate=pinned.allocate_pinned)
            pinned.install_move_hook(module, mover)
            movers[(variant, type(module).__name__)] = mover
    assert len(pinned_buffers) >= len(movers)
    for (variant, _), mover in movers.items():
        held = _slot_tensors(mover)
        assert held and all(_in_buffers(t, pinned_buffers) for t in held), variant
        layout = pinned.arena_layout(
            [t.numel() * t.element_size() for t in {pinned._key(t): t for t in held}.values()]
        )
        assert mover.buffer_bytes == sum(layout[1])
        if variant == "int8":
            layers = [m for m in mover.modules[0].modules() if isinstance(m, bnb.nn.Linear8bitLt)]
            assert layers
            for layer in layers:  # CB is the int8 weight itself, wherever it is held
                cb = layer.state.CB if layer.state.CB is not None else layer.weight.CB
                assert cb.data_ptr() == layer.weight.data_ptr()
                assert all(_in_buffers(t, pinned_buffers) for t in int8_tensors(layer).values())
        mover.to_device(torch.device("cpu"))  # ordinary copies stand in for a device
        assert not any(_in_buffers(t, pinned_buffers) for t in _slot_tensors(mover))
    buffers_before = len(pinned_buffers)
    moved_on = engine.generate(PROMPT, settings)
    for variant in engine.variants:
        assert moved_on.results[variant].image.tobytes() == trio.results[variant].image.tobytes()
    for (variant, _), mover in movers.items():
        mover.modules[0].to("cpu")
        assert mover.on_host
        assert all(_in_buffers(t, pinned_buffers) for t in _slot_tensors(mover)), variant
        log = mover.log.take()
        assert log["on"]["bytes"] == mover.tensor_bytes and log["off"]["bytes"] == 0
    assert len(pinned_buffers) == buffers_before
    back = engine.generate(PROMPT, settings)
    for variant in engine.variants:
        assert back.results[variant].image.tobytes() == trio.results[variant].image.tobytes()
    module = engine.models.own_modules("bf16")[0]
    with pytest.raises(RuntimeError, match="can be moved, not cast"):
        module.to(torch.float32)


def test_pinned_buffers_are_packed_in_power_of_two_chunks():
    chunk = pinned.ARENA_CHUNK_BYTES
    places, buffers = pinned.arena_layout([chunk // 2, chunk // 2, 10, 3 * chunk, 100])
    assert buffers[0] == chunk and places[:2] == [(0, 0), (0, chunk // 2)]
    assert places[2] == (1, 0) and buffers[2] == 3 * chunk and places[3] == (2, 0)
    assert places[4] == (1, pinned.ALIGN_BYTES)
    assert pinned.pinned_bytes([chunk // 2, chunk // 2, 10]) == chunk + pinned.ALIGN_BYTES


def test_move_target_tells_a_move_from_a_cast():
    def applied(*args, **kwargs):
        """The function ``Module.to(*args, **kwargs)`` hands to ``_apply``."""
        seen = []
        module = torch.nn.Linear(1, 1)
        module._apply = lambda fn, recurse=True: seen.append(fn)
        module.to(*args, **kwargs)
        return seen[0]

    assert pinned.move_target(applied("cpu")) == torch.device("cpu")
    assert pinned.move_target(applied(torch.float32)) is None
    assert pinned.move_target(applied(memory_format=torch.channels_last)) is None
