"""The app's settings from flags and environment variables (core/settings.py:
AppSettings.from_argv, one check per setting) and how app.main reports a bad one."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from core import errors
from core import settings as app_settings
from core.errors import (
    DuplicateVariantError,
    InvalidInputError,
    ReferenceVariantMissingError,
    TooManyVariantsError,
    UnknownVariantError,
)
from core.settings import AppSettings

REPO = Path(__file__).resolve().parent.parent


def test_offload_and_memory_checks():
    assert app_settings.check_offload("group") == "group"
    with pytest.raises(errors.InvalidSettingError):
        app_settings.check_offload("cpu")
    with pytest.raises(errors.InvalidSettingError):
        app_settings.check_max_gpu_memory(0)
    assert app_settings.check_max_gpu_memory(None) is None


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
    assert set(SETTING_CASES) == set(app_settings.ENV_VARS) == set(vars(AppSettings()))


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
    settings = AppSettings.from_argv([], {app_settings.ENV_VARS[name]: text})
    assert getattr(settings, name) == value
    assert getattr(settings, name) != getattr(AppSettings(), name)


@pytest.mark.parametrize("name", [n for n in SETTING_CASES if n != "share"])
def test_a_flag_wins_over_its_variable(name):
    argv, value, text, _ = SETTING_CASES[name]
    assert getattr(AppSettings.from_argv(argv, {app_settings.ENV_VARS[name]: text}), name) == value


def test_share_flag_and_variable():
    assert AppSettings.from_argv(["--no-share"], {"SPOT_SHARE": "true"}).share is False
    assert AppSettings.from_argv(["--share"], {"SPOT_SHARE": "0"}).share is True
    for text in ("1", "TRUE", "yes", "on", " Yes "):
        assert AppSettings.from_argv([], {"SPOT_SHARE": text}).share is True, text
    for text in ("0", "false", "No", "off"):
        assert AppSettings.from_argv([], {"SPOT_SHARE": text}).share is False, text


def test_an_empty_variable_counts_as_unset():
    environ = {variable: "" for variable in app_settings.ENV_VARS.values()}
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
    for spec in app_settings.APP_SETTINGS:
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
