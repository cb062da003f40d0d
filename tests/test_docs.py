"""README documents every flag and environment variable, as sqlite-utils' tests/test_docs.py
checks that its documentation names every command: the docs cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core import settings as app_settings

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
SECTION_TITLE = "### Flags and environment variables"

FLAGS = re.findall(r"--[a-z][a-z-]*", app_settings.build_app_parser().format_usage())
SPECS = {spec.name: spec for spec in app_settings.APP_SETTINGS}


def flags_section() -> str:
    """README's section on the app's flags, up to the next heading."""
    start = README.index(SECTION_TITLE) + len(SECTION_TITLE)
    end = README.find("\n#", start)
    return README[start : end if end != -1 else len(README)]


def table_rows() -> list[list[str]]:
    """The cells of each row of the section's table (flag, variable, default, meaning)."""
    rows = [line for line in flags_section().splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def row_of(flag: str) -> list[str]:
    matches = [cells for cells in table_rows() if f"`{flag}`" in cells[0]]
    assert len(matches) == 1, f"{flag} needs exactly one row in README's flags table"
    return matches[0]


def test_the_parser_has_a_flag_per_setting():
    assert "--no-share" in FLAGS
    assert {spec.flag for spec in app_settings.APP_SETTINGS} == set(FLAGS) - {"--no-share"}


@pytest.mark.parametrize("flag", FLAGS)
def test_every_flag_has_a_row(flag):
    row_of(flag)


@pytest.mark.parametrize("name", SPECS)
def test_every_variable_is_beside_its_flag(name):
    spec = SPECS[name]
    assert f"`{spec.variable}`" in row_of(spec.flag)[1]


@pytest.mark.parametrize("name", SPECS)
def test_every_default_is_the_settings_default(name):
    default = getattr(app_settings.AppSettings(), name)
    if default is None:
        shown = "none"
    elif isinstance(default, bool):
        shown = "on" if default else "off"
    elif isinstance(default, float):
        shown = f"`{default:g}`"
    elif isinstance(default, tuple):  # a list setting, written as its flag takes it
        shown = f"`{','.join(default)}`"
    else:
        shown = f"`{default}`"
    assert row_of(SPECS[name].flag)[2].startswith(shown)


def test_the_table_lists_no_flag_the_app_lacks():
    documented = {flag for cells in table_rows() for flag in re.findall(r"--[a-z-]+", cells[0])}
    assert documented == set(FLAGS)


def test_the_space_host_variable_is_documented():
    assert f"`{app_settings.SPACE_HOST_VARIABLE}`" in flags_section()


def variables_read_by_the_code() -> list[str]:
    sources = [REPO / "app.py", *sorted((REPO / "core").rglob("*.py"))]
    found = {
        name for path in sources for name in re.findall(r"\bSPOT_[A-Z0-9_]+", path.read_text())
    }
    return sorted(found)


@pytest.mark.parametrize("variable", variables_read_by_the_code())
def test_every_variable_the_code_reads_is_in_the_flags_section(variable):
    assert f"`{variable}`" in flags_section()


STATISTICS_TITLE = "## Data, statistics and export"


def statistics_section() -> str:
    """README's section on data and statistics, up to the next section of the same level."""
    start = README.index(STATISTICS_TITLE) + len(STATISTICS_TITLE)
    end = README.find("\n## ", start)
    return README[start : end if end != -1 else len(README)]


def test_the_statistics_section_names_the_live_test_and_its_guarantee():
    section = statistics_section()
    for words in (
        "e-process", "beta-mixture likelihood ratio", "Ville's inequality", "confidence sequence",
        "Cameron, Gelbach & Miller", "per person", "exploratory",
        "python -m core.bench.simulate --answers-needed",
    ):  # fmt: skip
        assert words in section, words


def test_the_statistics_section_lists_every_validation_criterion():
    from core.bench import validate

    section = statistics_section()
    assert "python -m core.bench.simulate --validate" in section
    for figure in validate.figures(studies=2):
        assert f"`{figure.name}`" in section, figure.name
