"""Events out and back in (core.game.sync, core.game.outbox) on real SQLite files and real
folders: what a target receives, public and private, and a restore with ids kept."""

from __future__ import annotations

import json
import random
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from core.errors import ForeignSyncTargetError, SyncFormatError, SyncTargetError
from core.game import sync
from core.game.outbox import MANIFEST
from core.game.rounds import Game
from tests.data_helpers import Clock, make_generation

KEY = "a-test-key-of-enough-characters"


def synced(tmp_path: Path, name: str, target: Path, *, public: bool = False, every=60.0):
    """A SyncedStore and its link to ``target``, as app.load_arena makes them."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    link = sync.connect(
        str(target),
        sync.outbox_dir_for(folder / "arena.db", str(target)),
        every,
        public=public,
        key=KEY if public else None,
    )
    store = sync.SyncedStore(folder / "arena.db", folder / "images")
    link.attach(store, tmp_path / "scratch")
    return store, link


def play(store, n: int, session: str = "player-1", answer: str = "A") -> list[int]:
    """Store ``n`` generations and answer one trio round of each; return the guess ids."""
    game = Game(store, random.Random(0), clock=Clock(), rounds_per_minute=0)
    for i in range(n):
        gen_id = store.save_generation(make_generation(i))
        view = game.new_round(session, "trio", gen_id)
        game.guess(session, view.round_id, answer)
    return [r[0] for r in store._conn().execute("SELECT id FROM guesses ORDER BY id")]


def table(db: Path, name: str) -> list[dict]:
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2")]


def events_in(target: Path) -> list[dict]:
    return list(sync.read_events(target))


def test_pushed_events_restore_an_empty_database_with_ids_kept(tmp_path):
    target = tmp_path / "target"
    store, link = synced(tmp_path, "first", target)
    play(store, 3)
    open_round = Game(store, random.Random(1), clock=Clock(), rounds_per_minute=0).new_round(
        "player-2", "duel"
    )
    link.close()
    kinds = [e["kind"] for e in events_in(target)]
    assert kinds.count("generation") == 3 and kinds.count("guess") == 3
    assert kinds.count("round") == 4
    # A private target is the database's backup: whole rows, images included.
    assert len(list((target / "images").rglob("*.png"))) == 9

    again, link2 = synced(tmp_path, "second", target)
    assert link2.restored is not None and link2.restored.rows["guesses"] == 3
    first_db, second_db = tmp_path / "first" / "arena.db", tmp_path / "second" / "arena.db"
    for name in ("generations", "images", "rounds", "guesses"):
        assert table(second_db, name) == table(first_db, name)
    assert any(r["id"] == open_round.round_id for r in table(second_db, "rounds"))
    for row in table(second_db, "images"):
        assert (tmp_path / "second" / "images" / row["path"]).read_bytes() == (
            tmp_path / "first" / "images" / row["path"]
        ).read_bytes()
    # Replaying the same events changes nothing.
    assert sync.restore(again, target).rows == {
        "generations": 0,
        "images": 0,
        "rounds": 0,
        "guesses": 0,
    }
    # The restored database goes on with new ids and appends; the history is untouched.
    before = {p.name: p.read_bytes() for p in (target / "events").iterdir()}
    play(again, 1, session="player-3")
    link2.close()
    after = {p.name: p.read_bytes() for p in (target / "events").iterdir()}
    assert all(after[name] == data for name, data in before.items())
    assert len(after) == len(before) + 1
    again.close()
    store.close()


def test_a_non_empty_database_never_restores(tmp_path):
    target = tmp_path / "target"
    store, link = synced(tmp_path, "first", target)
    play(store, 2)
    link.close()
    store.close()
    other, link2 = synced(tmp_path, "other", tmp_path / "other-target")
    play(other, 1)
    link2.close()
    other.close()
    # "other" has a row; pointed at the first target it restores nothing and appends.
    other, link3 = synced(tmp_path, "other", target)
    assert link3.restored is None
    assert other.counts()["guesses"] == 1
    link3.close()
    other.close()


def test_a_public_target_carries_hashes_and_no_key_of_an_open_round(tmp_path):
    target = tmp_path / "public"
    store, link = synced(tmp_path, "first", target, public=True)
    play(store, 1, session="player-secret-id")
    game = Game(store, random.Random(1), clock=Clock(), rounds_per_minute=0)
    game.new_round("player-2", "duel")  # never answered
    link.close()
    text = "".join(p.read_text() for p in (target / "events").iterdir())
    assert "player-secret-id" not in text
    assert not list(target.rglob("*.png"))
    rounds = [e for e in events_in(target) if e["kind"] == "round"]
    assert all(e["row"]["answer_key"] is None for e in rounds)
    guess = next(e for e in events_in(target) if e["kind"] == "guess")
    assert guess["row"]["session_id"] == sync.session_hash(KEY.encode(), "player-secret-id")
    assert json.loads(guess["round_key"]["answer_key"])  # answered: its key is public now
    generation = next(e for e in events_in(target) if e["kind"] == "generation")
    hidden = {"sha256", "psnr", "ssim", "flip_mean"}  # per-image figures stay private
    assert all(not hidden & set(i) for i in generation["images"])
    empty = sync.SyncedStore(tmp_path / "x.db", tmp_path / "x-images")
    with pytest.raises(SyncFormatError, match="public target"):
        sync.restore(empty, target)
    assert empty.is_empty()
    empty.close()
    store.close()


def test_a_public_target_needs_a_key_and_visibility_must_match(tmp_path):
    target = tmp_path / "t"
    with pytest.raises(SyncTargetError, match="SPOT_SYNC_KEY"):
        sync.connect(str(target), tmp_path / "o", 1, public=True, key=None)
    store, link = synced(tmp_path, "first", target)
    link.close()
    store.close()
    with pytest.raises(SyncTargetError, match="private target"):
        sync.connect(str(target), tmp_path / "o", 1, public=True, key=KEY)


def test_an_unreachable_folder_is_refused_and_nothing_is_written(tmp_path):
    missing = tmp_path / "no" / "such" / "target"
    with pytest.raises(SyncTargetError, match="cannot be reached"):
        sync.connect(str(missing), tmp_path / "o", 1, public=False, key=None)
    assert list(tmp_path.iterdir()) == []


def test_a_target_with_foreign_files_is_refused_by_name(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ForeignSyncTargetError, match=r"holiday\.jpg"):
        sync.connect(str(target), tmp_path / "o", 1, public=False, key=None)
    assert [p.name for p in target.iterdir()] == ["holiday.jpg"]
    (target / "holiday.jpg").unlink()
    (target / MANIFEST).write_text('{"format": "something-else"}')
    with pytest.raises(ForeignSyncTargetError, match=MANIFEST):
        sync.connect(str(target), tmp_path / "o", 1, public=False, key=None)


def test_a_failed_append_keeps_the_vote(tmp_path):
    target = tmp_path / "t"
    store, link = synced(tmp_path, "first", target)
    assert link.log is not None
    events_file = link.log.outbox.events_file
    events_file.parent.mkdir(parents=True, exist_ok=True)
    events_file.mkdir()  # appending to a folder fails
    play(store, 1)
    assert store.counts()["guesses"] == 1
    assert link.log.failures == 3  # generation, round and guess were not appended
    link.pusher.stop()
    store.close()


def test_a_truncated_last_line_is_skipped_and_a_bad_line_is_refused(tmp_path):
    target = tmp_path / "t"
    store, link = synced(tmp_path, "first", target)
    play(store, 1)
    link.close()
    (events_file,) = (target / "events").iterdir()
    text = events_file.read_text()
    events_file.write_text(text + '{"v": 1, "kind": "gue')
    assert len(events_in(target)) == 3
    events_file.write_text('{"v": 1}\n' + text)
    with pytest.raises(SyncFormatError, match="line 1"):
        events_in(target)
    store.close()


def test_a_failed_final_push_keeps_the_outbox_for_the_next_start(tmp_path, caplog):
    target = tmp_path / "t"
    store, link = synced(tmp_path, "first", target)
    play(store, 1)
    assert not target.exists()  # nothing pushed yet (one push an hour)
    target.write_text("not a folder")  # the mount went wrong
    link.close()  # logs, does not raise: the votes are in SQLite and the outbox
    assert "could not push the outbox" in caplog.text
    target.unlink()
    store.close()
    # The next start on the same disk pushes what the last one could not.
    again, link2 = synced(tmp_path, "first", target)
    link2.close()
    assert {e["kind"] for e in events_in(target)} == {"generation", "round", "guess"}
    again.close()


def test_a_guess_whose_round_was_never_appended_is_left_out_of_a_restore(tmp_path, caplog):
    target = tmp_path / "t"
    store, link = synced(tmp_path, "first", target)
    play(store, 2)
    link.close()
    (events_file,) = (target / "events").iterdir()
    lines = events_file.read_text().splitlines(keepends=True)
    first_round = next(i for i, line in enumerate(lines) if '"kind":"round"' in line)
    events_file.write_text("".join(lines[:first_round] + lines[first_round + 1 :]))
    copy = sync.SyncedStore(tmp_path / "copy.db", tmp_path / "copy-images")
    restored = sync.restore(copy, target)
    assert restored.rows["rounds"] == 1 and restored.rows["guesses"] == 1
    assert "left out 1 rounds" not in caplog.text and "left out 1 guesses" in caplog.text
    copy.close()
    store.close()
