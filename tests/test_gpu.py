"""Every CUDA path of the engine, on one GPU (skipped without one; run by .ci/gpu-check.sh).

They use the quarter-width synthetic FLUX.1-dev (``synthetic-flux-dev-quarter``: the full
model's depth and layer kinds, 2.3 GB, built on first use into $SPOT_CACHE_DIR) at a small
size and few steps, so they check behaviour, not speed. Each test appends its figures as
one JSON line to $SPOT_GPU_CHECK_OUT/gpu-figures.jsonl (bytes and seconds), for the note
of the session that runs them; the full-scale figures are the benchmark's.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.config import MODELS, PER_VARIANT_COMPONENTS, SYNTHETIC_DEV_QUARTER, VARIANT_NAMES
from core.engine import pinned
from core.engine.generation import Engine
from core.engine.loading import model_configs
from core.engine.measure import release_memory, rss_bytes, tensor_bytes
from core.engine.placement import ACTIVATION_HEADROOM, MIN_HEADROOM_BYTES, model_sizes
from core.errors import GenerationOutOfMemoryError

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a red fox sitting in fresh snow at sunrise"
SIZE, STEPS = 512, 4
MIB = 2**20


def record(check: str, **figures: object) -> None:
    folder = Path(os.environ.get("SPOT_GPU_CHECK_OUT", "data/gpu-check"))
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "gpu-figures.jsonl").open("a") as handle:
        handle.write(json.dumps({"check": check, **figures}, default=str) + "\n")


def digest(image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()[:16]


def settings(engine: Engine, seed: int = 7):
    return engine.default_settings(seed).with_(width=SIZE, height=SIZE, steps=STEPS)


def own_on_device(engine: Engine, variant: str) -> int:
    return tensor_bytes(engine.models.own_modules(variant), engine.models.device)


@pytest.fixture(params=["none", "model", "group"])
def placed(request):
    engine = Engine.load(SYNTHETIC_DEV_QUARTER, device="cuda", offload=request.param)
    yield request.param, engine
    del engine
    release_memory(torch.device("cuda"))


def test_each_placement_generates_and_measures_each_variant(placed):
    offload, engine = placed
    generation = engine.generate(PROMPT, settings(engine))
    figures = {}
    for name, result in generation.results.items():
        assert result.activation_peak_bytes is not None and result.activation_peak_bytes > 0
        # In max_memory_reserved terms: at least what the variant holds on the device.
        assert result.standalone_peak_bytes is not None and result.standalone_peak_bytes > 0
        assert result.peak_rss_bytes is None
        figures[name] = {
            **{k: v for k, v in result.stats().items() if k.endswith(("_bytes", "seconds"))},
            "image": digest(result.image),
            "own_on_device_after_bytes": own_on_device(engine, name),
        }
        if offload == "model":
            # Offload gives the device back: LLM.int8 too (core.engine.int8).
            assert own_on_device(engine, name) == 0, name
    if offload == "none":
        assert generation.resident_weight_bytes >= sum(
            r.weight_bytes for r in generation.results.values()
        )
    record(
        f"placement {offload}",
        plan=engine.models.plan.summary(),
        resident_weight_bytes=generation.resident_weight_bytes,
        variants=figures,
    )


def test_int8_offload_gives_its_memory_back_and_comes_back_identical():
    engine = Engine.load(SYNTHETIC_DEV_QUARTER, variants=["int8"], device="cuda", offload="none")
    first = engine.generate(PROMPT, settings(engine)).results["int8"].image
    pipe = engine.models.pipelines["int8"]
    own = engine.models.weight_bytes("int8")
    release_memory(engine.models.device)
    before = torch.cuda.memory_allocated()
    for name in PER_VARIANT_COMPONENTS:
        getattr(pipe, name).to("cpu")  # a parent's .to(), as offload moves it
    release_memory(engine.models.device)
    after = torch.cuda.memory_allocated()
    record("int8 move-off", own_bytes=own, allocated_before=before, allocated_after=after)
    assert own_on_device(engine, "int8") == 0
    assert before - after >= 0.95 * own, (before, after, own)
    for name in PER_VARIANT_COMPONENTS:
        getattr(pipe, name).to(engine.models.device)
    again = engine.generate(PROMPT, settings(engine)).results["int8"].image
    assert again.tobytes() == first.tobytes()


def test_model_offload_waits_in_pinned_copies_and_moves_off_without_pageable_memory():
    engine = Engine.load(SYNTHETIC_DEV_QUARTER, device="cuda", offload="model")
    models = engine.models
    engine.generate(PROMPT, settings(engine))
    moves = models.take_moves()
    for name in VARIANT_NAMES:
        for mover in models.movers[name]:
            assert mover.pinned and mover.on_host, name
            held = [getattr(h, a) for h, a in pinned.state_slots(mover.modules)]
            assert all(t.is_pinned() for t in held), name
        own = sum(m.tensor_bytes for m in models.movers[name])
        assert moves[name]["on"]["bytes"] >= own and moves[name]["off"]["bytes"] == 0
    # Moving off allocates no pageable memory: the process RSS does not grow by the weights.
    release_memory(models.device)
    rss_before = rss_bytes()
    started = time.perf_counter()
    for name in VARIANT_NAMES:
        for module in models.own_modules(name):
            module.to(models.device)
            module.to("cpu")
    seconds = time.perf_counter() - started
    growth = rss_bytes() - rss_before
    weights = sum(models.weight_bytes(v) for v in VARIANT_NAMES)
    record(
        "pinned model offload",
        moves=moves,
        round_trip_seconds=seconds,
        weight_bytes=weights,
        rss_growth_bytes=growth,
    )
    assert growth < 0.05 * weights, (growth, weights)
    assert all(own_on_device(engine, v) == 0 for v in VARIANT_NAMES)


def test_under_a_cap_bf16_keeps_blocks_resident_and_makes_the_resident_image():
    resident = Engine.load(SYNTHETIC_DEV_QUARTER, variants=["bf16"], device="cuda", offload="none")
    want = resident.generate(PROMPT, settings(resident)).results["bf16"].image
    del resident
    release_memory(torch.device("cuda"))
    sizes = model_sizes(model_configs(MODELS[SYNTHETIC_DEV_QUARTER]))
    transformer = sizes.components["transformer"]
    headroom = max(MIN_HEADROOM_BYTES, int(ACTIVATION_HEADROOM * transformer.bytes["none"]))
    # Too small for the transformer whole, with room for about half of its blocks.
    cap = sizes.shared_bytes() + headroom + transformer.largest_block_bytes
    cap += transformer.bytes["none"] // 2
    try:
        engine = Engine.load(
            SYNTHETIC_DEV_QUARTER, variants=["bf16"], device="cuda", max_gpu_memory_gb=cap / 1e9
        )
        placed = engine.models.plan.variants["bf16"]
        assert placed.mode == "group" and placed.resident_blocks and placed.streamed_bytes > 0
        got = engine.generate(PROMPT, settings(engine)).results["bf16"]
        moves = engine.models.take_moves()
        record(
            "partial residency",
            cap_bytes=cap,
            resident_blocks=len(placed.resident_blocks),
            resident_block_bytes=placed.resident_block_bytes,
            streamed_bytes_per_step=placed.streamed_bytes,
            seconds=got.seconds,
            peak_reserved_bytes=got.peak_reserved_bytes,
            moves=moves,
        )
        assert moves["bf16"]["on"]["bytes"] >= placed.resident_block_bytes * 0.99
        assert got.peak_reserved_bytes <= cap
        assert got.image.tobytes() == want.tobytes()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


@pytest.mark.parametrize("offload", ["none", "model"])
def test_a_real_out_of_memory_leaves_nothing_and_the_next_call_works(offload):
    engine = Engine.load(SYNTHETIC_DEV_QUARTER, device="cuda", offload=offload)
    reference = engine.generate(PROMPT, settings(engine))
    release_memory(engine.models.device)
    before = torch.cuda.memory_allocated()
    transformer = engine.models.pipelines["int8"].transformer
    calls = []

    def exhaust(module, args):
        calls.append(1)
        if len(calls) == 3:  # mid-denoising, with activations alive
            torch.empty(2**50, dtype=torch.uint8, device=engine.models.device)

    handle = transformer.register_forward_pre_hook(exhaust)
    try:
        with pytest.raises(GenerationOutOfMemoryError):
            engine.generate(PROMPT, settings(engine))
    finally:
        handle.remove()
    release_memory(engine.models.device)
    after = torch.cuda.memory_allocated()
    left = {v: own_on_device(engine, v) for v in VARIANT_NAMES} if offload == "model" else {}
    record(f"oom {offload}", allocated_before=before, allocated_after=after, own_left=left)
    assert after <= before + MIB
    assert not any(left.values()), left
    again = engine.generate(PROMPT, settings(engine))
    for name in VARIANT_NAMES:
        assert digest(again.results[name].image) == digest(reference.results[name].image), name


def test_same_seed_same_images_other_seed_other_images():
    engine = Engine.load(SYNTHETIC_DEV_QUARTER, device="cuda", offload="none")
    first, second = (engine.generate(PROMPT, settings(engine, 7)) for _ in range(2))
    other = engine.generate(PROMPT, settings(engine, 8))
    record(
        "determinism",
        seed7=[digest(r.image) for r in first.results.values()],
        seed7_again=[digest(r.image) for r in second.results.values()],
    )
    for name in VARIANT_NAMES:
        assert first.results[name].image.tobytes() == second.results[name].image.tobytes(), name
    assert other.results["bf16"].image.tobytes() != first.results["bf16"].image.tobytes()


def test_the_app_serves_a_round_on_the_gpu(tmp_path):
    import httpx
    from gradio_client import Client

    from tests.app_server import free_port

    port = free_port()
    log = (tmp_path / "app.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", SYNTHETIC_DEV_QUARTER, "--port", str(port),
         "--db", str(tmp_path / "arena.db")],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
                break
            except httpx.TransportError:  # not listening yet: poll every 2 s
                assert time.monotonic() < deadline, "the app did not start in 5 minutes"
                time.sleep(2)
        started = time.perf_counter()
        out = client.predict(PROMPT, "trio", 7, False, STEPS, 3.5, SIZE, SIZE, api_name="/generate")
        seconds = time.perf_counter() - started
        assert "original" in out[0]
        verdict, table = client.predict("A", api_name="/guess")[:2]
        assert "**A** = " in verdict and len(table["data"]) == 3
        assert "Peak alone (GiB)" in table["headers"]  # the standalone-equivalent peak
        record("app round", generate_seconds=seconds, headers=table["headers"], rows=table["data"])
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
