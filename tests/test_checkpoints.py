"""core.checkpoints.writer: pipeline folders written atomically, once, and loadable."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from core.checkpoints.tiny import write_tiny_checkpoint
from core.checkpoints.writer import ensure_pipeline_folder


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "models" / "broken"

    def build(path: Path) -> None:
        path.mkdir()
        (path / "model_index.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        ensure_pipeline_folder(target, build)
    assert not target.exists()
    assert list((tmp_path / "models").iterdir()) == []  # no staging folder either


def test_the_tiny_checkpoint_is_written_once_with_a_complete_index(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(path: Path) -> Path:
        calls.append(path)
        return write_tiny_checkpoint(path)

    folder = ensure_pipeline_folder(tmp_path / "tiny", build)
    assert ensure_pipeline_folder(tmp_path / "tiny", build) == folder and len(calls) == 1
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    assert index["_diffusers_version"] == importlib.metadata.version("diffusers")
    components = {k: v for k, v in index.items() if not k.startswith("_")}
    assert set(components) == {
        "transformer", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae",
        "scheduler",
    }  # fmt: skip
    assert components["transformer"] == ["diffusers", "FluxTransformer2DModel"]
    assert components["text_encoder_2"] == ["transformers", "T5EncoderModel"]
    for name in components:
        assert (folder / name).is_dir(), name
