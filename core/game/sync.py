"""Votes that outlive the machine: acknowledged rows out as events, and back in at start.

**Out.** ``SyncedStore`` is the game's Store that, after each write has been committed
(the row is acknowledged), appends the matching event to the outbox
(core.game.outbox): a generation with its images and figures, a round, a guess. An
append that fails is logged and counted (``EventLog.failures``); the vote stays in SQLite
and the player is answered as usual: a failure to sync never loses a vote.

One event per line, JSON: ``{"v": 1, "kind": ..., "deployment": ..., "id": ..., "row":
{...}}`` where ``row`` holds the table's columns. A generation carries ``images`` (its
image rows, each with the ``file`` that holds the PNG in the target).

**Public or private.** A private target (the default) receives whole rows: it is the
database's backup. A public target follows the public export's split
(core.game.export): no raw session ids (a keyed HMAC-SHA256 of each, with
``SPOT_SYNC_KEY``), no answer key nor duel variant of a round until it is answered (the
guess event carries them), and no image file, stored name, byte hash, PSNR or SSIM (they
would tell which served image is which while its generation is still served). A public
target can be pooled (core.game.pooled) but not restored from.

**In.** ``restore`` replays a target's events into an empty database, ids kept; replaying
twice changes nothing. A trailing line without its newline (a push that caught a file
mid-append, or a crash) is skipped; any other bad line stops the restore with its file
and line, nothing written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from core.errors import SyncFormatError, SyncTargetError
from core.game.outbox import EVENTS_DIR, IMAGES_DIR, MANIFEST, Manifest, Outbox
from core.records import IMAGE_METRICS, Generation
from core.store.storage import NewGuess, Store

logger = logging.getLogger(__name__)

EVENT_VERSION = 1
KINDS: tuple[str, ...] = ("generation", "round", "guess", "moderation")
# As core.game.export.PRIVATE_COLUMNS and ANSWER_COLUMNS: left out of a public target.
PUBLIC_HIDDEN_IMAGE_COLUMNS: tuple[str, ...] = ("path", "sha256", *IMAGE_METRICS)
ANSWER_COLUMNS: tuple[str, ...] = ("answer_key", "compared_variant")
SYNC_KEY_VARIABLE = "SPOT_SYNC_KEY"
SYNC_KEY_MIN_CHARS = 16


def session_hash(key: bytes, session_id: str) -> str:
    """The keyed hash a public target carries instead of a session id (32 hex digits):
    the same person has the same hash in every event, and nobody without the key can
    tell whose it is."""
    return hmac.new(key, session_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


@dataclass
class EventLog:
    """Turns committed rows into events and appends them to an outbox."""

    outbox: Outbox
    manifest: Manifest
    key: bytes | None = None  # a public target's HMAC key
    failures: int = 0
    _failures_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.manifest.public and not self.key:
            raise SyncTargetError(
                f"a public sync target needs {SYNC_KEY_VARIABLE} (at least "
                f"{SYNC_KEY_MIN_CHARS} characters) to hash session ids"
            )

    @property
    def public(self) -> bool:
        return self.manifest.public

    def _event(self, kind: str, key: object, row: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "v": EVENT_VERSION,
            "kind": kind,
            "deployment": self.manifest.deployment,
            "id": key,
            "at": time.time(),
            "row": row,
            **extra,
        }

    def _session(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.public and row.get("session_id") is not None:
            assert self.key is not None
            row = {**row, "session_id": session_hash(self.key, row["session_id"])}
        return row

    def record(self, what: str, write: Any) -> None:
        """Run ``write()`` (which appends events); log and count a failure, never raise."""
        try:
            write()
        except Exception:
            with self._failures_lock:
                self.failures += 1
            logger.exception("could not append the %s event to the outbox (kept in SQLite)", what)

    def generation(self, store: Store, generation_id: int) -> None:
        row = store.row_of("generations", generation_id)
        if row is None:
            return
        images, files = [], {}
        for image in store.image_rows(generation_id):
            if self.public:
                images.append(
                    {k: v for k, v in image.items() if k not in PUBLIC_HIDDEN_IMAGE_COLUMNS}
                )
                continue
            rel = f"{IMAGES_DIR}/{self.manifest.deployment}/{image['path']}"
            files[rel] = (store.images_dir / image["path"]).read_bytes()
            images.append({**image, "file": rel})
        self.outbox.append([self._event("generation", generation_id, row, images=images)], files)

    def round(self, store: Store, round_id: str) -> None:
        row = store.row_of("rounds", round_id)
        if row is None:
            return
        if self.public:
            row = {**self._session(row), **dict.fromkeys(ANSWER_COLUMNS)}
        self.outbox.append([self._event("round", round_id, row)])

    def guess(self, store: Store, guess_id: int) -> None:
        row = store.row_of("guesses", guess_id)
        if row is None:
            return
        extra: dict[str, Any] = {}
        if self.public:
            played = store.row_of("rounds", row["round_id"]) or {}
            extra["round_key"] = {c: played.get(c) for c in ANSWER_COLUMNS}
            row = self._session(row)
        self.outbox.append([self._event("guess", guess_id, row, **extra)])

    def moderation(self, generation_id: int, state: str, at: float) -> None:
        """A generation reported, hidden or restored (core.game.moderate); its own id."""
        row = {"generation_id": generation_id, "state": state, "at": at}
        self.outbox.append([self._event("moderation", uuid.uuid4().hex, row)])


class SyncedStore(Store):
    """The game's Store, appending an event after each committed generation, round and
    guess (see the module docstring). Nothing else differs."""

    events: EventLog | None = None

    def save_generation(self, gen: Generation) -> int:
        generation_id = super().save_generation(gen)
        if self.events is not None:
            events = self.events
            events.record("generation", lambda: events.generation(self, generation_id))
        return generation_id

    def insert_round(self, **kwargs: Any) -> str | None:
        round_id = super().insert_round(**kwargs)
        if round_id is not None and self.events is not None:
            events = self.events
            events.record("round", lambda: events.round(self, round_id))
        return round_id

    def insert_guess(
        self, guess: NewGuess, *, max_answers: int = 0, answers_since: float = 0.0
    ) -> int:
        guess_id = super().insert_guess(guess, max_answers=max_answers, answers_since=answers_since)
        if self.events is not None:
            events = self.events
            events.record("guess", lambda: events.guess(self, guess_id))
        return guess_id

    def import_generation(
        self, row: dict[str, Any], images: Sequence[tuple[dict[str, Any], Image.Image]], origin: str
    ) -> int | None:
        generation_id = super().import_generation(row, images, origin)
        if generation_id is not None and self.events is not None:
            events = self.events
            events.record("generation", lambda: events.generation(self, generation_id))
        return generation_id

    def set_moderation(self, generation_id: int, state: str, at: float) -> bool:
        changed = super().set_moderation(generation_id, state, at)
        if changed and self.events is not None:
            events = self.events
            events.record("moderation", lambda: events.moderation(generation_id, state, at))
        return changed

    def image_stats(self, generation_id: int) -> dict[str, dict[str, Any]]:
        """As Store.image_stats; a generation imported from a pool (core.game.pool) adds
        ``made_elsewhere`` (its model and device there) to each variant's figures, so the
        reveal labels them."""
        stats = super().image_stats(generation_id)
        if self.generation_origin(generation_id) is None:
            return stats
        made = self.row_of("generations", generation_id) or {}
        where = {"model": made.get("model"), "device": made.get("device")}
        return {variant: {**figures, "made_elsewhere": where} for variant, figures in stats.items()}


# --- in: reading a target's events ------------------------------------------------------------


def event_files(folder: Path) -> list[Path]:
    """The events files of a target's local copy, in a fixed order."""
    return sorted((Path(folder) / EVENTS_DIR).glob("*.jsonl"))


def read_events(folder: Path) -> Iterator[dict[str, Any]]:
    """Every event of every events file under ``folder``; a last line without its newline
    is skipped (a file caught mid-append). Raises SyncFormatError for a bad line."""
    for path in event_files(folder):
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        complete = lines[:-1]  # the piece after the last newline is unfinished (or empty)
        for number, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                raise SyncFormatError(f"{where} is not JSON; nothing was restored") from None
            if (
                not isinstance(event, dict)
                or event.get("v") != EVENT_VERSION
                or event.get("kind") not in KINDS
                or not isinstance(event.get("row"), dict)
            ):
                raise SyncFormatError(f"{where} is not an event of this game; nothing was restored")
            yield event


def read_manifest(folder: Path) -> Manifest | None:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    return Manifest.parse(path.read_text(encoding="utf-8"), str(folder))


@dataclass(frozen=True)
class Restored:
    """Rows added per table by a restore, and image files copied."""

    rows: dict[str, int]
    images: int


def _whole(
    rows: dict[str, list[dict[str, Any]]], copies: list[tuple[Path, str, str]]
) -> tuple[dict[str, list[dict[str, Any]]], list[tuple[Path, str, str]]]:
    """The rows whose parents are there too (an image's generation, a round's generation,
    a guess's round): an event whose parent's append failed (logged when it happened) is
    left out with a warning, so the rest restores."""
    generations = {r["id"] for r in rows["generations"]}
    kept = {
        "generations": rows["generations"],
        "images": [r for r in rows["images"] if r["generation_id"] in generations],
        "rounds": [r for r in rows["rounds"] if r["generation_id"] in generations],
    }
    played = {r["id"] for r in kept["rounds"]}
    kept["guesses"] = [r for r in rows["guesses"] if r["round_id"] in played]
    for table, before in rows.items():
        if len(kept[table]) != len(before):
            logger.warning(
                "left out %d %s event(s) whose parent is not in the target",
                len(before) - len(kept[table]),
                table,
            )
    names = {r["path"] for r in kept["images"]}
    return kept, [c for c in copies if c[1] in names]


def restore(store: Store, folder: Path) -> Restored:
    """Replay the events under ``folder`` (a target's local copy) into ``store``, ids kept.

    Image files are copied first (each checked against its stored SHA-256), then every
    row is written in one transaction; replaying the same events again adds nothing.
    Raises SyncFormatError (a bad line, a missing or damaged image, a public target).
    """
    manifest = read_manifest(folder)
    if manifest is not None and manifest.public:
        raise SyncFormatError(
            f"{folder} is a public target (no images, no keys of open rounds): "
            "a database can only be restored from a private target"
        )
    rows: dict[str, list[dict[str, Any]]] = {
        t: [] for t in ("generations", "images", "rounds", "guesses")
    }
    copies: list[tuple[Path, str, str]] = []
    moderation: list[dict[str, Any]] = []
    for event in read_events(folder):
        kind = event["kind"]
        if kind == "generation":
            rows["generations"].append(event["row"])
            for image in event.get("images", []):
                image = dict(image)
                rel = image.pop("file", None)
                if rel is None or "path" not in image:
                    raise SyncFormatError(
                        "a generation event has no image file; nothing was restored"
                    )
                copies.append((Path(folder) / rel, image["path"], image.get("sha256", "")))
                rows["images"].append(image)
        elif kind == "round":
            rows["rounds"].append(event["row"])
        elif kind == "guess":
            rows["guesses"].append(event["row"])
        else:
            moderation.append(event["row"])
    rows, copies = _whole(rows, copies)
    copied = 0
    store.images_dir.mkdir(parents=True, exist_ok=True)
    for source, name, sha256 in copies:
        dest = store.images_dir / Path(name).name
        if dest.exists():
            continue
        try:
            data = source.read_bytes()
        except OSError:
            raise SyncFormatError(f"the image {source.name} is missing from {folder}") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise SyncFormatError(f"the image {source.name} in {folder} is damaged")
        from core.game.outbox import copy_file

        copy_file(source, dest)
        copied += 1
    added = store.restore_rows(rows)
    latest: dict[int, dict[str, Any]] = {}
    for change in sorted(moderation, key=lambda c: c["at"]):
        latest[int(change["generation_id"])] = change
    for generation_id, change in latest.items():
        store.set_moderation(generation_id, change["state"], float(change["at"]))
    return Restored(rows=added, images=copied)


# --- the link between a running app and its target ------------------------------------------


def outbox_dir_for(db_path: Path, target: str) -> Path:
    """The outbox of a database and a target: ``outbox/<hash of the target>`` beside the
    database, so events meant for one target never reach another."""
    digest = hashlib.sha256(target.encode("utf-8")).hexdigest()[:16]
    return Path(db_path).parent / "outbox" / digest


@dataclass
class SyncLink:
    """A checked target, ready to restore an empty database and to receive its events."""

    target: str
    manifest: Manifest
    outbox_dir: Path
    every_minutes: float
    key: bytes | None
    token: str | None = None
    has_events: bool = False  # whether the target held events when it was checked
    pusher: Any = None
    log: EventLog | None = None
    restored: Restored | None = None

    @property
    def repo_id(self) -> str | None:
        from core.game.outbox import hub_repo_id

        return hub_repo_id(self.target)

    def attach(self, store: SyncedStore, scratch: Path) -> None:
        """Restore ``store`` from the target when it is empty, then start pushing its new
        events (``scratch``: where a Hub dataset is downloaded to restore)."""
        from core.game.outbox import FolderTarget, HubTarget, read_into

        if store.is_empty() and self.has_events:
            folder = read_into(self.target, scratch, self.token)
            self.restored = restore(store, folder)
            logger.info(
                "restored %s from %s (%d image files)",
                ", ".join(f"{n} {t}" for t, n in self.restored.rows.items()),
                self.target,
                self.restored.images,
            )
        outbox = Outbox(self.outbox_dir, threading.Lock())
        outbox.write_manifest(self.manifest)
        repo_id = self.repo_id
        if repo_id is None:
            self.pusher = FolderTarget(Path(self.target), self.outbox_dir, self.every_minutes)
        else:
            self.pusher = HubTarget(
                repo_id,
                self.outbox_dir,
                self.every_minutes,
                private=not self.manifest.public,
                token=self.token,
            )
        self.pusher.start()
        outbox.lock = self.pusher.lock
        self.log = EventLog(outbox, self.manifest, self.key)
        store.events = self.log

    def push(self) -> None:
        """Push what is pending now, and wait for it."""
        if self.pusher is not None:
            self.pusher.push()

    def close(self) -> None:
        """Push what is pending, then stop pushing (a clean stop loses nothing)."""
        if self.pusher is None:
            return
        try:
            self.pusher.push()
            logger.info("pushed the outbox to %s before stopping", self.target)
        except Exception as e:  # the votes stay in SQLite and in the outbox
            logger.error(
                "could not push the outbox to %s before stopping (%s: %s); it stays in %s "
                "and goes out at the next start on this disk",
                self.target,
                type(e).__name__,
                str(e)[:200],
                self.outbox_dir,
            )
        finally:
            self.pusher.stop()


def connect(
    target: str,
    outbox_dir: Path,
    every_minutes: float,
    *,
    public: bool,
    key: str | None,
    token: str | None = None,
) -> SyncLink:
    """Check ``target`` (reachable, ours, of the same visibility) writing nothing anywhere.

    Raises SyncTargetError or ForeignSyncTargetError with one line that says why.
    """
    import uuid

    from core.game.outbox import has_events, hub_repo_id, inspect_folder, inspect_hub

    if public and (not key or len(key) < SYNC_KEY_MIN_CHARS):
        raise SyncTargetError(
            f"a public sync target needs {SYNC_KEY_VARIABLE}, a secret of at least "
            f"{SYNC_KEY_MIN_CHARS} characters, to hash session ids"
        )
    repo_id = hub_repo_id(target)
    if repo_id is None:
        manifest, names = inspect_folder(Path(target), target)
    else:
        manifest, names = inspect_hub(repo_id, target, token)
    if manifest is not None and manifest.public != public:
        said = "public" if manifest.public else "private"
        raise SyncTargetError(
            f"{target} is a {said} target: start with --sync-visibility {said} to use it"
        )
    if manifest is None:
        manifest = Manifest(uuid.uuid4().hex, public)
    return SyncLink(
        target=target,
        manifest=manifest,
        outbox_dir=outbox_dir,
        every_minutes=every_minutes,
        key=key.encode("utf-8") if key else None,
        token=token,
        has_events=has_events(names),
    )
