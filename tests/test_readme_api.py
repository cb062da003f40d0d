"""README's scripted-client example runs as written against a launched app on the default
CPU install (the micro model): its first Python block under "API for scripted clients"
is executed with only the address replaced."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.app_server import launched_app

REPO = Path(__file__).resolve().parent.parent
SECTION_TITLE = "### API for scripted clients"


def api_examples() -> list[str]:
    """The Python blocks of README's API section, in order."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index(SECTION_TITLE)
    end = readme.find("\n## ", start)
    return re.findall(r"```python\n(.*?)```", readme[start:end], flags=re.S)


def test_the_flux_example_uses_the_reference_settings():
    micro, flux = (re.sub(r"\s+", " ", code) for code in api_examples()[:2])
    assert "True, 12, 4.0, 128, 128," in micro
    assert "True, 50, 3.5, 1024, 1024," in flux


@pytest.fixture(scope="module")
def micro_engine():
    from core.engine.generation import Engine

    return Engine.load("micro", device="cpu")


def test_the_micro_example_runs_as_written(micro_engine, tmp_path):
    code = api_examples()[0]
    assert 'Client("http://127.0.0.1:7860/")' in code
    with launched_app(micro_engine, tmp_path) as served:
        code = code.replace("http://127.0.0.1:7860/", served.url)

        def run() -> str:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(code, "README.md", "exec"), {})
            return printed.getvalue()

        # A fresh install: the round it generated is the only one, so no ready round.
        printed = run()
        assert re.search(r"Right|Not quite", printed)
        assert "no new duel round is ready" in printed
        assert served.counts()["guesses"] == 1
        # With a round another player generated in the pool, it plays that one too.
        printed = run()
        assert "no new duel round is ready" not in printed
        counts = served.counts()
    assert counts["generations"] == 2 and counts["guesses"] == 3
