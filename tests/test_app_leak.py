"""Nothing a client receives before its guess tells which slot holds which variant.

Over 60 ready rounds of three stored generations, across sessions, this scans everything
served before the guess: the /config JSON, every event output (gradio_client with raw file
data), the image URLs and file names, the HTTP headers and PNG bytes of every served
image. Then, from the answer keys stored in the database after the fact, it checks that
the slot of BF16 is uniform over the slots (chi-square, fixed-seed RNG).
"""

from __future__ import annotations

import collections
import json
import re
import struct
from email.utils import parsedate_to_datetime
from pathlib import PurePosixPath

import httpx
import pytest
from gradio_client import Client
from scipy.stats import chisquare

from core.config import MODE_SPECS, VARIANTS
from tests.app_server import SIZE, STEPS, generate_args, launched_app

pytestmark = pytest.mark.slow

SESSIONS = 20
HEX = frozenset("0123456789abcdef")


def _as_text(word: str) -> str:
    """The pattern of ``word`` as written text. A word of hex digits only ("bf16") also
    occurs by chance inside random hex tokens — ETags, content-hash URLs, random file
    names (about one run in three over this test's ~180 images) — so it counts only where
    no hex digit stands beside it: "bf16.png", '"bf16"' and "_bf16" are still caught."""
    pattern = re.escape(word)
    if set(word.lower()) <= HEX:
        pattern = f"(?<![0-9a-f]){pattern}(?![0-9a-f])"
    return pattern


# Variant names and labels, in every spelling that could give a slot away.
FORBIDDEN = re.compile(
    "|".join(
        _as_text(word)
        for v in VARIANTS.values()
        for word in {v.name, v.label, v.label.split(" ")[0], v.quantization}
        if word != "none"
    )
    + "|original|quantized",
    re.IGNORECASE,
)
FORBIDDEN_BYTES = [w.encode() for w in ("bf16", "BF16", "int8", "INT8", "nf4", "NF4", "LLM.int8")]
# Chunks a metadata-free PNG of RGB pixels may hold.
PIXEL_CHUNKS = {b"IHDR", b"IDAT", b"IEND"}


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return chunks


def png_bytes_besides_pixels(data: bytes) -> bytes:
    """Every byte of a PNG except the compressed pixel data (IDAT payloads), where any
    four-byte string turns up by chance; names and metadata live in the rest."""
    kept, pos = [data[:8]], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunk_type = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        kept.append(data[pos : pos + 8] if chunk_type == b"IDAT" else data[pos:end])
        pos = end
    return b"".join(kept)


def scrub_questions(text: str) -> str:
    """The mode's question names the target ("the original (BF16)"), by design."""
    for spec in MODE_SPECS.values():
        text = text.replace(spec.question, "")
    return text


@pytest.fixture(scope="module")
def served(tiny_engine, tmp_path_factory):
    with launched_app(tiny_engine, tmp_path_factory.mktemp("leak"), rng_seed=2024) as launched:
        yield launched


class Scanner:
    """Fetches and checks what a round serves before its guess."""

    def __init__(self, served) -> None:
        self.served = served
        self.http = httpx.Client(base_url=served.url, timeout=10)
        self.stored_names = set()

    def check_round_output(self, output: tuple, mode: str) -> list[dict]:
        text = scrub_questions(json.dumps(output, ensure_ascii=False))
        assert not FORBIDDEN.search(text), FORBIDDEN.search(text)
        images = [o for o in output if isinstance(o, dict) and o.get("visible") and "value" in o]
        assert [o["label"] for o in images] == ["A", "B", "C"][: MODE_SPECS[mode].slots]
        modified = []
        for update in images:
            data = update["value"]
            name = PurePosixPath(data["path"]).name
            assert re.fullmatch(r"[0-9a-f]{32}\.png", name), name
            assert data.get("orig_name") in (None, name)
            response = self.http.get(data["url"])
            assert response.status_code == 200
            headers = json.dumps(dict(response.headers))
            assert not FORBIDDEN.search(headers), headers
            modified.append(parsedate_to_datetime(response.headers["last-modified"]))
            body = response.content
            assert set(png_chunks(body)) <= PIXEL_CHUNKS, set(png_chunks(body))
            besides_pixels = png_bytes_besides_pixels(body)
            assert not any(word in besides_pixels for word in FORBIDDEN_BYTES)
            self.stored_names.add(name)
        # Modification times follow the slots (Gradio touches its cached copy as it serves
        # it), never the order in which the variants were generated and written.
        assert modified == sorted(modified), modified
        return images


def test_nothing_before_the_guess_tells_the_slots_apart(served, tiny_engine):
    scanner = Scanner(served)
    config = scanner.http.get("config").text

    # One generation through the API (its own output is scanned too), two stored directly.
    maker = Client(served.url, verbose=False, download_files=False)
    made = maker.predict(*generate_args("a red bicycle by a wall"), api_name="/generate")
    scanner.check_round_output(made, "trio")
    maker.predict("cant_tell", api_name="/guess")
    for i, prompt in enumerate(["a bowl of lemons", "a snowy mountain cabin"]):
        settings = tiny_engine.default_settings(seed=10 + i).with_(
            steps=STEPS, width=SIZE, height=SIZE
        )
        served.store.save_generation(tiny_engine.generate(prompt, settings))

    # A session plays each stored generation once, in either mode: 3 rounds per session.
    for i in range(SESSIONS * 3):
        if i % 3 == 0:
            player = Client(served.url, verbose=False, download_files=False)
        mode = ("trio", "duel")[i % 2]
        scanner.check_round_output(player.predict(mode, api_name="/ready_round"), mode)
        player.predict("cant_tell", api_name="/guess")
        if i % 3 == 2:
            with pytest.raises(Exception, match="no new trio round is ready"):
                player.predict("trio", api_name="/ready_round")

    # The static page config was served before any round and names none of their files.
    assert scanner.stored_names and not any(n in config for n in scanner.stored_names)
    assert not re.search(r'"label": "[ABC]: ', config)

    rounds = served.answer_keys()
    assert len(rounds) == 1 + SESSIONS * 3
    bf16_slots = {"trio": collections.Counter(), "duel": collections.Counter()}
    for r in rounds:
        key = json.loads(r["answer_key"])
        bf16_slots[r["mode"]][next(s for s, v in key.items() if v == "bf16")] += 1
    for mode, counter in bf16_slots.items():
        slots = "ABC"[: MODE_SPECS[mode].slots]
        observed = [counter[s] for s in slots]
        assert sum(observed) >= SESSIONS * 3 // 2
        p_value = chisquare(observed).pvalue
        assert p_value > 0.01, f"{mode}: BF16 by slot {dict(counter)} (p={p_value:.4f})"
