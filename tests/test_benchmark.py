"""The benchmark on the tiny checkpoint on the CPU, and the synthetic FLUX.1 shapes.

The full-scale synthetic model (23.8 GB transformer) is never built here: its shapes are
checked on the meta device, and the checkpoint writer is exercised on scaled-down configs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from core.bench import benchmark, roofline
from core.bench.goals import evaluate_goals
from core.bench.rows import BenchmarkSettings, Row
from core.checkpoints import synthetic
from core.config import MODELS, SYNTHETIC_DEV, SYNTHETIC_SCHNELL
from core.engine.generation import Engine
from core.engine.loading import load_models
from core.errors import InvalidSettingError
from core.limits import GenerationSettings

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("benchmark")
    argv = ["--model", "tiny", "--device", "cpu", "--steps", "2", "--repeats", "1"]
    argv += ["--warmup-steps", "1", "--out", str(out)]
    assert benchmark.main(argv) == 0
    return out


@pytest.mark.slow  # the benchmark run they read takes a minute
def test_writes_results_json_csv_and_png(tiny_run: Path) -> None:
    results = json.loads((tiny_run / "results.json").read_text())
    assert results["model"] == "tiny" and results["synthetic"] is False
    assert results["machine"]["device_type"] == "cpu"
    for package in ("torch", "diffusers", "transformers", "bitsandbytes", "accelerate"):
        assert results["machine"][package]
    assert results["settings"]["steps"] == 2 and results["settings"]["width"] == 256
    rows = {(r["mode"], r["variant"]): r for r in results["rows"]}
    assert set(rows) == {(m, v) for m in ("standalone", "engine") for v in ("bf16", "int8", "nf4")}
    with (tiny_run / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 6
    assert {row["device"] for row in table} == {"cpu"}
    assert all(float(row["seconds_median"]) > 0 for row in table)

    png = (tiny_run / "comparison.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and 20_000 < len(png) < 5_000_000
    with Image.open(tiny_run / "comparison.png") as image:
        assert image.width >= 600 and image.height >= 400


@pytest.mark.slow  # the benchmark run they read takes a minute
def test_figures_are_positive_and_consistent(tiny_run: Path) -> None:
    results = json.loads((tiny_run / "results.json").read_text())
    rows = {(r["mode"], r["variant"]): r for r in results["rows"]}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["seconds_median"] > 0 and len(row["seconds"]) == 1
        assert row["seconds_min"] <= row["seconds_median"] <= row["seconds_max"]
        assert row["load_seconds"] > 0
        assert row["peak_rss_bytes"] > 0 and row["loaded_rss_bytes"] > 0
        assert row["peak_allocated_bytes"] is None  # no GPU figures on the CPU
    for mode in ("standalone", "engine"):
        weights = {v: rows[(mode, v)]["weight_bytes"] for v in ("bf16", "int8", "nf4")}
        assert 0 < weights["nf4"] < weights["int8"] < weights["bf16"]
    # The same variant weighs the same alone and in the engine.
    for variant in ("bf16", "int8", "nf4"):
        assert (
            rows[("standalone", variant)]["weight_bytes"]
            == rows[("engine", variant)]["weight_bytes"]
        )

    engine = results["engine"]
    assert engine["status"] == "ok" and engine["load_seconds"] > 0
    assert engine["resident_bytes"] > 0
    assert engine["trio_seconds_median"] == pytest.approx(
        sum(rows[("engine", v)]["seconds_median"] for v in ("bf16", "int8", "nf4"))
    )
    assert results["matmul"]["tflops"] > 0 and "float32" in results["matmul"]["label"]
    assert results["floor"]["seconds"] > 0
    assert results["floor"]["image_tokens"] == (256 // 16) ** 2
    bf16 = rows[("standalone", "bf16")]
    assert bf16["floor_ratio"] == pytest.approx(
        bf16["seconds_median"] / results["floor"]["seconds"]
    )
    # Goals are only judged on a GPU.
    assert all(goal["met"] is None for goal in results["goals"].values())


def test_standalone_is_the_seed_recipe_and_gpu_only_figures_say_so(tiny_run: Path) -> None:
    results = json.loads((tiny_run / "results.json").read_text())
    rows = {(r["mode"], r["variant"]): r for r in results["rows"]}
    for variant in ("bf16", "int8", "nf4"):
        assert rows[("standalone", variant)]["placement"] == "seed recipe"
        # No reserved memory on the CPU: no alone-peak, and the goal says why.
        assert rows[("engine", variant)]["standalone_peak_bytes"] is None
        goal = results["goals"][f"alone_peak_vs_seed_recipe/{variant}"]
        assert goal["value"] is None and "CUDA" in goal["skipped"]
        assert rows[("engine", variant)]["moved_bytes"] is None  # nothing offloaded
    rates = results["copy_rates"]
    assert rates["pinned_to_device"] is None and "GPU-only" in rates["skipped"]
    assert not any(name.startswith("move_vs_link") for name in results["goals"])


def test_the_seed_recipe_runs_the_micro_model_on_the_cpu(tmp_path: Path) -> None:
    argv = ["--model", "micro", "--device", "cpu", "--modes", "standalone", "--variants", "nf4"]
    argv += ["--steps", "1", "--repeats", "1", "--warmup", "0", "--out", str(tmp_path)]
    assert benchmark.main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    (row,) = results["rows"]
    assert (row["mode"], row["variant"], row["status"]) == ("standalone", "nf4", "ok")
    assert row["placement"] == "seed recipe" and row["weight_bytes"] > 0


NEW_CPU_VARIANTS = ("fp8-layerwise", "gguf-q8", "gguf-q4", "torchao-int8")


@pytest.mark.slow  # seven variants loaded twice, standalone and in the engine
def test_every_cpu_variant_is_measured_alone_and_in_the_engine(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SPOT_CACHE_DIR", str(tmp_path / "cache"))  # the GGUF files
    variants = ("bf16", "int8", "nf4", *NEW_CPU_VARIANTS)
    argv = ["--model", "micro", "--device", "cpu", "--variants", ",".join(variants)]
    argv += ["--steps", "1", "--repeats", "1", "--warmup", "0", "--out", str(tmp_path / "o")]
    assert benchmark.main(argv) == 0  # no --prompt: the micro model's own example
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["settings"]["prompt"] == benchmark.MICRO_DEFAULT_PROMPT
    rows = {(r["mode"], r["variant"]): r for r in results["rows"]}
    assert set(rows) == {(m, v) for m in ("standalone", "engine") for v in variants}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["seconds_median"] > 0 and row["peak_rss_bytes"] > 0
    for variant in variants:
        alone, engine = rows[("standalone", variant)], rows[("engine", variant)]
        # The seed recipe loads each backend as a user would (GGUF from its single file,
        # layerwise casting after a bf16 load): the same bytes as the engine's.
        assert alone["weight_bytes"] == engine["weight_bytes"], variant
    weights = {v: rows[("engine", v)]["weight_bytes"] for v in variants}
    assert weights["gguf-q4"] < weights["gguf-q8"] < weights["fp8-layerwise"] < weights["bf16"]
    assert weights["torchao-int8"] < weights["fp8-layerwise"]
    with (tmp_path / "o" / "results.csv").open() as handle:
        assert {row["variant"] for row in csv.DictReader(handle)} == set(variants)


def _row(variant: str, mode: str, **figures: object) -> Row:
    return Row(variant=variant, mode=mode, **figures)  # type: ignore[arg-type]


def _bench(tiny_settings: GenerationSettings, cap: float | None) -> BenchmarkSettings:
    return BenchmarkSettings(
        spec=MODELS[SYNTHETIC_DEV],
        variants=("bf16", "int8", "nf4"),
        generation=tiny_settings,
        prompt="p",
        repeats=1,
        warmup=0,
        warmup_steps=1,
        offload="auto",
        max_gpu_memory_gb=cap,
        device=torch.device("cuda", 0),  # judged as on a GPU; nothing runs
        modes=("standalone", "engine"),
    )


def test_goals_hold_moves_to_the_link_alone_peaks_to_the_recipe_and_the_cap_to_resident():
    settings = GenerationSettings.defaults(MODELS[SYNTHETIC_DEV], 0)
    rows = [
        _row("bf16", "standalone", peak_reserved_bytes=100, standalone_peak_bytes=100),
        _row("int8", "standalone", peak_reserved_bytes=100, standalone_peak_bytes=100),
        _row("bf16", "engine", placement="group", standalone_peak_bytes=102),
        _row("int8", "engine", placement="model", standalone_peak_bytes=95,
             moved_bytes=10**9, move_seconds=0.05, move_floor_seconds=0.02),
    ]  # fmt: skip
    engine = {"trio_seconds_median": 30.0}
    compared = ("steps", "width", "height", "guidance", "max_sequence_length")
    resident = {
        "engine": {"placement": "resident", "trio_seconds_median": 20.0},
        "settings": {k: getattr(settings, k) for k in compared},
    }
    goals = evaluate_goals(rows, engine, _bench(settings, 24.0), resident)
    assert goals["move_vs_link/int8"]["value"] == pytest.approx(2.5)
    assert goals["move_vs_link/int8"]["met"] is False  # 2.5 > 1.5
    assert goals["alone_peak_vs_seed_recipe/bf16"]["met"] is True  # +2%
    assert goals["alone_peak_vs_seed_recipe/int8"]["met"] is False  # -5%
    capped = goals["capped_trio_vs_resident"]
    assert capped["value"] == pytest.approx(1.5) and capped["met"] is True  # 50 steps
    fewer = GenerationSettings.defaults(MODELS[SYNTHETIC_DEV], 0).with_(steps=4)
    goals = evaluate_goals(rows, engine, _bench(fewer, 24.0), resident)
    assert "differ" in goals["capped_trio_vs_resident"]["skipped"]
    goals = evaluate_goals(rows, engine, _bench(settings, 24.0), None)
    assert "--baseline" in goals["capped_trio_vs_resident"]["skipped"]
    assert "capped_trio_vs_resident" not in evaluate_goals(rows, engine, _bench(settings, None))


def test_the_resident_memory_goal_is_judged_for_the_trio_only():
    settings = GenerationSettings.defaults(MODELS[SYNTHETIC_DEV], 0)
    engine = {"placement": "resident", "resident_bytes": 60 * 10**9}
    trio = _bench(settings, None)
    assert evaluate_goals([], engine, trio)["resident_trio_bytes"]["met"] is True
    five = dataclasses.replace(trio, variants=("bf16", "int8", "nf4", "fp8-layerwise", "gguf-q8"))
    assert "resident_trio_bytes" not in evaluate_goals([], engine, five)
    # A capped run is compared only with a baseline of the same variants.
    baseline = {
        "engine": {"placement": "resident", "trio_seconds_median": 20.0},
        "settings": {**dataclasses.asdict(settings), "variants": list(trio.variants)},
    }
    capped = {"trio_seconds_median": 30.0}
    goal = evaluate_goals([], capped, dataclasses.replace(five, max_gpu_memory_gb=24.0), baseline)
    assert "other variants" in goal["capped_trio_vs_resident"]["skipped"]
    goal = evaluate_goals([], capped, dataclasses.replace(trio, max_gpu_memory_gb=24.0), baseline)
    assert goal["capped_trio_vs_resident"]["value"] == pytest.approx(1.5)


@pytest.mark.parametrize(
    "argv",
    [
        ["--repeats", "0"],
        ["--modes", "sideways"],
        ["--variants", "fp8"],
        ["--size", "300"],
        ["--model", "no/such/thing/here"],
        ["--model", "synthetic-flux-dev"],  # never built on the CPU
        ["--variants", "bf16,torchao-fp8"],  # float8 weight-only needs a recent CUDA GPU
        ["--model", "micro", "--prompt", "a red fox in snow"],  # words micro never saw
    ],
)
def test_bad_flags_fail_before_any_work(tmp_path: Path, argv: list[str]) -> None:
    out = tmp_path / "out"
    assert benchmark.main(["--model", "tiny", "--device", "cpu", *argv, "--out", str(out)]) == 2
    assert not out.exists()


def test_torchao_fp8_is_refused_on_the_cpu_by_name(tmp_path: Path, caplog) -> None:
    argv = ["--model", "micro", "--device", "cpu", "--variants", "bf16,torchao-fp8"]
    assert benchmark.main([*argv, "--modes", "standalone", "--out", str(tmp_path / "o")]) == 2
    assert "'torchao-fp8'" in caplog.text and "CUDA" in caplog.text
    assert not (tmp_path / "o").exists()


# --- Synthetic FLUX.1 shapes ---------------------------------------------------------------


def test_synthetic_dev_has_flux_dev_shapes() -> None:
    counts = synthetic.parameter_counts(synthetic.component_configs(MODELS[SYNTHETIC_DEV]))
    assert counts["transformer"] == pytest.approx(11.9e9, rel=0.01)
    assert counts["text_encoder_2"] == pytest.approx(4.76e9, rel=0.01)  # T5-XXL encoder
    assert counts["text_encoder"] == pytest.approx(123e6, rel=0.01)  # CLIP ViT-L/14 text
    assert counts["vae"] == pytest.approx(83.8e6, rel=0.01)
    assert 2 * counts["transformer"] == pytest.approx(23.8e9, rel=0.01)  # bytes in bf16


def test_synthetic_schnell_has_no_guidance_embedding() -> None:
    dev = synthetic.component_configs(MODELS[SYNTHETIC_DEV])
    schnell = synthetic.component_configs(MODELS[SYNTHETIC_SCHNELL])
    assert dev["transformer"] == {"guidance_embeds": True}
    assert schnell["transformer"] == {"guidance_embeds": False}
    assert schnell["scheduler"]["use_dynamic_shifting"] is False
    assert dev["scheduler"]["shift"] == 3.0 and dev["scheduler"]["use_dynamic_shifting"]
    dev_count = synthetic.parameter_counts(dev)["transformer"]
    assert synthetic.parameter_counts(schnell)["transformer"] < dev_count


def test_compute_floor_matches_fullscale_figure() -> None:
    shape = {"parameters": 11_901_408_320, "inner_dim": 3072, "layers": 57}
    settings = GenerationSettings.defaults(MODELS[SYNTHETIC_DEV])
    floor = roofline.compute_floor(shape, settings, tflops=800.0)
    assert floor["image_tokens"] == 4096 and floor["text_tokens"] == 512
    assert floor["flop_per_step"] == pytest.approx(1.25e14, rel=0.01)
    assert floor["flop_per_image"] == pytest.approx(6.2e15, rel=0.01)
    assert floor["seconds"] == pytest.approx(6.23e15 / 800e12, rel=0.01)


def _scaled_down(configs: dict) -> dict:
    """FLUX.1's component types and vocabularies with tiny widths and depths."""
    clip, t5 = configs["text_encoder"], configs["text_encoder_2"]
    return {
        **configs,
        "transformer": {
            **configs["transformer"],
            "num_layers": 1,
            "num_single_layers": 1,
            "attention_head_dim": 32,
            "num_attention_heads": 2,
            "joint_attention_dim": 64,
            "pooled_projection_dim": 64,
            "axes_dims_rope": (8, 12, 12),
        },
        "text_encoder": type(clip)(
            **{
                **clip.to_dict(),
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "projection_dim": 64,
            }
        ),
        "text_encoder_2": type(t5)(
            **{**t5.to_dict(), "d_model": 64, "d_kv": 32, "num_heads": 2, "d_ff": 128}
            | {"num_layers": 1}
        ),
        "vae": {
            **configs["vae"],
            "block_out_channels": (16, 16, 32, 32),
            "layers_per_block": 1,
            "norm_num_groups": 8,
        },
    }


def test_synthetic_writer_is_deterministic_and_loads_like_a_real_model(tmp_path: Path) -> None:
    spec = MODELS[SYNTHETIC_DEV]
    configs = _scaled_down(synthetic.component_configs(spec))
    first = synthetic.write_synthetic_checkpoint(tmp_path / "a", configs, torch.device("cpu"))
    second = synthetic.write_synthetic_checkpoint(tmp_path / "b", configs, torch.device("cpu"))
    for component in ("transformer", "text_encoder_2", "text_encoder", "vae"):
        files = sorted((first / component).glob("*.safetensors"))
        assert files
        for path in files:
            assert path.read_bytes() == (second / component / path.name).read_bytes()
    # The embeddings keep the real vocabulary sizes; T5's shared embedding is stored once.
    t5_config = json.loads((first / "text_encoder_2" / "config.json").read_text())
    clip_config = json.loads((first / "text_encoder" / "config.json").read_text())
    assert t5_config["vocab_size"] == 32128 and clip_config["vocab_size"] == 49408
    with safe_open(next((first / "text_encoder_2").glob("*.safetensors")), "pt") as handle:
        embeddings = [k for k in handle.keys() if "embed" in k or k.startswith("shared")]  # noqa: SIM118
    assert len(embeddings) == 1

    models = load_models(spec, variants=("bf16", "nf4"), device="cpu", source=first)
    tokenizer_2 = models.shared["tokenizer_2"]
    assert max(tokenizer_2("a red fox in snow").input_ids) < 32128
    generation = Engine(models).generate(
        "a red fox in snow",
        GenerationSettings(
            seed=1, steps=1, guidance=3.5, width=256, height=256, max_sequence_length=32
        ),
    )
    assert generation.results["nf4"].weight_bytes < generation.results["bf16"].weight_bytes
    assert generation.results["bf16"].image.size == (256, 256)


def test_synthetic_build_refuses_a_disk_too_small(tmp_path: Path, monkeypatch) -> None:
    class Usage:
        free = 10 * 10**9

    monkeypatch.setattr(synthetic.shutil, "disk_usage", lambda path: Usage())
    with pytest.raises(InvalidSettingError, match="needs about 33"):
        synthetic.ensure_synthetic_checkpoint(MODELS[SYNTHETIC_DEV], tmp_path)
    assert not any(tmp_path.iterdir())
