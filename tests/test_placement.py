"""The placement planner: resident when everything fits, offload when it does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from core.config import GIB
from core.engine.models import plan_placement
from core.errors import InvalidSettingError

VARIANTS = ("bf16", "int8", "nf4")
CUDA = torch.device("cuda", 0)


@pytest.fixture
def flux_dev_sized(tmp_path: Path) -> Path:
    """A folder whose weight files have FLUX.1-dev's sizes (sparse files, no real bytes)."""
    sizes = {"transformer": 23.8e9, "text_encoder_2": 9.5e9, "text_encoder": 0.25e9, "vae": 0.17e9}
    for name, size in sizes.items():
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "model.safetensors", "wb") as f:
            f.truncate(int(size))
    return tmp_path


def test_everything_resident_on_an_80_gb_gpu(flux_dev_sized):
    plan = plan_placement(flux_dev_sized, VARIANTS, CUDA, "auto", int(79 * GIB))
    assert plan.per_variant == dict.fromkeys(VARIANTS, "resident")
    assert 55e9 < plan.estimated_bytes < 70e9


def test_24_gb_cap_offloads_and_groups_what_does_not_fit(flux_dev_sized):
    plan = plan_placement(flux_dev_sized, VARIANTS, CUDA, "auto", int(24e9))
    # bf16's transformer (23.8 GB) cannot be loaded whole: it streams block by block.
    assert plan.per_variant == {"bf16": "group", "int8": "model", "nf4": "model"}


def test_explicit_override_wins(flux_dev_sized):
    plan = plan_placement(flux_dev_sized, VARIANTS, CUDA, "none", int(24e9))
    assert set(plan.per_variant.values()) == {"resident"}
    plan = plan_placement(flux_dev_sized, VARIANTS, CUDA, "group", int(79 * GIB))
    assert set(plan.per_variant.values()) == {"group"}


def test_cpu_runs_everything_on_the_cpu(flux_dev_sized):
    plan = plan_placement(flux_dev_sized, VARIANTS, torch.device("cpu"), "auto", None)
    assert set(plan.per_variant.values()) == {"cpu"}


def test_unknown_offload_is_rejected(flux_dev_sized):
    with pytest.raises(InvalidSettingError):
        plan_placement(flux_dev_sized, VARIANTS, CUDA, "sometimes", None)


def test_sparse_files_take_no_disk(flux_dev_sized):
    used = sum(os.stat(p).st_blocks for p in flux_dev_sized.rglob("*.safetensors"))
    assert used == 0 or used < 1024


def test_quantized_variants_are_never_planned_group(flux_dev_sized):
    # 12 GB: int8's transformer (~12.4 GB) does not fit either, but group offloading cannot
    # move bitsandbytes' quantization state, so quantized variants get model offload.
    plan = plan_placement(flux_dev_sized, VARIANTS, CUDA, "auto", int(12e9))
    assert plan.per_variant == {"bf16": "group", "int8": "model", "nf4": "model"}
