"""The registries and validators of core/config.py."""

from __future__ import annotations

import json

import pytest

from core import config, errors
from core.config import GenerationSettings, resolve_model, validate_prompt


def test_variant_registry_drives_names():
    assert config.VARIANT_NAMES == ("bf16", "int8", "nf4")
    assert config.QUANTIZED_VARIANTS == ("int8", "nf4")
    assert config.check_variants(["nf4", "bf16"]) == ("bf16", "nf4")
    with pytest.raises(errors.UnknownVariantError, match="fp8"):
        config.check_variants(["fp8"])


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("  a fox  ", "a fox"),
        ("line one\nline two\ttab", "line one\nline two\ttab"),
        ("é 🦊", "é 🦊"),
        ("a family 👨\u200d👩\u200d👧", "a family 👨\u200d👩\u200d👧"),  # joiners inside emoji
        ("שלום\u200f fox", "שלום\u200f fox"),  # a right-to-left mark is not an override
    ],
)
def test_valid_prompts(prompt, expected):
    assert validate_prompt(prompt) == expected


@pytest.mark.parametrize(
    ("prompt", "error"),
    [
        ("", errors.EmptyPromptError),
        (" \t\n", errors.EmptyPromptError),
        (None, errors.EmptyPromptError),
        (42, errors.EmptyPromptError),
        ("x" * (config.PROMPT_MAX_CHARS + 1), errors.PromptTooLongError),
        ("bell\x07", errors.PromptControlCharacterError),
        ("del\x7f", errors.PromptControlCharacterError),
        ("c1\x85", errors.PromptControlCharacterError),
    ],
)
def test_invalid_prompts(prompt, error):
    with pytest.raises(error):
        validate_prompt(prompt)


@pytest.mark.parametrize(
    ("prompt", "error", "message"),
    [
        ("a \ud800 fox", errors.PromptEncodingError, "lone surrogate U\\+D800"),
        ("\udfff", errors.PromptEncodingError, "lone surrogate U\\+DFFF"),
        ("\u200b\u200c\u200d", errors.PromptInvisibleError, "no visible character"),
        ("\ufeff", errors.PromptInvisibleError, "no visible character"),
        (" \u2060 \ufeff\u3164 ", errors.PromptInvisibleError, "no visible character"),
        ("a \u202e xof", errors.PromptBidiControlError, "bidirectional control U\\+202E"),
        ("\u2066fox\u2069", errors.PromptBidiControlError, "bidirectional control U\\+2066"),
    ],
)
def test_prompts_that_are_not_visible_text(prompt, error, message):
    with pytest.raises(error, match=message):
        validate_prompt(prompt)


def test_a_long_bad_value_is_quoted_short():
    with pytest.raises(errors.InvalidSettingError) as error:
        config.coerce_number("9" * 10**6, int, "seed")
    message = str(error.value)
    assert len(message) < 150 and "(1000002 characters)" in message
    assert (
        errors.excerpt(10**5000) == "a value too long to quote"
    )  # Python refuses to print it at all


def test_prompt_at_the_limit_is_accepted():
    assert len(validate_prompt("x" * config.PROMPT_MAX_CHARS)) == config.PROMPT_MAX_CHARS


def test_settings_defaults_follow_the_model():
    dev = GenerationSettings.defaults(config.MODELS[config.FLUX_DEV])
    assert (dev.steps, dev.guidance, dev.width, dev.max_sequence_length) == (50, 3.5, 1024, 512)
    schnell = GenerationSettings.defaults(config.MODELS[config.FLUX_SCHNELL])
    assert (schnell.steps, schnell.guidance, schnell.max_sequence_length) == (4, 0.0, 256)


def test_schnell_rejects_sequence_length_over_256():
    spec = config.MODELS[config.FLUX_SCHNELL]
    with pytest.raises(errors.SequenceLengthOutOfRangeError, match="256"):
        GenerationSettings.defaults(spec).with_(max_sequence_length=512).validate(spec)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"seed": True}, errors.SeedOutOfRangeError),
        ({"seed": 1.0}, errors.SeedOutOfRangeError),
        ({"width": 1040.0}, errors.InvalidSizeError),
        ({"steps": "4"}, errors.StepsOutOfRangeError),
        ({"guidance": "3"}, errors.GuidanceOutOfRangeError),
        ({"guidance": float("inf")}, errors.GuidanceOutOfRangeError),
    ],
)
def test_settings_reject_wrong_types(changes, error):
    spec = config.MODELS[config.TINY_MODEL]
    with pytest.raises(error):
        GenerationSettings.defaults(spec).with_(**changes).validate(spec)


def test_validate_makes_guidance_a_float():
    spec = config.MODELS[config.TINY_MODEL]
    assert GenerationSettings.defaults(spec).with_(guidance=3).validate(spec).guidance == 3.0


@pytest.mark.parametrize(
    ("value", "kind", "expected"), [(7, int, 7), (7.0, int, 7), (3, float, 3.0), (2.5, float, 2.5)]
)
def test_coerce_number(value, kind, expected):
    result = config.coerce_number(value, kind, "x")
    assert result == expected and type(result) is kind


@pytest.mark.parametrize(("value", "kind"), [(7.5, int), ("7", int), (None, float), (True, int)])
def test_coerce_number_rejects(value, kind):
    with pytest.raises(errors.InvalidSettingError):
        config.coerce_number(value, kind, "x")


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


def test_offload_and_memory_checks():
    assert config.check_offload("group") == "group"
    with pytest.raises(errors.InvalidSettingError):
        config.check_offload("cpu")
    with pytest.raises(errors.InvalidSettingError):
        config.check_max_gpu_memory(0)
    assert config.check_max_gpu_memory(None) is None


def test_seed_reference_matches_the_published_figures():
    table = {
        (r.variant, r.placement): (r.loaded_gb, r.peak_gb, r.seconds) for r in config.SEED_REFERENCE
    }
    assert table[("bf16", "resident")] == (31.4, 36.2, 12.0)
    assert table[("nf4", "resident")] == (12.6, 17.3, 12.0)
    assert table[("int8", "resident")] == (19.3, 24.4, 27.0)
    assert table[("nf4", "model offload")] == (12.4, 12.4, 17.0)
    assert table[("int8", "model offload")] == (19.2, 23.4, 27.0)
