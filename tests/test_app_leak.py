"""Nothing a client receives before its guess tells which slot holds which variant, not
even when the generation was already played by others; nothing one player types reaches
another as anything but text; and the public export maps no served image to a variant.

Eight generations (one made through the API, with a planted prompt) are played by 13
sessions, each its own gradio_client, in alternating modes: 104 ready rounds, every
generation replayed by every session. Before each guess the test scans what the round
serves: the event output, the image URLs, names, HTTP headers and PNG bytes, fetching the
slots concurrently. Afterwards, with the answer keys read from the database, a classifier
per side channel ("the newest / oldest / largest / first slot is BF16", for Last-Modified,
Content-Length, ETag, URL, file name and response order) must not beat chance in either
mode: a one-sided exact binomial test (scipy.stats.binomtest) with p > ALPHA, over the
rounds where the channel picks one slot (on a tie it abstains: a channel that is the same
for every slot, as timestamps, sizes and ETags now are, picks none).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import re
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from email.utils import parsedate_to_datetime
from pathlib import PurePosixPath

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from scipy.stats import binomtest, chisquare

from core.config import MODE_SPECS, VARIANTS
from tests.app_server import DEADLINE_SECONDS, SIZE, STEPS, generate_args, launched_app

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

SESSIONS = 13
STORED_GENERATIONS = 7  # besides the one made through the API
# A channel that gave BF16 away in 3 duel rounds of 4 (39 of 52) would score p ≈ 2e-4.
ALPHA = 1e-3
HEX = frozenset("0123456789abcdef")
PLANTED = (
    "![](http://planted.invalid/pixel.png) a red bicycle\n"
    "# Hint: the answer is A\n"
    "<script>window.planted = 1</script>"
)


def _as_text(word: str) -> str:
    """The pattern of ``word`` as written text. A word of hex digits only ("bf16") also
    occurs by chance inside random hex tokens — ETags, random file names — so it counts
    only where no hex digit stands beside it: "bf16.png", '"bf16"' and "_bf16" are still
    caught."""
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
    """Fetches and checks what a round serves before its guess, and keeps what it saw."""

    def __init__(self, served) -> None:
        self.served = served
        self.http = httpx.Client(base_url=served.url, timeout=DEADLINE_SECONDS)
        self.pool = ThreadPoolExecutor(max_workers=3)
        self.rounds: list[dict[str, dict]] = []  # per round: slot -> what was served
        self.open_images: list[dict] = []  # images of the round being played

    def close(self) -> None:
        self.pool.shutdown()
        self.http.close()

    def check_round_output(self, output: tuple, mode: str) -> None:
        question, shown_prompt = output[0], output[1]
        # The player's prompt comes as a plain-text Textbox value, never inside Markdown.
        assert isinstance(shown_prompt, dict) and shown_prompt["value"]
        assert shown_prompt["value"] not in question
        text = scrub_questions(json.dumps(output, ensure_ascii=False))
        assert not FORBIDDEN.search(text), FORBIDDEN.search(text)
        images = [o for o in output if isinstance(o, dict) and o.get("visible") and "label" in o]
        images = [o for o in images if isinstance(o.get("value"), dict)]
        assert [o["label"] for o in images] == ["A", "B", "C"][: MODE_SPECS[mode].slots]
        futures = {}
        for update in images:
            data = update["value"]
            name = PurePosixPath(data["path"]).name
            assert re.fullmatch(r"[0-9a-f]{32}\.png", name), name
            assert data.get("orig_name") in (None, name)
            futures[self.pool.submit(self.http.get, data["url"])] = (update["label"], data)
        seen: dict[str, dict] = {}
        for rank, future in enumerate(as_completed(futures)):
            slot, data = futures[future]
            response = future.result()
            assert response.status_code == 200
            headers = json.dumps(dict(response.headers))
            assert not FORBIDDEN.search(headers), headers
            body = response.content
            assert set(png_chunks(body)) <= PIXEL_CHUNKS, set(png_chunks(body))
            assert not any(word in png_bytes_besides_pixels(body) for word in FORBIDDEN_BYTES)
            seen[slot] = {
                "url": data["url"],
                "name": PurePosixPath(data["path"]).name,
                "last_modified": parsedate_to_datetime(response.headers["last-modified"]),
                "etag": response.headers["etag"],
                "length": int(response.headers["content-length"]),
                "rank": rank,
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        self.rounds.append(dict(sorted(seen.items())))
        self.open_images = list(seen.values())


def pick(values: dict[str, object], *, largest: bool) -> str | None:
    """The slot with the largest (or smallest) value; None when several share it (the
    classifier abstains: a channel that is the same for every slot says nothing)."""
    best = (max if largest else min)(values.values())
    slots = [slot for slot, value in values.items() if value == best]
    return slots[0] if len(slots) == 1 else None


# name -> (field, pick the largest?)
CLASSIFIERS = {
    "newest Last-Modified": ("last_modified", True),
    "oldest Last-Modified": ("last_modified", False),
    "largest Content-Length": ("length", True),
    "first ETag": ("etag", False),
    "first URL": ("url", False),
    "first file name": ("name", False),
    "first response": ("rank", False),
}


def check_export_during_an_open_round(served, scanner: Scanner, tmp_path) -> None:
    """The app's export, made while a round is open, holds nothing that identifies one of
    the images served so far: no name, URL, hash of the served bytes, stored file name or
    stored hash; and no per-image figure (PSNR, SSIM) a player could recompute."""
    path = served.arena.export_zip(tmp_path / "exports")
    with zipfile.ZipFile(path) as archive:
        text = "\n".join(archive.read(n).decode() for n in archive.namelist())
        images_csv = archive.read("images.csv").decode().splitlines()
    assert scanner.open_images
    served_images = [i for r in scanner.rounds for i in r.values()]
    for image in served_images:
        for key in ("name", "url", "sha256"):
            assert image[key] not in text, key
        assert PurePosixPath(image["name"]).stem not in text
    for row in served.store._conn().execute("SELECT path, sha256 FROM images"):
        assert row["path"] not in text and row["sha256"] not in text
    header = images_csv[0].replace('"', "").split(",")
    assert not {"path", "sha256", "psnr", "ssim", "flip_mean"} & set(header), header
    sizes = {str(i["length"]) for i in served_images}
    for line in images_csv[1:]:
        assert not sizes & set(line.replace('"', "").split(","))


def test_no_channel_tells_the_slots_apart(served, tiny_engine, tmp_path):
    scanner = Scanner(served)
    config = scanner.http.get("config").text

    # One generation through the API, with a planted prompt; the rest stored directly.
    maker = Client(served.url, verbose=False, download_files=False)
    made = maker.predict(*generate_args(PLANTED), api_name="/generate")
    scanner.check_round_output(made, "trio")
    assert made[1]["value"] == PLANTED
    maker.predict("cant_tell", api_name="/guess")
    for i in range(STORED_GENERATIONS):
        settings = tiny_engine.default_settings(seed=10 + i).with_(
            steps=STEPS, width=SIZE, height=SIZE
        )
        served.store.save_generation(tiny_engine.generate(f"stored prompt {i}", settings))
    generations = 1 + STORED_GENERATIONS

    # Every session plays every generation once, modes alternating: each generation is
    # replayed by every session after the first.
    planted_seen = 0
    for i in range(SESSIONS * generations):
        if i % generations == 0:
            player = Client(served.url, verbose=False, download_files=False)
        mode = ("trio", "duel")[i % 2]
        output = player.predict(mode, api_name="/ready_round")
        scanner.check_round_output(output, mode)
        if output[1]["value"] == PLANTED:
            planted_seen += 1
        if i == 3 * generations + 2:
            check_export_during_an_open_round(served, scanner, tmp_path)
        player.predict("cant_tell", api_name="/guess")
        if i % generations == generations - 1:
            with pytest.raises(AppError, match="no new trio round is ready"):
                player.predict("trio", api_name="/ready_round")
    scanner.close()
    assert planted_seen == SESSIONS  # every other player saw the planted prompt as text

    # The static page config was served before any round and names none of their files.
    served_names = {i["name"] for r in scanner.rounds for i in r.values()}
    assert served_names and not any(n in config for n in served_names)
    assert not re.search(r'"label": "[ABC]: ', config)

    rounds = served.answer_keys()
    assert len(rounds) == len(scanner.rounds) == 1 + SESSIONS * generations >= 100
    keys = [json.loads(r["answer_key"]) for r in rounds]

    # Side channels: no classifier finds BF16 better than chance, in either mode.
    rates, beaten = {}, []
    for name, (field, largest) in CLASSIFIERS.items():
        hits = collections.Counter()
        played = collections.Counter()
        for r, key, seen in zip(rounds, keys, scanner.rounds, strict=True):
            slot = pick({s: v[field] for s, v in seen.items()}, largest=largest)
            if slot is not None:
                played[r["mode"]] += 1
                hits[r["mode"]] += key[slot] == "bf16"
        for mode in ("trio", "duel"):
            n = played[mode]
            if n == 0:
                rates[f"{name} ({mode})"] = "never picks a slot (the same for every slot)"
                continue
            chance = 1 / MODE_SPECS[mode].slots
            p_value = binomtest(hits[mode], n, chance, alternative="greater").pvalue
            rates[f"{name} ({mode})"] = f"{hits[mode]}/{n}, chance {chance:.2f}, p={p_value:.3f}"
            if p_value <= ALPHA:
                beaten.append(f"{name} ({mode})")
    logger.info("side-channel classifiers: %s", json.dumps(rates, indent=1))
    assert not beaten, {name: rates[name] for name in beaten}

    # History: a generation's later rounds look exactly like its first one, apart from
    # fresh names; no URL is ever served twice.
    urls = [i["url"] for r in scanner.rounds for i in r.values()]
    assert len(set(urls)) == len(urls)
    by_generation = collections.defaultdict(set)
    for r, seen in zip(rounds, scanner.rounds, strict=True):
        for image in seen.values():
            by_generation[r["generation_id"]].add(
                (image["length"], image["last_modified"], image["etag"])
            )
    assert all(len(kinds) == 1 for kinds in by_generation.values()), by_generation

    # And the shuffle itself: BF16's slot is uniform over the slots in each mode.
    bf16_slots = {"trio": collections.Counter(), "duel": collections.Counter()}
    for r, key in zip(rounds, keys, strict=True):
        bf16_slots[r["mode"]][next(s for s, v in key.items() if v == "bf16")] += 1
    for mode, counter in bf16_slots.items():
        observed = [counter[s] for s in "ABC"[: MODE_SPECS[mode].slots]]
        p_value = chisquare(observed).pvalue
        assert p_value > ALPHA, f"{mode}: BF16 by slot {dict(counter)} (p={p_value:.4f})"
