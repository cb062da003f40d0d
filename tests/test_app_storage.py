"""The launched app on a full database: the player is told their vote was not recorded,
and nothing is recorded."""

from __future__ import annotations

import random
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from core.errors import StorageFullError
from core.game.rounds import Game
from tests.app_server import generate_args, launched_app

pytestmark = pytest.mark.slow


def test_full_storage_tells_the_player_their_vote_was_not_recorded(tiny_engine, tmp_path):
    with launched_app(tiny_engine, tmp_path, max_pages=60) as served:
        c = Client(served.url, verbose=False, download_files=False)
        c.predict(*generate_args("a kettle", "duel"), api_name="/generate")
        fillers = []
        with pytest.raises(StorageFullError):  # other sessions' rounds fill the database
            for k in range(100_000):
                round_id = served.store.insert_round(
                    generation_id=1,
                    mode="duel",
                    session_id=f"filler-{k}",
                    compared_variant="nf4",
                    answer_key={"A": "bf16", "B": "nf4"},
                    created_at=time.time(),
                    expires_at=time.time() + 600,
                )
                fillers.append((f"filler-{k}", round_id))
        game = Game(served.store, random.Random(0), rounds_per_minute=0)
        with pytest.raises(StorageFullError):  # and their guesses, up to the last page
            for session, round_id in fillers:
                game.guess(session, round_id, "A")
        before = served.counts()["guesses"]
        with pytest.raises(AppError, match="Your vote was NOT recorded"):
            c.predict("A", api_name="/guess")
        assert served.counts()["guesses"] == before
