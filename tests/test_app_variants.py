"""The game among more variants (``--variants``): a trio of four variants played through
gradio_client against a launched app on the micro model (find the original among 4: four
images A…D, the fifth slot hidden, one guess, every slot labelled in the reveal, the
Results' own row), and each bad ``--variants`` refused by ``python app.py`` with its named
error and exit status 2, leaving no file behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import Client

from core.config import VARIANTS
from core.game.rounds import SLOT_LABELS
from tests.app_server import launched_app

REPO = Path(__file__).resolve().parent.parent
FOUR = ("bf16", "int8", "nf4", "fp8-layerwise")
# The micro model's own settings (12 steps, true CFG 4, 128²) and a prompt it knows.
MICRO_ARGS = ("a large red circle on the left, on a blue background", 0, False, 12, 4.0, 128, 128)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from core.engine.generation import Engine

    engine = Engine.load("micro", device="cpu", variants=FOUR)
    with launched_app(engine, tmp_path_factory.mktemp("variants")) as launched:
        yield launched


def _images(output: tuple) -> list[dict]:
    """The round's image updates (not the details), in slot order."""
    return [
        o
        for o in output
        if isinstance(o, dict)
        and str(o.get("label", "")).startswith(SLOT_LABELS)
        and not str(o.get("label")).endswith("(detail)")
    ]


@pytest.mark.slow
def test_a_trio_of_four_variants_is_played_through_gradio_client(served):
    client = Client(served.url, verbose=False, download_files=False)
    prompt, *settings = MICRO_ARGS
    out = client.predict(prompt, "trio", *settings, api_name="/generate")
    assert "original" in out[0]
    images = _images(out)
    assert [u["label"] for u in images if u["visible"]] == ["A", "B", "C", "D"]
    assert [u["label"] for u in images if not u["visible"]] == ["E"]
    [stored] = served.answer_keys()
    assert stored["compared_variant"] == "int8+nf4+fp8-layerwise"

    reveal = client.predict("A", api_name="/guess")
    verdict, table = reveal[0], reveal[1]
    for slot in "ABCD":
        assert f"**{slot}** = " in verdict
    assert "**E** = " not in verdict
    labelled = {u["label"].split(": ", 1)[0]: u["label"].split(": ", 1)[1] for u in _images(reveal)}
    assert sorted(labelled) == ["A", "B", "C", "D"]
    assert sorted(labelled.values()) == sorted(VARIANTS[v].label for v in FOUR)
    assert sorted(row[1] for row in table["data"]) == ["A", "B", "C", "D"]
    assert served.counts()["guesses"] == 1

    detection = client.predict(api_name="/results")[0]
    rows = {row[0]: row for row in detection["data"]}
    among = "trio: picked the original, Trio among 4 (LLM.int8, NF4, FP8 layerwise)"
    assert rows[among][3] == 1 and rows[among][-1] == "25%"
    assert "duel: spotted FP8 layerwise" in rows
    assert "duel: spotted LLM.int8, NF4 or FP8 layerwise" in rows


BAD_VARIANTS = [
    ("bf16,int8,fp9", "UnknownVariantError", "unknown variant(s) fp9"),
    ("bf16,int8,nf4,int8", "DuplicateVariantError", "named twice: int8"),
    (
        "bf16,int8,nf4,fp8-layerwise,gguf-q8,torchao-int8",
        "TooManyVariantsError",
        "at most 4 quantized variants",
    ),
    ("int8,nf4,fp8-layerwise", "ReferenceVariantMissingError", "must include bf16"),
]


@pytest.mark.parametrize(("text", "error", "says"), BAD_VARIANTS)
def test_a_bad_variants_flag_exits_2_with_its_named_error(tmp_path, text, error, says):
    db = tmp_path / "arena.db"
    result = subprocess.run(
        [sys.executable, "app.py", "--model", "micro", "--db", str(db), "--variants", text],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{error}: --variants: " in lines[0] and says in lines[0]
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())


def test_a_gpu_only_variant_is_refused_on_the_cpu_by_name(tmp_path):
    result = subprocess.run(
        [sys.executable, "app.py", "--model", "micro", "--db", str(tmp_path / "arena.db")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "SPOT_VARIANTS": "bf16,torchao-fp8",
             "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "InvalidSettingError" in errors[0]
    assert "'torchao-fp8' (torchao float8 weight-only) runs on a CUDA GPU" in errors[0]
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())
