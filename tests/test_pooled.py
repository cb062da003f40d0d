"""``python -m core.game.stats --from SRC ...``: DuckDB over two deployments' sync targets
gives the counts and verdicts of one database holding both; duplicates count once; rounds
of different models are never pooled."""

from __future__ import annotations

import json
import random

import pytest

from core.game import pooled, stats, sync
from core.game.rounds import Game
from core.store.storage import Store
from tests.data_helpers import Clock, make_generation
from tests.test_sync import synced


def play_many(store, n: int, sessions: list[str], seed: int) -> None:
    """``n`` generations; every session plays a trio and a duel round of each, answers
    drawn from a seeded RNG (can't tell included)."""
    game = Game(store, random.Random(seed), clock=Clock(), rounds_per_minute=0)
    answers = random.Random(seed + 1)
    for i in range(n):
        gen_id = store.save_generation(make_generation(seed * 100 + i))
        for session in sessions:
            for mode, slots in (("trio", "ABC"), ("duel", "AB")):
                view = game.new_round(session, mode, gen_id)
                game.guess(session, view.round_id, answers.choice([*slots, "cant_tell"]))


def deployment(tmp_path, name: str, sessions: list[str], seed: int):
    target = tmp_path / f"{name}-target"
    store, link = synced(tmp_path, name, target)
    play_many(store, 4, sessions, seed)
    link.close()
    return store, target


def both_in_one_database(tmp_path, first: Store, second_target) -> Store:
    """One database holding both deployments: the first's rows, then the second's events
    with generation and guess ids moved past the first's."""
    both = Store(tmp_path / "both.db", tmp_path / "both-images")
    rows = {t: [] for t in ("generations", "images", "rounds", "guesses")}
    for table in rows:
        rows[table] = [dict(r) for r in first._conn().execute(f"SELECT * FROM {table}")]
    shift = 1000
    for event in sync.read_events(second_target):
        row = dict(event["row"])
        if event["kind"] == "generation":
            rows["generations"].append({**row, "id": row["id"] + shift})
            rows["images"] += [
                {k: v for k, v in {**i, "generation_id": i["generation_id"] + shift}.items()}
                for i in event["images"]
                if (i.pop("file", None) or True)
            ]
        elif event["kind"] == "round":
            rows["rounds"].append({**row, "generation_id": row["generation_id"] + shift})
        else:
            rows["guesses"].append(
                {**row, "id": row["id"] + shift, "generation_id": row["generation_id"] + shift}
            )
    both.restore_rows(rows)
    return both


def headline(summary: dict) -> list[tuple]:
    return [
        (e["mode"], e["variant"], e["answered"], e["correct"], e["cant_tell"], e["verdict"])
        for e in summary["detection"]
    ]


def test_two_deployments_pool_like_one_database_and_duplicates_count_once(tmp_path):
    first, first_target = deployment(tmp_path, "first", ["p1", "p2", "p3"], seed=1)
    second, second_target = deployment(tmp_path, "second", ["p4", "p5"], seed=2)
    both = both_in_one_database(tmp_path, first, second_target)
    expected = stats.summary(both, margin=0.05).to_json()

    result = pooled.pooled_summary(
        [str(first_target), str(second_target)], margin=0.05, summarize=stats.summary
    )
    (model,) = result["models"]
    got = result["models"][model]
    assert headline(got) == headline(expected)
    assert got["detection"] == expected["detection"]
    assert got["trio_picks"] == expected["trio_picks"]
    for table in ("generations", "rounds", "guesses", "sessions"):
        assert got["counts"][table] == expected["counts"][table]
    # Per deployment: each one's own counts.
    per = result["deployments"]
    assert len(per) == 2
    assert sorted(d[model]["counts"]["guesses"] for d in per.values()) == sorted(
        [second.counts()["guesses"], first.counts()["guesses"]]
    )

    # The same target twice, and a copy of it, count once.
    copy = tmp_path / "copy-of-first"
    copy.mkdir()
    for path in first_target.rglob("*"):
        if path.is_file():
            dest = copy / path.relative_to(first_target)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(path.read_bytes())
    again = pooled.pooled_summary(
        [str(first_target), str(second_target), str(first_target), str(copy)],
        margin=0.05,
        summarize=stats.summary,
    )
    assert again["models"][model]["detection"] == got["detection"]
    assert again["models"][model]["counts"] == got["counts"]
    for store in (first, second, both):
        store.close()


def test_rounds_of_different_models_are_never_pooled(tmp_path):
    target = tmp_path / "t"
    store, link = synced(tmp_path, "first", target)
    play_many(store, 2, ["p1"], seed=3)
    gen = make_generation(99)
    gen.model = "another/model"
    gen_id = store.save_generation(gen)
    game = Game(store, random.Random(0), clock=Clock(), rounds_per_minute=0)
    view = game.new_round("p1", "trio", gen_id)
    game.guess("p1", view.round_id, "A")
    link.close()
    result = pooled.pooled_summary([str(target)], margin=0.05, summarize=stats.summary)
    assert set(result["models"]) == {make_generation(0).model, "another/model"}
    assert result["models"]["another/model"]["counts"]["guesses"] == 1
    assert result["models"][make_generation(0).model]["counts"]["guesses"] == 4
    store.close()


def test_the_command_line_pools_and_refuses_a_source_without_events(tmp_path, capsys):
    _, first_target = deployment(tmp_path, "first", ["p1"], seed=4)
    assert stats.main(["--from", str(first_target)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["sources"] == [str(first_target)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as stopped:
        stats.main(["--from", str(first_target), str(tmp_path / "empty")])
    assert stopped.value.code == 2
    assert "holds no events" in capsys.readouterr().err
