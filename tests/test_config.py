"""The registries of core/config.py: variants, models, modes and the seed's figures."""

from __future__ import annotations

import json

import pytest

from core import config, errors
from core.config import resolve_model


def test_variant_registry_drives_names():
    assert config.VARIANT_NAMES == ("bf16", "int8", "nf4")
    assert config.QUANTIZED_VARIANTS == ("int8", "nf4")
    assert config.check_variants(["nf4", "bf16"]) == ("bf16", "nf4")
    with pytest.raises(errors.UnknownVariantError, match="fp8"):
        config.check_variants(["fp8"])


def test_resolve_model_names(tmp_path):
    assert resolve_model(config.FLUX_SCHNELL, cuda_available=True).default_steps == 4
    assert resolve_model("someone/some-flux", cuda_available=False).kind == "hub"
    for bad in ("", "   ", "not a model", "./missing", "/no/such/folder"):
        with pytest.raises(errors.InvalidSettingError):
            resolve_model(bad, cuda_available=False)


def test_local_folder_without_guidance_embeds_gets_schnell_defaults(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"guidance_embeds": False}))
    spec = resolve_model(str(tmp_path), cuda_available=True)
    assert (
        spec.kind == "local" and spec.default_steps == 4 and spec.max_sequence_length_limit == 256
    )


def test_seed_reference_matches_the_published_figures():
    table = {
        (r.variant, r.placement): (r.loaded_gb, r.peak_gb, r.seconds) for r in config.SEED_REFERENCE
    }
    assert table[("bf16", "resident")] == (31.4, 36.2, 12.0)
    assert table[("nf4", "resident")] == (12.6, 17.3, 12.0)
    assert table[("int8", "resident")] == (19.3, 24.4, 27.0)
    assert table[("nf4", "model offload")] == (12.4, 12.4, 17.0)
    assert table[("int8", "model offload")] == (19.2, 23.4, 27.0)
