"""Who a player is: a stable, anonymous person id, kept in the browser or given by an account.

A person id is what the database stores as ``session_id`` on rounds and guesses, so the
game's per-player rules (ready rounds not seen yet, one guess per round, the daily cap)
and the statistics' clustering are per person, not per page load.

* **A browser** gets ``b-`` + 22 random URL-safe characters (128 bits), and keeps the
  *token* ``<id>.<signature>`` in its local storage (``gr.BrowserState``). The signature
  is an HMAC-SHA256 of the id under the server's key, so a token is accepted only as the
  server issued it: an id read from the public export, or made up, cannot be claimed
  without the key. A token that is malformed or wrongly signed is refused (None); the
  caller issues a new id.
* **A Hugging Face account** (OAuth on a Space) is ``a-`` + 22 characters of an
  HMAC-SHA256, under the same key, of the account's stable subject id: the same person on
  every browser, and no account name in the database or the export. Without the key the
  id cannot be linked back to the account.

The key is 32 random bytes, from ``SPOT_PERSON_KEY`` (hex, or any text of at least 32
characters) or a file beside the database created on first use (``person.key``, mode
0600). Rotating it makes every browser a new person and every account a new id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InvalidSettingError

logger = logging.getLogger(__name__)

KEY_BYTES = 32
KEY_FILE_NAME = "person.key"
KEY_MIN_CHARS = 32  # SPOT_PERSON_KEY: at least this many characters
BROWSER_PREFIX = "b-"
ACCOUNT_PREFIX = "a-"
_ID_CHARS = 22  # base64url of 16 bytes, unpadded
_SIGNATURE_CHARS = 22  # 128 bits of HMAC-SHA256
_B64 = r"[A-Za-z0-9_-]"
BROWSER_ID = re.compile(rf"{BROWSER_PREFIX}{_B64}{{{_ID_CHARS}}}")
ACCOUNT_ID = re.compile(rf"{ACCOUNT_PREFIX}{_B64}{{{_ID_CHARS}}}")
TOKEN = re.compile(rf"({BROWSER_PREFIX}{_B64}{{{_ID_CHARS}}})\.({_B64}{{{_SIGNATURE_CHARS}}})")
TOKEN_MAX_CHARS = 64  # anything longer is refused before it is parsed


def _b64(raw: bytes, chars: int) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")[:chars]


@dataclass(frozen=True)
class Person:
    """One person as the app knows them: ``id`` (stored as ``session_id``), ``kind``
    (``browser`` or ``account``), and ``token``: the signed token the browser must keep,
    or None when its stored token is already this one (or for an account)."""

    id: str
    kind: str
    token: str | None = None


@dataclass(frozen=True)
class PersonIds:
    """Issues and checks person ids under one server key (bytes, kept server-side)."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("the person key must be at least 16 bytes")

    @classmethod
    def ephemeral(cls) -> PersonIds:
        """A fresh random key: ids that last as long as this object (tests, simulations)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    def _mac(self, purpose: bytes, text: str) -> str:
        digest = hmac.new(self.key, purpose + b"\0" + text.encode("utf-8"), hashlib.sha256)
        return _b64(digest.digest(), _SIGNATURE_CHARS)

    def new_browser_person(self) -> Person:
        """A new anonymous person, with the token its browser keeps."""
        person_id = BROWSER_PREFIX + _b64(secrets.token_bytes(16), _ID_CHARS)
        return Person(person_id, "browser", f"{person_id}.{self._mac(b'browser', person_id)}")

    def browser_person(self, token: object) -> str | None:
        """The person id of a token this server issued; None for anything else (not a
        string, too long, malformed, or a signature that does not match)."""
        if not isinstance(token, str) or len(token) > TOKEN_MAX_CHARS:
            return None
        match = TOKEN.fullmatch(token)
        if match is None:
            return None
        person_id, signature = match.groups()
        if not hmac.compare_digest(signature, self._mac(b"browser", person_id)):
            return None
        return person_id

    def account_person(self, subject: str) -> str:
        """The person id of an account's stable subject id (OAuth ``sub``): a keyed hash,
        never the name."""
        if not isinstance(subject, str) or not subject:
            raise ValueError("an account needs a non-empty subject id")
        return ACCOUNT_PREFIX + self._mac(b"account", subject)

    def person(self, token: object, account: str | None = None) -> Person:
        """Who is playing: the account when signed in, else the browser's token's person,
        else a new browser person (a missing or refused token: its browser stores the new
        token in place of the old one)."""
        if account:
            return Person(self.account_person(account), "account")
        person_id = self.browser_person(token)
        if person_id is not None:
            return Person(person_id, "browser")
        if token not in (None, ""):
            logger.info("a browser sent a person token this server did not issue: new id")
        return self.new_browser_person()


def is_person_id(value: object) -> bool:
    """Whether ``value`` has the shape of a browser or account person id."""
    return isinstance(value, str) and bool(
        BROWSER_ID.fullmatch(value) or ACCOUNT_ID.fullmatch(value)
    )


def key_from_text(text: str, source: str) -> bytes:
    """The key given as text (``SPOT_PERSON_KEY``): 64 hex digits are read as 32 bytes,
    any other text of at least KEY_MIN_CHARS characters is used as its UTF-8 bytes."""
    text = text.strip()
    if len(text) < KEY_MIN_CHARS:
        raise InvalidSettingError(
            f"{source} must be at least {KEY_MIN_CHARS} characters (e.g. 64 hex digits), "
            f"got {len(text)}"
        )
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    return text.encode("utf-8")


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path`` (64 hex digits), made with 32 random bytes on first use.

    The key is written to a temporary file (mode 0600) and linked into place, so of two
    processes starting together one makes it and both read the same, whole key. A file
    that holds anything else stops the app (InvalidSettingError naming the file):
    replacing it would make every browser a new person.
    """
    path = Path(path)
    try:
        if not path.exists():
            _create_key_file(path)
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise InvalidSettingError(
            f"cannot make or read the person key {path} ({exc.strerror or exc}); make its "
            "folder writable or set SPOT_PERSON_KEY"
        ) from None
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise InvalidSettingError(
            f"{path} is not a person key (64 hex digits); restore it, or delete it to make "
            "every browser a new person"
        )
    return bytes.fromhex(text)


def _create_key_file(path: Path) -> None:
    """Write 32 random bytes as hex to ``path`` unless another process got there first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(KEY_BYTES) + "\n")
        os.link(tmp, path)
        logger.info("created the person key %s", path)
    except FileExistsError:
        pass  # another process made it first: read theirs
    finally:
        tmp.unlink(missing_ok=True)
