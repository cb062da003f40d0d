"""The registries and validators of core/config.py, and the app's settings from flags and
environment variables (AppSettings.from_argv, app.main)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from core import config, errors
from core.config import AppSettings, GenerationSettings, resolve_model, validate_prompt
from core.errors import (
    DuplicateVariantError,
    InvalidInputError,
    ReferenceVariantMissingError,
    TooManyVariantsError,
    UnknownVariantError,
)

REPO = Path(__file__).resolve().parent.parent


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


# --- The app's settings: flags and environment variables ----------------------------------

# Per setting: its flag's arguments and the value they give, then its variable's text and
# the value that gives; all three differ from each other and from the default.
SETTING_CASES: dict[str, tuple[list[str], object, str, object]] = {
    "model": (["--model", "tiny"], "tiny", "micro", "micro"),
    "variants": (
        ["--variants", "bf16,int8,nf4,torchao-int8,fp8-layerwise"],
        ("bf16", "int8", "nf4", "fp8-layerwise", "torchao-int8"),
        " nf4, bf16 ",
        ("bf16", "nf4"),
    ),
    "db": (["--db", "flag/a.db"], Path("flag/a.db"), "env/b.db", Path("env/b.db")),
    "images_dir": (["--images-dir", "flag-images"], Path("flag-images"), "env-im", Path("env-im")),
    "host": (["--host", "0.0.0.0"], "0.0.0.0", "127.0.0.2", "127.0.0.2"),
    "port": (["--port", "9001"], 9001, "9002", 9002),
    "offload": (["--offload", "group"], "group", "model", "model"),
    "share": (["--share"], True, "yes", True),
    "max_gpu_memory_gb": (["--max-gpu-memory", "24"], 24.0, "40.5", 40.5),
    "queue_size": (["--queue-size", "0"], 0, "9", 9),
    "generations_per_minute": (["--generations-per-minute", "0"], 0, "7", 7),
    "rounds_per_minute": (["--rounds-per-minute", "0"], 0, "12", 12),
    "round_ttl_seconds": (["--round-ttl", "60"], 60, "120", 120),
    "margin_points": (["--margin", "2.5"], 2.5, "10", 10.0),
    "answers_per_day": (["--answers-per-day", "50"], 50, "200", 200),
    "sync_to": (
        ["--sync-to", "backup"],
        "backup",
        "hf://datasets/me/votes",
        "hf://datasets/me/votes",
    ),
    "sync_every_minutes": (["--sync-every", "0.5"], 0.5, "10", 10.0),
    "sync_visibility": (["--sync-visibility", "public"], "public", "public", "public"),
    "pool": (["--pool", "rounds"], "rounds", "hf://datasets/me/rounds", "hf://datasets/me/rounds"),
}


def test_the_cases_cover_every_setting():
    assert set(SETTING_CASES) == set(config.ENV_VARS) == set(vars(AppSettings()))


def test_defaults_without_flags_or_environment():
    assert AppSettings.from_argv([], {}) == AppSettings()


@pytest.mark.parametrize("name", SETTING_CASES)
def test_each_flag(name):
    argv, value, _, _ = SETTING_CASES[name]
    settings = AppSettings.from_argv(argv, {})
    assert getattr(settings, name) == value
    assert getattr(settings, name) != getattr(AppSettings(), name)


@pytest.mark.parametrize("name", SETTING_CASES)
def test_each_environment_variable(name):
    _, _, text, value = SETTING_CASES[name]
    settings = AppSettings.from_argv([], {config.ENV_VARS[name]: text})
    assert getattr(settings, name) == value
    assert getattr(settings, name) != getattr(AppSettings(), name)


@pytest.mark.parametrize("name", [n for n in SETTING_CASES if n != "share"])
def test_a_flag_wins_over_its_variable(name):
    argv, value, text, _ = SETTING_CASES[name]
    assert getattr(AppSettings.from_argv(argv, {config.ENV_VARS[name]: text}), name) == value


def test_share_flag_and_variable():
    assert AppSettings.from_argv(["--no-share"], {"SPOT_SHARE": "true"}).share is False
    assert AppSettings.from_argv(["--share"], {"SPOT_SHARE": "0"}).share is True
    for text in ("1", "TRUE", "yes", "on", " Yes "):
        assert AppSettings.from_argv([], {"SPOT_SHARE": text}).share is True, text
    for text in ("0", "false", "No", "off"):
        assert AppSettings.from_argv([], {"SPOT_SHARE": text}).share is False, text


def test_an_empty_variable_counts_as_unset():
    environ = {variable: "" for variable in config.ENV_VARS.values()}
    assert AppSettings.from_argv([], environ) == AppSettings()


def test_the_variables_of_other_settings_are_kept_beside_a_flag():
    environ = {"SPOT_PORT": "9002", "SPOT_QUEUE_SIZE": "9", "SPOT_MODEL": "micro"}
    settings = AppSettings.from_argv(["--port", "9001", "--model", "tiny"], environ)
    assert (settings.port, settings.model, settings.queue_size) == (9001, "tiny", 9)


def test_the_process_environment_and_arguments_by_default(monkeypatch):
    monkeypatch.setenv("SPOT_QUEUE_SIZE", "11")
    monkeypatch.setattr(sys, "argv", ["app.py", "--port", "9003"])
    settings = AppSettings.from_argv()
    assert (settings.port, settings.queue_size) == (9003, 11)


def test_a_space_sets_the_host_unless_a_flag_or_spot_host_does():
    space = {"GRADIO_SERVER_NAME": "0.0.0.0"}
    assert AppSettings.from_argv([], space).host == "0.0.0.0"
    assert AppSettings.from_argv([], {**space, "SPOT_HOST": "127.0.0.3"}).host == "127.0.0.3"
    assert AppSettings.from_argv(["--host", "127.0.0.4"], space).host == "127.0.0.4"
    assert AppSettings.from_argv([], {"GRADIO_SERVER_NAME": ""}).host == AppSettings().host


def test_images_go_beside_a_given_database_unless_their_folder_is_given(tmp_path):
    db = tmp_path / "play" / "arena.db"
    assert AppSettings.from_argv(["--db", str(db)], {}).images_dir == db.parent / "images"
    assert AppSettings.from_argv([], {"SPOT_DB": str(db)}).images_dir == db.parent / "images"
    given = tmp_path / "pictures"
    for argv, environ in (
        (["--db", str(db), "--images-dir", str(given)], {}),
        (["--db", str(db)], {"SPOT_IMAGES_DIR": str(given)}),
        ([], {"SPOT_DB": str(db), "SPOT_IMAGES_DIR": str(given)}),
    ):
        assert AppSettings.from_argv(argv, environ).images_dir == given


# Values of the right type out of their range, each named with where it came from.
BAD_VALUES = [
    (["--port", "0"], {}, "--port must be a port number in 1…65535, got 0"),
    ([], {"SPOT_PORT": "70000"}, "SPOT_PORT must be a port number in 1…65535, got 70000"),
    (["--queue-size", "-1"], {}, "--queue-size must be 0 or more, got -1"),
    ([], {"SPOT_QUEUE_SIZE": "-3"}, "SPOT_QUEUE_SIZE must be 0 or more, got -3"),
    (["--generations-per-minute", "-2"], {}, "--generations-per-minute must be 0 or more"),
    ([], {"SPOT_ROUNDS_PER_MINUTE": "-1"}, "SPOT_ROUNDS_PER_MINUTE must be 0 or more, got -1"),
    (["--round-ttl", "0"], {}, "--round-ttl must be a positive number of seconds, got 0"),
    ([], {"SPOT_ROUND_TTL": "-5"}, "SPOT_ROUND_TTL must be a positive number of seconds"),
    (["--max-gpu-memory", "0"], {}, "--max-gpu-memory must be a positive number of GB, got 0.0"),
    ([], {"SPOT_MAX_GPU_MEMORY": "inf"}, "SPOT_MAX_GPU_MEMORY must be a positive number of GB"),
    (["--margin", "0"], {}, "--margin must be more than 0 and less than 50 points of chance"),
    ([], {"SPOT_MARGIN": "60"}, "SPOT_MARGIN must be more than 0 and less than 50 points"),
    (
        ["--margin", "nan"],
        {},
        "--margin must be more than 0 and less than 50 points of chance, got nan",
    ),
    (["--sync-every", "0"], {}, "--sync-every must be a positive number of minutes, got 0.0"),
    ([], {"SPOT_SYNC_VISIBILITY": "open"}, "SPOT_SYNC_VISIBILITY must be one of private, public"),
    ([], {"SPOT_OFFLOAD": "sometimes"}, "SPOT_OFFLOAD must be one of auto, none, model, group"),
    (["--model", " "], {}, "--model must name a model, got ' '"),
    (["--host", "my host"], {}, "--host must be a host name or an address, without spaces"),
    ([], {"GRADIO_SERVER_NAME": "a b"}, "GRADIO_SERVER_NAME must be a host name or an address"),
    (["--db", "."], {}, "--db must be a database file, not a folder, got '.'"),
    ([], {"SPOT_DB": "."}, "SPOT_DB must be a database file, not a folder"),
    (["--images-dir", "README.md"], {}, "--images-dir must be a folder, not a file"),
    # A variable that is not of its flag's type.
    ([], {"SPOT_PORT": "abc"}, "SPOT_PORT='abc' is not a valid --port value: expected an integer"),
    ([], {"SPOT_QUEUE_SIZE": "2.5"}, "SPOT_QUEUE_SIZE='2.5' is not a valid --queue-size value"),
    ([], {"SPOT_MARGIN": "five"}, "SPOT_MARGIN='five' is not a valid --margin value: expected a n"),
    ([], {"SPOT_SHARE": "maybe"}, "SPOT_SHARE='maybe' is not a valid --share value: expected 1,"),
]


@pytest.mark.parametrize(("argv", "environ", "message"), BAD_VALUES)
def test_a_bad_value_is_named(argv, environ, message, monkeypatch):
    monkeypatch.chdir(REPO)  # "." is a folder, README.md a file
    with pytest.raises(errors.InvalidSettingError) as caught:
        AppSettings.from_argv(argv, environ)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "abc"], "argument --port: invalid int value: 'abc'"),
        (["--margin", "x"], "argument --margin: invalid float value: 'x'"),
        (["--offload", "sometimes"], "argument --offload: invalid choice: 'sometimes'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--share=yes"], "--no-share: ignored explicit argument 'yes'"),
    ],
)
def test_a_malformed_flag_exits_with_the_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as caught:
        AppSettings.from_argv(argv, {})
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python app.py") and message in err


def test_help_lists_every_flag_and_variable(capsys):
    with pytest.raises(SystemExit) as caught:
        AppSettings.from_argv(["--help"], {"SPOT_PORT": "not even read"})
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for spec in config.APP_SETTINGS:
        assert spec.flag in out and f"[{spec.variable}]" in out
    assert "--no-share" in out and "GRADIO_SERVER_NAME" in out


# --- app.main: a bad setting is one line of log and status 2 ------------------------------


@pytest.mark.parametrize(("argv", "environ", "message"), BAD_VALUES)
def test_main_exits_2_on_a_bad_value_without_a_trace(argv, environ, message, monkeypatch, caplog):
    import app

    monkeypatch.chdir(REPO)
    with caplog.at_level(logging.ERROR):
        assert app.main(argv, environ) == 2
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert message in record.getMessage() and record.exc_info is None


def test_main_exits_2_on_a_model_that_does_not_exist(tmp_path, caplog):
    import app

    argv = ["--model", "no-such-thing", "--db", str(tmp_path / "a.db")]
    assert app.main(argv, {}) == 2
    assert "neither 'auto', 'tiny'" in caplog.text


def test_main_exits_2_on_a_malformed_flag(capsys):
    import app

    with pytest.raises(SystemExit) as caught:
        app.main(["--port", "abc"], {})
    assert caught.value.code == 2
    assert "invalid int value: 'abc'" in capsys.readouterr().err


@pytest.mark.slow
def test_python_app_py_reports_bad_settings_in_one_line(tmp_path):
    """The real command line: status 2, the message, no traceback; --help with status 0."""

    def run(*argv: str, **environ: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", **environ}
        return subprocess.run(
            [sys.executable, "app.py", *argv],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    bad = run("--db", str(tmp_path / "a.db"), SPOT_ROUND_TTL="0")
    assert bad.returncode == 2, bad.stderr
    assert "SPOT_ROUND_TTL must be a positive number of seconds, got 0" in bad.stderr
    assert "Traceback" not in bad.stderr
    malformed = run("--queue-size", "many")
    assert malformed.returncode == 2 and "Traceback" not in malformed.stderr
    assert "argument --queue-size: invalid int value: 'many'" in malformed.stderr
    shown = run("--help")
    assert shown.returncode == 0 and "[SPOT_MARGIN]" in shown.stdout


@pytest.mark.parametrize(
    ("text", "error", "says"),
    [
        ("bf16,int8,fp9", UnknownVariantError, "unknown variant(s) fp9"),
        ("bf16,int8,nf4,int8", DuplicateVariantError, "named twice: int8"),
        (
            "bf16,int8,nf4,fp8-layerwise,gguf-q8,torchao-int8",
            TooManyVariantsError,
            "at most 4 quantized variants",
        ),
        ("int8,nf4", ReferenceVariantMissingError, "must include bf16"),
        ("bf16", ReferenceVariantMissingError, "at least one quantized variant"),
    ],
)
def test_a_bad_variants_setting_gets_its_named_error(text, error, says):
    """Each bad --variants / SPOT_VARIANTS gets its own error, naming the flag or the
    variable; every one is an InvalidInputError (app.main: exit 2)."""
    for argv, environ, source in (
        (["--variants", text], {}, "--variants"),
        ([], {"SPOT_VARIANTS": text}, "SPOT_VARIANTS"),
    ):
        with pytest.raises(error) as caught:
            AppSettings.from_argv(argv, environ)
        assert str(caught.value).startswith(f"{source}: ") and says in str(caught.value)
        assert isinstance(caught.value, InvalidInputError)
