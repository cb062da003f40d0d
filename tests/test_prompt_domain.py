"""Only rounds the model can draw: the micro model's vocabulary check before any
generation (unknown words and symbols named, a nearby prompt offered), the stored rounds
marked out of domain (never served, never counted in the verdicts), and what a hub-style
model's T5 encoder would cut."""

from __future__ import annotations

import pytest

from core import errors
from core.checkpoints.micro import vocabulary
from core.checkpoints.micro.vocabulary import (
    EXAMPLE_PROMPTS,
    covers,
    nearby_prompt,
    refusal,
    unknown_terms,
)
from core.game.arena import Arena
from core.game.rounds import CANT_TELL
from core.settings import AppSettings
from tests.data_helpers import make_game, make_generation, make_store

FOX = "🦊🔥 a large red circle on the left, on a blue background 🎉"


def test_unknown_terms_name_words_and_symbols_leading_and_trailing():
    assert unknown_terms(FOX) == ["🦊🔥", "🎉"]
    assert unknown_terms("a <b>dragon</b> in snow!") == ["b", "dragon", "snow", "<", ">", "</", "!"]
    # The tokenizer has lower-case pieces only: "Red" is read letter by letter.
    assert unknown_terms("A large Red circle") == ["A", "Red"]
    assert all(unknown_terms(p) == [] for p in EXAMPLE_PROMPTS)


def test_nearby_prompt_keeps_the_known_words_and_is_always_drawable():
    assert nearby_prompt(FOX) == "a large red circle on the left, on a blue background"
    assert (
        nearby_prompt("A Small GREEN star at the top!!")
        == "a small green star at the top, on a white background"
    )
    for prompt in (FOX, "a red fox in snow", "", "🎉", "white on a white background", "x" * 5000):
        assert covers(nearby_prompt(prompt), 32), prompt
    # A second shape stays when it stands on the opposite side, as in training.
    two = EXAMPLE_PROMPTS[3]
    assert nearby_prompt(two) == two


def test_refusal_names_the_terms_and_offers_a_prompt():
    message = refusal(FOX, 32)
    assert "“🦊🔥”, “🎉”" in message and "nothing was generated" in message
    assert message.endswith("“a large red circle on the left, on a blue background”")
    assert refusal(EXAMPLE_PROMPTS[0], 32) is None
    long = " ".join(["a large red circle on the left"] * 5) + ", on a blue background"
    assert "tokens long and the micro model reads 32" in refusal(long, 32)
    many = refusal("one two three four five six seven", 32)
    assert "and 2 more" in many and "“six”" not in many


@pytest.fixture(scope="module")
def micro_engine():
    from core.engine.generation import Engine

    return Engine.load("micro", device="cpu")


def small(arena):
    return arena.engine.default_settings(1).with_(steps=2)


@pytest.mark.parametrize(
    "prompt", [FOX, "🦊 a large red circle on the left, on a blue background", "a red fox"]
)
def test_an_out_of_vocabulary_prompt_makes_no_generation_and_no_round(
    micro_engine, tmp_path, prompt
):
    store = make_store(tmp_path)
    arena = Arena(micro_engine, store, make_game(store), AppSettings(generations_per_minute=1))
    with pytest.raises(errors.PromptOutOfVocabularyError, match="does not know"):
        arena.check_prompt(prompt, small(arena))
    with pytest.raises(errors.PromptOutOfVocabularyError, match="A prompt it can draw"):
        arena.generate_round("s", prompt, small(arena), "trio")
    # Refused before the engine and the limiter: nothing stored, nothing counted.
    assert store.counts()["generations"] == store.counts()["rounds"] == 0
    assert arena.ready_rounds("other", "trio").playable == 0
    assert not arena._generation_limiter._events.get("s")
    # The engine refuses it on its own too (the command line goes there directly).
    with pytest.raises(errors.PromptOutOfVocabularyError):
        micro_engine.generate(prompt, small(arena))
    store.close()


def _stored(store, prompt: str, model: str = "micro") -> int:
    gen = make_generation(len(prompt))
    gen.prompt, gen.model = prompt, model
    gen.settings = gen.settings.with_(max_sequence_length=32)
    return store.save_generation(gen)


def test_a_stored_out_of_domain_round_is_never_served_nor_counted(micro_engine, tmp_path):
    store = make_store(tmp_path)
    good = _stored(store, EXAMPLE_PROMPTS[0])
    bad = _stored(store, FOX)
    long = _stored(store, "x" * 5000)
    other_model = _stored(store, "a red fox in snow", model="black-forest-labs/FLUX.1-dev")
    # Rounds and guesses on each, before the check existed.
    game = make_game(store)
    for gid in (good, bad, long, other_model):
        view = game.new_round("old-player", "trio", gid)
        game.guess("old-player", view.round_id, CANT_TELL if gid == good else "A")
    assert sum(t.answered for *_, t in store.guess_groups()) == 4

    arena = Arena(micro_engine, store, make_game(store), AppSettings())
    assert store.out_of_domain_counts() == arena.out_of_domain() == (2, 2)
    # The verdicts' counts leave them out, whatever the statistics do.
    assert sum(t.answered for *_, t in store.guess_groups()) == 2
    assert {gid for _, gid, *_ in store.decided_by_generation()} == {good, other_model}
    assert sum(row[3] for row in store.decided_by_session()) == 2
    # The ready pool: only the drawable one (and the other model's, which is not ours to judge).
    served = set()
    for i in range(6):
        view = arena.ready_round(f"p{i}", "trio")
        served.add(store.fetch_round(view.round_id).generation_id)
        assert arena.ready_rounds(f"q{i}", "trio").playable == 2
    assert bad not in served and long not in served
    # Marking again changes nothing; a hub model's arena marks nothing (no vocabulary).
    assert store.mark_out_of_domain("micro", vocabulary.covers) == 2
    assert store.mark_out_of_domain("black-forest-labs/FLUX.1-dev", lambda p, n: True) == 0
    assert store.out_of_domain_counts() == (2, 2)
    store.close()


def test_the_t5_cut_is_named_for_a_model_without_a_vocabulary(tiny_engine):
    settings = tiny_engine.default_settings().with_(max_sequence_length=16)
    assert tiny_engine.check_prompt("a fox", settings) == ""
    cut = tiny_engine.check_prompt("a red fox in the snow at dawn", settings)
    # The ASCII tokenizer reads 15 pieces and the end token: the rest is named.
    assert cut and "a red fox in the snow at dawn".replace(" ", "").endswith(cut.replace(" ", ""))
    assert tiny_engine.covers("🎉 anything", 16)


def test_the_notices_say_what_was_cut_and_what_is_left_out():
    from core.game.presentation import cut_prompt_notice, out_of_domain_note

    notice = cut_prompt_notice("at dawn", 16)
    assert "first 16 tokens" in notice and "“at dawn”" in notice
    assert len(cut_prompt_notice("x" * 5000, 512)) < 250
    assert out_of_domain_note(0, 0) == ""
    note = out_of_domain_note(2, 1)
    assert "2 stored rounds" in note and "1 answer " in note and "not counted" in note
