"""Reported rounds leave the pool: ``python -m core.game.moderate list|hide|restore ROUND``.

A player reports the round they are shown (the Play tab's "Report this round"): its
generation is *reported* at once, so no player is served it again and its guesses are
left out of the verdicts (core.store.storage: SERVED_SQL, COUNTED_SQL). An operator then
*hides* it for good or *restores* it to the pool. Every change is a ``moderation`` event
in the outbox too (core.game.sync), so a restored database and pooled statistics see it.

ROUND is a round id (as ``list`` shows them) or ``g<generation id>``.

    python -m core.game.moderate --db data/arena.db list
    python -m core.game.moderate --db data/arena.db --sync-to backup/ hide g12
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from core.errors import GenerationNotFoundError, RoundNotFoundError, SpotError
from core.game.rounds import check_session_id
from core.store.storage import Store, default_images_dir

logger = logging.getLogger(__name__)

ACTIONS = ("list", "hide", "restore")


def generation_of(store: Store, key: str) -> int:
    """The generation a ROUND argument names: ``g<id>`` or a round id."""
    if key.startswith("g") and key[1:].isdigit():
        generation_id = int(key[1:])
        if store.generation(generation_id) is None:
            raise GenerationNotFoundError(f"no generation {generation_id}")
        return generation_id
    generation_id = store.round_generation(key)
    if generation_id is None:
        raise RoundNotFoundError(f"no round {key[:40]!r}")
    return generation_id


def report(store: Store, session_id: str, round_id: object, clock=time.time) -> int:
    """A player reports the round they were served: its generation leaves the pool and
    the verdicts now. Return the generation id. Raises RoundNotFoundError for a round
    that is not this session's (same message as an unknown one)."""
    check_session_id(session_id)
    if not isinstance(round_id, str) or not round_id:
        raise RoundNotFoundError("no round to report: start a round first")
    played = store.fetch_round(round_id)
    if played is None or played.session_id != session_id:
        raise RoundNotFoundError("no such round")
    store.set_moderation(played.generation_id, "reported", clock())
    logger.info("round %s reported: generation %d left the pool", round_id, played.generation_id)
    return played.generation_id


def act(store: Store, action: str, key: str, clock=time.time) -> int:
    """``hide`` or ``restore`` the generation of ROUND; return its id."""
    generation_id = generation_of(store, key)
    store.set_moderation(generation_id, "hidden" if action == "hide" else "restored", clock())
    return generation_id


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ) if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m core.game.moderate", description=__doc__)
    parser.add_argument("--db", type=Path, default=Path(environ.get("SPOT_DB") or "data/arena.db"))
    parser.add_argument(
        "--sync-to",
        default=environ.get("SPOT_SYNC_TO") or None,
        metavar="TARGET",
        help="log the action to this sync target too (default: SPOT_SYNC_TO)",
    )
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("round", nargs="?", metavar="ROUND")
    args = parser.parse_args(argv)
    if args.action != "list" and not args.round:
        parser.error(f"{args.action} needs a ROUND (a round id or g<generation id>)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from core.game import sync

    link = None
    try:
        if args.sync_to and args.action != "list":
            link = sync.connect(
                args.sync_to,
                # Its own outbox: a push from here must not send the app's files too.
                sync.outbox_dir_for(args.db, args.sync_to).with_suffix(".moderate"),
                60.0,
                public=environ.get("SPOT_SYNC_VISIBILITY") == "public",
                key=environ.get(sync.SYNC_KEY_VARIABLE) or None,
                token=environ.get("HF_TOKEN") or None,
            )
        store = sync.SyncedStore(args.db, default_images_dir(args.db), must_exist=True)
        try:
            if args.action == "list":
                json.dump(store.moderation_list(), sys.stdout, indent=2)
                sys.stdout.write("\n")
                return 0
            if link is not None:
                with tempfile.TemporaryDirectory(prefix="spot-moderate-") as tmp:
                    link.attach(store, Path(tmp))
            generation_id = act(store, args.action, args.round)
            sys.stdout.write(f"generation {generation_id}: {args.action} done\n")
        finally:
            if link is not None:
                link.close()
            store.close()
    except SpotError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
