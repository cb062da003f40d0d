"""Ready rounds made elsewhere: ``python -m core.bench.pool`` writes generations to a folder
(resumable), and an app that cannot load its model serves them (``--pool``)."""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from core.bench import pool
from core.game import sync
from tests.app_server import DEADLINE_SECONDS, generate_args
from tests.test_sync_app import app_process, rows

pytestmark = pytest.mark.slow

PROMPTS = "# three prompts\na red fox in snow\na paper boat on a pond\n\na lighthouse at dusk\n"


def make(tmp_path, count: int) -> int:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS)
    argv = ["--prompts", str(prompts), "--count", str(count), "--model", "tiny"]
    argv += ["--out", str(tmp_path / "pool"), "--steps", "2", "--size", "256"]
    return pool.main(argv)


def generations_in(target) -> list[tuple[str, int]]:
    return [
        (e["row"]["prompt"], e["row"]["seed"])
        for e in sync.read_events(target)
        if e["kind"] == "generation"
    ]


def test_a_pool_is_written_resumed_and_played_by_an_app_without_a_local_engine(tmp_path):
    assert make(tmp_path, 3) == 0
    target = tmp_path / "pool"
    made = generations_in(target)
    assert sorted(made) == sorted(
        [("a red fox in snow", 0), ("a paper boat on a pond", 0), ("a lighthouse at dusk", 0)]
    )
    # Resumable: asked for four, it makes only the one missing (the first prompt, seed 1).
    assert make(tmp_path, 4) == 0
    again = generations_in(target)
    assert len(again) == 4 and Counter(again).most_common(1)[0][1] == 1
    assert ("a red fox in snow", 1) in again

    # An app for a model it cannot load here (no network, no weights) serves the pool.
    args = ("--model", "black-forest-labs/FLUX.1-schnell", "--pool", str(target))
    with app_process(tmp_path, "server", None, args=args) as (proc, url):
        player = Client(url, verbose=False, download_files=False)
        with pytest.raises(AppError, match="no local engine"):
            player.predict(*generate_args("a cat"), api_name="/generate")
        for answer in ("A", "B", "cant_tell"):
            player.predict("trio", api_name="/ready_round")
            reveal = player.predict(answer, api_name="/guess")
            assert "made elsewhere" in " ".join(reveal[1]["headers"])
        shown = json.dumps(player.predict(api_name="/results"))
        assert "Made elsewhere" in shown and "from the pool" in shown
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_SECONDS) == 0
    db = tmp_path / "server" / "arena.db"
    assert len(rows(db, "guesses")) == 3
    imported = rows(db, "generations")
    assert len(imported) == 4 and all(g["origin"] for g in imported)
    log = (tmp_path / "server" / "log").read_text()
    assert "no local engine" in log and "imported 4 generation(s)" in log
