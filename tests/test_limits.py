"""What one request may ask for (core/limits.py): the prompt's rules, the numeric limits
of GenerationSettings, numbers from the UI and the API."""

from __future__ import annotations

import pytest

from core import config, errors, limits
from core.limits import GenerationSettings, validate_prompt


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
        ("x" * (limits.PROMPT_MAX_CHARS + 1), errors.PromptTooLongError),
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
        limits.coerce_number("9" * 10**6, int, "seed")
    message = str(error.value)
    assert len(message) < 150 and "(1000002 characters)" in message
    assert (
        errors.excerpt(10**5000) == "a value too long to quote"
    )  # Python refuses to print it at all


def test_prompt_at_the_limit_is_accepted():
    assert len(validate_prompt("x" * limits.PROMPT_MAX_CHARS)) == limits.PROMPT_MAX_CHARS


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
    result = limits.coerce_number(value, kind, "x")
    assert result == expected and type(result) is kind


@pytest.mark.parametrize(("value", "kind"), [(7.5, int), ("7", int), (None, float), (True, int)])
def test_coerce_number_rejects(value, kind):
    with pytest.raises(errors.InvalidSettingError):
        limits.coerce_number(value, kind, "x")
