"""Report, hide and restore: through the launched app's button and the operator's command;
a reported round leaves the pool and the verdicts at once, every action is an event, and
a restored database and pooled statistics see it."""

from __future__ import annotations

import json
import random

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from core.errors import RoundNotFoundError
from core.game import moderate, pooled, stats, sync
from core.game.rounds import Game
from tests.app_server import generate_args, launched_app
from tests.data_helpers import Clock, make_generation
from tests.test_sync import synced


def test_report_hide_and_restore_in_the_store_and_as_events(tmp_path, capsys):
    target = tmp_path / "target"
    store, link = synced(tmp_path, "first", target)
    game = Game(store, random.Random(0), clock=Clock(), rounds_per_minute=0)
    first = store.save_generation(make_generation(1))
    store.save_generation(make_generation(2))
    view = game.new_round("p1", "trio", first)
    game.guess("p1", view.round_id, "A")
    assert game.ready_rounds("p2", "trio").playable == 2
    before = stats.summary(store).to_json()["counts"]["guesses"]

    with pytest.raises(RoundNotFoundError):  # only your own round can be reported
        moderate.report(store, "p2", view.round_id)
    assert moderate.report(store, "p1", view.round_id) == first
    assert game.ready_rounds("p2", "trio").playable == 1  # out of the pool at once
    for _ in range(5):  # never served again
        other = game.new_round(f"p{_ + 3}", "trio")
        assert store.round_generation(other.round_id) != first
    trio = next(e for e in stats.summary(store).to_json()["detection"] if e["mode"] == "trio")
    assert trio["answered"] == before - 1  # its answer is out of the verdicts
    assert store.count_withdrawn() == {"generations": 1, "guesses": 1}

    # The operator's command: list, hide, restore (the action is logged to the target).
    db = str(tmp_path / "first" / "arena.db")
    assert moderate.main(["--db", db, "list"], {}) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["generation_id"] == first and listed[0]["state"] == "reported"
    assert view.round_id in listed[0]["rounds"]
    assert moderate.main(["--db", db, "--sync-to", str(target), "hide", view.round_id], {}) == 0
    assert store.row_of("generations", first)["moderation"] == "hidden"
    assert moderate.main(["--db", db, "restore", f"g{first}"], {}) == 0
    assert game.ready_rounds("p2", "trio").playable == 2
    with pytest.raises(SystemExit) as stopped:
        moderate.main(["--db", db, "hide", "no-such-round"], {})
    assert stopped.value.code == 2
    assert "no round" in capsys.readouterr().err

    # Reported again, then pushed: a restored database and the pooled counts see it.
    moderate.report(store, "p1", view.round_id)
    link.close()
    changes = [e["row"] for e in sync.read_events(target) if e["kind"] == "moderation"]
    states = [c["state"] for c in sorted(changes, key=lambda c: c["at"])]
    assert states == ["reported", "hidden", "reported"]  # the CLI's restore had no target
    copy = sync.SyncedStore(tmp_path / "copy.db", tmp_path / "copy-images")
    sync.restore(copy, target)
    assert copy.row_of("generations", first)["moderation"] == "reported"
    assert copy.count_withdrawn() == store.count_withdrawn()
    result = pooled.pooled_summary([str(target)], margin=0.05, summarize=stats.summary)
    (model,) = result["models"]
    assert result["models"][model]["counts"]["guesses"] == 0
    copy.close()
    store.close()


@pytest.mark.slow
def test_the_report_button_takes_the_round_out_of_the_pool(tiny_engine, tmp_path):
    with launched_app(tiny_engine, tmp_path) as served:
        maker = Client(served.url, verbose=False, download_files=False)
        with pytest.raises(AppError, match="no round to report"):
            maker.predict(api_name="/report")
        maker.predict(*generate_args("a kettle", "trio"), api_name="/generate")
        maker.predict("A", api_name="/guess")
        player = Client(served.url, verbose=False, download_files=False)
        player.predict("trio", api_name="/ready_round")
        player.predict(api_name="/report")
        (round_row,) = [r for r in served.answer_keys() if r["session_id"] != ""][-1:]
        generation_id = round_row["generation_id"]
        assert served.store.row_of("generations", generation_id)["moderation"] == "reported"
        third = Client(served.url, verbose=False, download_files=False)
        with pytest.raises(AppError):  # the only image set is out of the pool
            third.predict("trio", api_name="/ready_round")
        assert served.arena.results().withdrawn == stats.Withdrawn(generations=1, guesses=1)
