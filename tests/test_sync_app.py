"""``python app.py --sync-to DIR`` end to end: real processes, played through gradio_client,
stopped with SIGTERM or killed with SIGKILL, and a second app restored from the folder."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from gradio_client import Client

from core.game import sync
from tests.app_server import DEADLINE_SECONDS, free_port, generate_args
from tests.hub_standin import hub_standin

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
EVERY_MINUTES = "0.02"  # 1.2 s between pushes


def environment(tmp_path: Path, hub: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        **(hub or {"HF_HUB_OFFLINE": "1"}),
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "SPOT_GENERATIONS_PER_MINUTE": "0",
        "SPOT_ROUNDS_PER_MINUTE": "0",
    }


@contextmanager
def app_process(
    tmp_path: Path,
    name: str,
    target: Path | str | None,
    hub: dict[str, str] | None = None,
    args: tuple[str, ...] = ("--model", "tiny"),
) -> Iterator[tuple[subprocess.Popen, str]]:
    """``python app.py`` (on the tiny model unless ``args`` say otherwise) with its own
    database and ``--sync-to target`` (when given), until it answers; killed at the end if
    the test left it running. ``hub``: the variables that point huggingface_hub at the
    stand-in (tests/hub_standin.py)."""
    port = free_port()
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    log = open(folder / "log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            *(sys.executable, "app.py", *args, "--db", str(folder / "arena.db")),
            *("--port", str(port), "--sync-every", EVERY_MINUTES),
            *(() if target is None else ("--sync-to", str(target))),
        ],
        cwd=REPO,
        env=environment(tmp_path, hub),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            assert proc.poll() is None, (folder / "log").read_text()[-3000:]
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the app never answered"
                time.sleep(0.5)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        log.close()


def play(url: str) -> None:
    """Two players: three rounds answered (a trio, a duel and a ready trio) and one left open."""
    one = Client(url, verbose=False, download_files=False)
    one.predict(*generate_args("a red fox in snow", "trio", seed=1), api_name="/generate")
    one.predict("A", api_name="/guess")
    one.predict(*generate_args("a paper boat", "duel", seed=2), api_name="/generate")
    one.predict("cant_tell", api_name="/guess")
    two = Client(url, verbose=False, download_files=False)
    two.predict("trio", api_name="/ready_round")
    two.predict("B", api_name="/guess")
    two.predict("trio", api_name="/ready_round")  # never answered


def rows(db: Path, table: str) -> list[dict]:
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]


def stats_of(db: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "core.game.stats", "--db", str(db)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout)


def restored_copy(tmp_path: Path, target: Path | str, hub: dict[str, str] | None = None) -> Path:
    """Start a second app on an empty database with the same target, stop it, return its
    database."""
    with app_process(tmp_path, "second", target, hub) as (proc, _):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_SECONDS) == 0
    return tmp_path / "second" / "arena.db"


def assert_same_votes(first: Path, second: Path) -> None:
    for table in ("generations", "images", "rounds", "guesses"):
        assert rows(second, table) == rows(first, table), table
    assert len(rows(second, "guesses")) == 3
    a, b = stats_of(first), stats_of(second)
    assert b["counts"] == a["counts"]
    assert b["detection"] == a["detection"]


def test_sigterm_pushes_everything_and_an_empty_database_restores_it(tmp_path):
    target = tmp_path / "target"
    with app_process(tmp_path, "first", target) as (proc, url):
        play(url)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_SECONDS) == 0
    log = (tmp_path / "first" / "log").read_text()
    assert "pushed the outbox" in log and "Traceback" not in log
    assert_same_votes(tmp_path / "first" / "arena.db", restored_copy(tmp_path, target))


def test_sigkill_after_a_sync_interval_loses_nothing_acknowledged(tmp_path):
    target = tmp_path / "target"
    with app_process(tmp_path, "first", target) as (proc, url):
        play(url)
        first = tmp_path / "first" / "arena.db"
        tables = {"generation": "generations", "round": "rounds", "guess": "guesses"}
        acknowledged = {
            (kind, str(r["id"])) for kind, table in tables.items() for r in rows(first, table)
        }
        # Wait for the push that follows the last acknowledged row, then kill.
        deadline = time.monotonic() + DEADLINE_SECONDS
        while {(e["kind"], str(e["id"])) for e in sync.read_events(target)} != acknowledged:
            assert time.monotonic() < deadline, "the votes were never pushed"
            time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert_same_votes(tmp_path / "first" / "arena.db", restored_copy(tmp_path, target))


def test_an_unreachable_or_foreign_target_stops_the_start_in_one_line(tmp_path):
    def run(target: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "app.py", "--model", "tiny"),
                *("--db", str(tmp_path / "db" / "a.db"), "--sync-to", str(target)),
            ],
            cwd=REPO,
            env=environment(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )

    (tmp_path / "db").mkdir()
    unreachable = run(tmp_path / "no" / "such" / "folder")
    assert unreachable.returncode == 2
    errors = [line for line in unreachable.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "cannot be reached" in errors[0], unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    assert list((tmp_path / "db").iterdir()) == []  # no database, no outbox
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    refused = run(foreign)
    assert refused.returncode == 2 and "cat.jpg" in refused.stderr
    assert list((tmp_path / "db").iterdir()) == []
    assert [p.name for p in foreign.iterdir()] == ["cat.jpg"]


def hub_variables(tmp_path: Path, url: str) -> dict[str, str]:
    """huggingface_hub pointed at the stand-in, with a token and its own cache."""
    return {"HF_ENDPOINT": url, "HF_TOKEN": "hf_standin_token", "HF_HOME": str(tmp_path / "hf")}


def test_an_hf_dataset_receives_the_events_through_commit_scheduler_and_restores(tmp_path):
    target = "hf://datasets/spot/votes"
    with hub_standin() as hub:
        variables = hub_variables(tmp_path, hub.url)
        with app_process(tmp_path, "first", target, variables) as (proc, url):
            play(url)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=DEADLINE_SECONDS) == 0
        repo = hub.repos["spot/votes"]
        assert repo.private  # a private target makes a private dataset
        assert ("POST", "/api/datasets/spot/votes/commit/main") in hub.requests
        # What a Space would have pushed, read back as files: every acknowledged guess.
        pushed = tmp_path / "pushed"
        for rel, data in repo.files.items():
            (pushed / rel).parent.mkdir(parents=True, exist_ok=True)
            (pushed / rel).write_bytes(data)
        first = tmp_path / "first" / "arena.db"
        guesses = {e["id"] for e in sync.read_events(pushed) if e["kind"] == "guess"}
        assert guesses == {r["id"] for r in rows(first, "guesses")}
        assert len([p for p in repo.files if p.endswith(".png")]) == len(rows(first, "images"))
        assert_same_votes(first, restored_copy(tmp_path, target, variables))


def test_an_unreachable_hub_stops_the_start_in_one_line(tmp_path):
    (tmp_path / "db").mkdir()
    variables = hub_variables(tmp_path, f"http://127.0.0.1:{free_port()}")
    done = subprocess.run(
        [
            *(sys.executable, "app.py", "--model", "tiny", "--db", str(tmp_path / "db" / "a.db")),
            *("--sync-to", "hf://datasets/spot/votes"),
        ],
        cwd=REPO,
        env=environment(tmp_path, variables),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "cannot be reached" in errors[0], done.stderr
    assert list((tmp_path / "db").iterdir()) == []


def test_a_dataset_holding_foreign_files_is_refused_by_name(tmp_path):
    from tests.hub_standin import Repo

    (tmp_path / "db").mkdir()
    with hub_standin() as hub:
        hub.repos["spot/photos"] = Repo(private=True, files={"holiday/cat.jpg": b"\xff\xd8"})
        done = subprocess.run(
            [
                *(sys.executable, "app.py", "--model", "tiny"),
                *("--db", str(tmp_path / "db" / "a.db"), "--sync-to", "hf://datasets/spot/photos"),
            ],
            cwd=REPO,
            env=environment(tmp_path, hub_variables(tmp_path, hub.url)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2, done.stderr
        assert "holiday/cat.jpg" in done.stderr and "Traceback" not in done.stderr
        assert list((tmp_path / "db").iterdir()) == []
        assert [m for m, _ in hub.requests if m == "POST"] == []  # nothing was written
        assert hub.repos["spot/photos"].files == {"holiday/cat.jpg": b"\xff\xd8"}
