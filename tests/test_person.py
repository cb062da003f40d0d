"""A player is a person: person ids (core.game.identity), the rounds a person is served
(core.game.rounds over a real SQLite store), the daily answer cap, and an account that
never reaches the export by name.

The browser side (the id kept across reloads in Chromium) is tests/test_browser_person.py.
"""

from __future__ import annotations

import os
import stat
import zipfile

import gradio as gr
import gradio.oauth as gradio_oauth
import pytest

import app
from core.errors import AnswerCapError, InvalidSettingError, RateLimitedError
from core.game.arena import Arena
from core.game.identity import (
    ACCOUNT_ID,
    BROWSER_ID,
    PersonIds,
    is_person_id,
    key_from_text,
    load_or_create_key,
)
from core.game.rounds import DAY_SECONDS
from core.settings import AppSettings, oauth_enabled
from tests.app_server import generate_args, launched_app
from tests.data_helpers import Clock, make_game, make_generation, make_store

KEY = bytes(range(32))


@pytest.fixture
def store(tmp_path):
    with make_store(tmp_path) as s:
        yield s


@pytest.fixture
def ids():
    return PersonIds(KEY)


# --- ids and tokens ----------------------------------------------------------------------


def test_a_new_browser_person_comes_back_from_its_token(ids):
    person = ids.new_browser_person()
    assert BROWSER_ID.fullmatch(person.id) and person.kind == "browser"
    assert person.token.startswith(person.id + ".")
    assert ids.browser_person(person.token) == person.id
    again = ids.person(person.token)
    assert (again.id, again.token) == (person.id, None)  # nothing new to store
    assert ids.new_browser_person().id != person.id


def forgeries(ids: PersonIds) -> list[object]:
    """Tokens a client could send that this server never issued."""
    person = ids.new_browser_person()
    other = ids.new_browser_person()
    person_id, signature = person.token.split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    return [
        None, "", 7, ["a"], {"id": person_id},
        person_id,  # an id without its signature (as the export shows it)
        f"{person_id}.{flipped}",  # one character of the signature changed
        f"{person_id}.{other.token.split('.')[1]}",  # another person's signature
        f"{other.token.split('.')[0]}.{signature}",  # another id under this signature
        PersonIds(bytes(32)).new_browser_person().token,  # another server's key
        person.token + " ", " " + person.token, person.token + "=",
        person.token.replace("b-", "a-", 1),  # an account-shaped id
        person.token + "x" * 100,
        "b-" + "A" * 22 + "." + "A" * 22,
    ]  # fmt: skip


def test_a_token_the_server_did_not_issue_is_refused(ids):
    for forged in forgeries(ids):
        assert ids.browser_person(forged) is None, forged


def test_a_refused_token_gets_a_new_person_never_the_claimed_one(ids):
    victim = ids.new_browser_person()
    for forged in forgeries(ids):
        person = ids.person(forged)
        assert person.kind == "browser" and person.token is not None
        assert person.id != victim.id
        assert ids.browser_person(person.token) == person.id


def test_an_account_is_a_keyed_hash_never_its_name(ids):
    person = ids.person(None, "hf:1234567890abcdef")
    assert person.kind == "account" and person.token is None
    assert ACCOUNT_ID.fullmatch(person.id) and is_person_id(person.id)
    assert "1234567890" not in person.id
    # The same account on any browser, whatever that browser's token says.
    browser = ids.new_browser_person()
    assert ids.person(browser.token, "hf:1234567890abcdef").id == person.id
    assert ids.person(None, "hf:someone-else").id != person.id
    # Another key (another deployment) gives an unrelated id.
    assert PersonIds(bytes(32)).person(None, "hf:1234567890abcdef").id != person.id


def test_person_ids_have_one_shape():
    assert not is_person_id("b-short") and not is_person_id(None)
    assert not is_person_id("x-" + "A" * 22)


def test_the_key_from_the_environment(tmp_path):
    assert key_from_text("ab" * 32, "SPOT_PERSON_KEY") == bytes([0xAB]) * 32
    assert key_from_text("a passphrase of at least 32 chars!", "SPOT_PERSON_KEY") == (
        b"a passphrase of at least 32 chars!"
    )
    with pytest.raises(InvalidSettingError, match="SPOT_PERSON_KEY must be at least 32"):
        key_from_text("short", "SPOT_PERSON_KEY")


def test_the_key_file_is_made_once_private_and_kept(tmp_path):
    path = tmp_path / "data" / "person.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key  # a restart keeps every browser's person
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    path.write_text("not a key\n")
    with pytest.raises(InvalidSettingError, match="is not a person key"):
        load_or_create_key(path)
    assert path.read_text() == "not a key\n"  # a bad file is never replaced


def test_a_key_that_cannot_be_written_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the key's folder should be\n")
    with pytest.raises(InvalidSettingError, match="cannot make or read the person key"):
        load_or_create_key(blocker / "person.key")


def test_a_bad_key_stops_the_app_before_it_loads_anything(tmp_path, caplog):
    argv = ["--db", str(tmp_path / "arena.db"), "--model", "tiny"]
    assert app.main(argv, {"SPOT_PERSON_KEY": "too short"}) == 2
    assert "SPOT_PERSON_KEY must be at least 32" in caplog.text
    assert not (tmp_path / "arena.db").exists()


def test_the_sign_in_button_only_where_oauth_is_enabled(tiny_engine, store, monkeypatch):
    arena = Arena(tiny_engine, store, make_game(store), AppSettings())
    plain = app.build_demo(arena)
    assert not plain.expects_oauth
    assert "/login/huggingface" not in {getattr(route, "path", None) for route in plain.app.routes}
    space = {
        "OAUTH_CLIENT_ID": "client", "OAUTH_CLIENT_SECRET": "secret", "OAUTH_SCOPES": "openid",
        "OPENID_PROVIDER_URL": "https://huggingface.co",
    }  # fmt: skip
    assert oauth_enabled(space) and not oauth_enabled({**space, "OAUTH_SCOPES": ""})
    assert not oauth_enabled({})
    # As on a Space with `hf_oauth: true` (Gradio reads these when it is imported).
    # Only Gradio's OAuth is told it runs on a Space (the real routes, not the local mock,
    # which would ask the Hub who is logged in here).
    monkeypatch.setattr(gradio_oauth, "get_space", lambda: "someone/spot-the-quantized")
    for name, value in space.items():
        monkeypatch.setattr(gradio_oauth, name, value)
    signed = app.build_demo(arena, oauth=True)
    assert signed.expects_oauth
    assert {"/login/huggingface", "/login/callback", "/logout"} <= {
        getattr(route, "path", None) for route in signed.app.routes
    }


# --- what a person is served -------------------------------------------------------------


def test_an_open_round_is_restored_and_an_answered_one_never_served_again(store):
    clock = Clock()
    game = make_game(store, clock=clock, round_ttl_seconds=600)
    first, second = (store.save_generation(make_generation(i)) for i in range(2))
    view = game.new_round("p", "trio")
    # Open: not served again, but restored (same round, same shuffle, images in slot order).
    restored = game.open_round("p")
    assert restored.round_id == view.round_id and restored.slots == view.slots
    assert restored.image_paths == view.image_paths
    assert game.ready_rounds("p", "trio").unseen == 1
    other = game.new_round("p", "trio")
    assert {first, second} == {store.fetch_round(r.round_id).generation_id for r in (view, other)}
    assert game.open_round("p").round_id == other.round_id  # the latest open round
    game.guess("p", other.round_id, "A")
    assert game.open_round("p").round_id == view.round_id
    game.guess("p", view.round_id, "B")
    assert game.open_round("p") is None
    assert game.ready_rounds("p", "trio").unseen == 0
    clock.now += 10 * 600  # long after both rounds expired: answered stays answered
    assert game.ready_rounds("p", "trio").unseen == 0
    assert game.ready_rounds("q", "trio").unseen == 2


def test_an_answer_seen_in_one_mode_is_seen_in_the_other(store):
    clock = Clock()
    game = make_game(store, clock=clock, round_ttl_seconds=600)
    store.save_generation(make_generation())
    game.guess("p", game.new_round("p", "trio").round_id, "A")
    clock.now += 10 * 600
    assert game.ready_rounds("p", "duel").unseen == 0  # the reveal named every image
    assert game.ready_rounds("q", "duel").unseen == 1


def test_a_round_left_to_expire_is_served_again_with_a_fresh_shuffle(store):
    clock = Clock()
    game = make_game(store, clock=clock, round_ttl_seconds=600)
    gid = store.save_generation(make_generation())
    left = game.new_round("p", "trio")
    assert game.ready_rounds("p", "trio").unseen == 0
    clock.now += 601
    assert game.open_round("p") is None
    assert game.ready_rounds("p", "trio").unseen == 1
    again = game.new_round("p", "trio")
    assert again.round_id != left.round_id
    assert store.fetch_round(again.round_id).generation_id == gid


# --- the daily cap ---------------------------------------------------------------------


def test_the_daily_cap_counts_answers_per_person_per_utc_day(store):
    clock = Clock(now=40 * DAY_SECONDS + 3600.0)  # 01:00 UTC
    game = make_game(store, clock=clock, answers_per_day=2)
    gid = store.save_generation(make_generation())
    for _ in range(2):
        game.guess("p", game.new_round("p", "duel", gid).round_id, "A")
    with pytest.raises(AnswerCapError, match="today's 2 answers") as capped:
        game.new_round("p", "duel", gid)
    assert isinstance(capped.value, RateLimitedError)
    assert "00:00 UTC" in str(capped.value)
    game.guess("q", game.new_round("q", "duel", gid).round_id, "A")  # another person
    clock.now = 41 * DAY_SECONDS  # midnight UTC: a new day
    game.guess("p", game.new_round("p", "duel", gid).round_id, "A")


def test_a_round_opened_before_the_cap_cannot_be_answered_past_it(store):
    game = make_game(store, answers_per_day=1)
    gid = store.save_generation(make_generation())
    early, late = (game.new_round("p", "duel", gid) for _ in range(2))
    game.guess("p", early.round_id, "A")
    guesses = store.counts()["guesses"]
    with pytest.raises(AnswerCapError):
        game.guess("p", late.round_id, "A")
    assert store.counts()["guesses"] == guesses  # nothing written
    assert not store.fetch_round(late.round_id).guessed


def test_no_cap_by_default_and_a_bad_cap_is_refused(store):
    game = make_game(store)
    gid = store.save_generation(make_generation())
    for _ in range(30):
        game.guess("p", game.new_round("p", "duel", gid).round_id, "A")
    with pytest.raises(ValueError, match="answers_per_day"):
        make_game(store, answers_per_day=-1)


def test_a_capped_person_gets_no_generation(tiny_engine, store):
    settings = AppSettings(answers_per_day=1, generations_per_minute=0)
    arena = Arena(tiny_engine, store, make_game(store, answers_per_day=1), settings)
    gid = store.save_generation(make_generation())
    arena.guess("p", arena.game.new_round("p", "duel", gid).round_id, "A")
    generations = store.counts()["generations"]
    with pytest.raises(AnswerCapError):
        arena.generate_round("p", "a fox", tiny_engine.default_settings(), "duel")
    assert store.counts()["generations"] == generations


# --- an account in the export ----------------------------------------------------------


def test_the_export_holds_no_account_name(tiny_engine, store, tmp_path):
    userinfo = {
        "sub": "65f0c0ffee00000000000042",
        "name": "Alice Example",
        "preferred_username": "alice-the-tester",
        "profile": "https://huggingface.co/alice-the-tester",
        "picture": "https://example.invalid/alice.png",
    }
    profile = gr.OAuthProfile(userinfo)
    arena = Arena(tiny_engine, store, make_game(store), AppSettings(), persons=PersonIds(KEY))
    person = arena.person("ignored when signed in", app.account_subject(profile))
    assert person.kind == "account"
    gid = store.save_generation(make_generation())
    for mode in ("trio", "duel"):
        arena.guess(person.id, arena.game.new_round(person.id, mode, gid).round_id, "A")
    path = arena.export_zip(tmp_path / "exports")
    with zipfile.ZipFile(path) as archive:
        text = b"".join(archive.read(name) for name in archive.namelist())
    assert person.id.encode() in text  # the person is in the export, by id
    for value in ("alice", "Alice", userinfo["sub"], "huggingface.co/"):
        assert value.encode() not in text, value


def test_the_served_app_applies_the_daily_cap(tiny_engine, tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    with launched_app(tiny_engine, tmp_path, answers_per_day=1) as served:
        for index in range(2):
            served.store.save_generation(make_generation(index))
        player = Client(served.url, verbose=False, download_files=False)
        player.predict("duel", api_name="/ready_round")
        player.predict("A", "duel", api_name="/guess")
        with pytest.raises(AppError, match="today's 1 answer, the most this server takes"):
            player.predict("duel", api_name="/ready_round")
        with pytest.raises(AppError, match="today's 1 answer"):
            player.predict(*generate_args(), api_name="/generate")
        assert served.counts()["generations"] == 2  # no GPU time for a capped person
        # Another client is another person, with a day of its own.
        Client(served.url, verbose=False, download_files=False).predict(
            "duel", api_name="/ready_round"
        )
