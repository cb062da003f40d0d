"""A quiet, quick start: `python app.py --help` answers before Gradio or torch is imported,
and loading the micro model prints neither of the two known harmless messages
(core.engine.quiet)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_help_answers_before_gradio_and_torch_are_imported():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "app.py", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: python app.py" in result.stdout and "--model" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "core.settings" in imported
    assert not {"gradio", "torch", "diffusers", "transformers"} & imported


def test_a_bad_flag_is_refused_before_gradio_is_imported():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "app.py", "--port", "abc"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "invalid int value: 'abc'" in result.stderr
    assert "| gradio" not in result.stderr and "| torch" not in result.stderr


def test_loading_the_micro_model_prints_neither_harmless_message(tmp_path):
    code = (
        "import logging\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from core.engine.generation import Engine\n"
        "engine = Engine.load('micro', device='cpu')\n"
        "print('LOADED', engine.variants)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert "LOADED" in result.stdout, result.stderr[-3000:]
    assert "pip install kernels" not in result.stderr
    assert "Install torchvision" not in result.stderr
