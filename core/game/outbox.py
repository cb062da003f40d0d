"""The outbox and its targets: the file side of the event stream (core.game.sync).

The **outbox** is a local, append-only folder. This process appends its events to its
own uuid-named file ``events/<uuid>.jsonl`` and writes each image once, under
``images/<deployment>/<file name>``; a file is never rewritten, only appended to, so
a push that reads a file while it grows sends a prefix of whole lines (every append is
made under the target's lock, which a push holds while it lists the files).

A **target** receives the outbox every few minutes and on ``push()``:

- ``hf://datasets/OWNER/NAME``: ``huggingface_hub.CommitScheduler`` commits the files that
  changed (its own lock is the outbox's lock);
- a folder (a mounted bucket, a backup drive, the tests): the same files are copied there,
  each through a temporary file and a rename, so a reader never sees half a file.

A target holds ``spot-sync.json`` (the event format, the deployment's id and whether the
target is public) beside ``events/`` and ``images/``; anything else there is refused by
name and the target is left untouched. ``read_into`` gives a local folder holding the
target's files, to restore or pool from.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from core.errors import ForeignSyncTargetError, SyncTargetError, excerpt

logger = logging.getLogger(__name__)

MANIFEST = "spot-sync.json"
EVENTS_DIR = "events"
IMAGES_DIR = "images"
FORMAT = "spot-events/1"
HUB_PREFIX = "hf://datasets/"
# Files a Hub dataset has of its own (created with the repository, or its card).
HUB_OWN_FILES = frozenset({".gitattributes", "README.md"})
_HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_EVENT_FILE = re.compile(r"^events/[0-9a-f]{32}\.jsonl$")
_IMAGE_FILE = re.compile(r"^images/[0-9a-f]{32}/[0-9a-f]{32}\.png$")


@dataclass(frozen=True)
class Manifest:
    """What a target says of itself: its deployment id (32 hex digits) and visibility."""

    deployment: str
    public: bool

    def to_json(self) -> str:
        return json.dumps(
            {"format": FORMAT, "deployment": self.deployment, "public": self.public},
            sort_keys=True,
        )

    @staticmethod
    def parse(text: str, where: str) -> Manifest:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError
            deployment = str(data["deployment"])
            if not re.fullmatch(r"[0-9a-f]{32}", deployment):
                raise ValueError
            return Manifest(deployment, bool(data["public"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ForeignSyncTargetError(
                f"{where}: {MANIFEST} is not this game's ({FORMAT}); the target was left untouched"
            ) from None


def foreign_files(names: list[str]) -> list[str]:
    """The relative paths (posix) among ``names`` that a target of this game never holds."""
    return [
        n
        for n in names
        if n != MANIFEST
        and n not in HUB_OWN_FILES
        and not _EVENT_FILE.match(n)
        and not _IMAGE_FILE.match(n)
    ]


def refuse_foreign(where: str, names: list[str]) -> None:
    """Raise ForeignSyncTargetError naming (some of) the foreign files, if any."""
    foreign = sorted(foreign_files(names))
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise ForeignSyncTargetError(
            f"{where} holds files that are not this game's events ({shown}); "
            "it was left untouched: give an empty folder or dataset, or one this game wrote"
        )


def hub_repo_id(target: str) -> str | None:
    """``OWNER/NAME`` of an ``hf://datasets/OWNER/NAME`` target; None for a folder.

    Raises SyncTargetError for another ``hf://`` form (a model, a Space, a subfolder)."""
    if not target.startswith("hf://"):
        return None
    repo_id = target[len(HUB_PREFIX) :].rstrip("/") if target.startswith(HUB_PREFIX) else ""
    if not _HUB_REPO.match(repo_id):
        raise SyncTargetError(
            f"{excerpt(target)} is not a dataset target: write hf://datasets/OWNER/NAME"
        )
    return repo_id


class Outbox:
    """This process's append-only files under ``folder``; ``lock`` is its target's lock."""

    def __init__(self, folder: Path, lock: threading.Lock) -> None:
        self.folder = Path(folder)
        self.lock = lock
        self.process_id = uuid.uuid4().hex
        self.events_file = self.folder / EVENTS_DIR / f"{self.process_id}.jsonl"

    def write_manifest(self, manifest: Manifest) -> None:
        with self.lock:
            _write_atomically(self.folder / MANIFEST, manifest.to_json().encode())

    def append(self, events: list[dict[str, Any]], files: dict[str, bytes] | None = None) -> None:
        """Write ``files`` (relative path -> bytes, each written once, never replaced),
        then append ``events`` as JSON lines, flushed to the disk, under the lock."""
        text = "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in events)
        with self.lock:
            for rel, data in (files or {}).items():
                path = self.folder / rel
                if not path.exists():
                    _write_atomically(path, data)
            self.events_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.events_file, "a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Target(Protocol):
    """Where an outbox goes. ``lock`` guards the outbox while a push lists it."""

    name: str
    lock: threading.Lock

    def start(self) -> None: ...

    def push(self) -> None: ...

    def stop(self) -> None: ...


def _listing(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".part-")
    )


# --- a folder ------------------------------------------------------------------------------


def inspect_folder(path: Path, where: str) -> tuple[Manifest | None, list[str]]:
    """Check that a folder target can be reached and is ours, writing nothing; return its
    manifest (None for a new or empty target) and its files' relative paths.

    Raises SyncTargetError (no parent folder, a file, not writable) or
    ForeignSyncTargetError (files that are not this game's)."""
    if path.exists() and not path.is_dir():
        raise SyncTargetError(f"{where} is a file, not a folder; nothing was written")
    if not path.exists():
        if not path.parent.is_dir():
            raise SyncTargetError(
                f"{where} cannot be reached: the folder {path.parent} does not exist; "
                "nothing was written"
            )
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise SyncTargetError(f"{where} cannot be created: {path.parent} is not writable")
        return None, []
    if not os.access(path, os.W_OK | os.X_OK):
        raise SyncTargetError(f"{where} is not writable; nothing was written")
    names = _listing(path)
    refuse_foreign(where, names)
    manifest = path / MANIFEST
    if not manifest.exists():
        return None, names
    return Manifest.parse(manifest.read_text(encoding="utf-8"), where), names


class FolderTarget:
    """Copies the outbox's new and grown files into a folder, every ``every_minutes``."""

    def __init__(self, path: Path, outbox_dir: Path, every_minutes: float) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.outbox_dir = Path(outbox_dir)
        self.every_seconds = every_minutes * 60
        self.lock = threading.Lock()
        self._pushed: dict[str, tuple[int, float]] = {}
        self._push_lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sync-folder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.every_seconds):
            try:
                self.push()
            except Exception:
                logger.exception("could not push the outbox to %s", self.name)

    def push(self) -> None:
        """Copy every file that is new or changed since the last push (a prefix of whole
        lines for a growing events file: the listing and sizes are taken under the lock)."""
        with self._push_lock:
            with self.lock:
                sizes = {
                    rel: (
                        (self.outbox_dir / rel).stat().st_size,
                        (self.outbox_dir / rel).stat().st_mtime,
                    )
                    for rel in _listing(self.outbox_dir)
                }
            changed = {rel: s for rel, s in sizes.items() if self._pushed.get(rel) != s}
            for rel, (size, _) in changed.items():
                dest = self.path / rel
                # Files only grow: never replace a longer copy (pushed by another process
                # sharing this outbox) with a shorter prefix.
                if rel != MANIFEST and dest.exists() and dest.stat().st_size >= size:
                    self._pushed[rel] = sizes[rel]
                    continue
                with open(self.outbox_dir / rel, "rb") as f:
                    data = f.read(size)
                _write_atomically(dest, data)
                self._pushed[rel] = sizes[rel]
            if changed:
                logger.info("pushed %d file(s) to %s", len(changed), self.name)

    def stop(self) -> None:
        self._stopped.set()


# --- a Hub dataset -------------------------------------------------------------------------


def inspect_hub(repo_id: str, where: str, token: str | None) -> tuple[Manifest | None, list[str]]:
    """Check that the Hub answers and the dataset (if it exists) is ours, writing nothing;
    return its manifest (None for a new or empty dataset) and its files' paths."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    api = HfApi(token=token)
    try:
        names = api.list_repo_files(repo_id, repo_type="dataset")
    except RepositoryNotFoundError:
        return None, []
    except Exception as e:
        raise SyncTargetError(
            f"{where} cannot be reached ({type(e).__name__}: {excerpt(str(e), 120)}); "
            "nothing was written"
        ) from None
    refuse_foreign(where, names)
    if MANIFEST not in names:
        return None, names
    try:
        path = hf_hub_download(repo_id, MANIFEST, repo_type="dataset", token=token)
    except Exception as e:
        raise SyncTargetError(
            f"{where}: {MANIFEST} could not be read ({type(e).__name__})"
        ) from None
    return Manifest.parse(Path(path).read_text(encoding="utf-8"), where), names


def has_events(names: list[str]) -> bool:
    """Whether a target's file list holds an events file."""
    return any(_EVENT_FILE.match(n) for n in names)


class HubTarget:
    """``huggingface_hub.CommitScheduler`` pushing the outbox to a dataset repository."""

    def __init__(
        self,
        repo_id: str,
        outbox_dir: Path,
        every_minutes: float,
        *,
        private: bool,
        token: str | None,
    ) -> None:
        self.repo_id = repo_id
        self.name = HUB_PREFIX + repo_id
        self.outbox_dir = Path(outbox_dir)
        self.every_minutes = every_minutes
        self.private = private
        self.token = token
        # The scheduler's lock does not exist before it starts; appends made before that
        # (none in the app) would use this one.
        self.lock = threading.Lock()
        self._scheduler: Any = None

    def start(self) -> None:
        from huggingface_hub import CommitScheduler

        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._scheduler = CommitScheduler(
                repo_id=self.repo_id,
                repo_type="dataset",
                folder_path=self.outbox_dir,
                every=self.every_minutes,
                private=self.private,
                token=self.token,
            )
        except Exception as e:
            raise SyncTargetError(
                f"{self.name} could not be created or opened "
                f"({type(e).__name__}: {excerpt(str(e), 120)})"
            ) from None
        self.lock = self._scheduler.lock

    def push(self) -> None:
        """Commit what is pending now and wait for the commit (``stop()`` pushes nothing)."""
        if self._scheduler is not None:
            self._scheduler.trigger().result()

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()


def read_into(target: str, into: Path, token: str | None = None) -> Path:
    """A local folder holding the files of ``target`` (a folder is read where it is; a Hub
    dataset is downloaded under ``into``). Raises SyncTargetError."""
    repo_id = hub_repo_id(target)
    if repo_id is None:
        path = Path(target)
        if not path.is_dir():
            raise SyncTargetError(f"{excerpt(target)} is not a folder")
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(repo_id, repo_type="dataset", local_dir=into / repo_id, token=token)
        )
    except Exception as e:
        raise SyncTargetError(
            f"{target} could not be read ({type(e).__name__}: {excerpt(str(e), 120)})"
        ) from None


def copy_file(source: Path, dest: Path) -> None:
    """Copy one file through a temporary file and a rename (never half a file)."""
    _write_atomically(dest, source.read_bytes())
