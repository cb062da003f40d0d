"""Shared fixtures: the tiny FLUX engine on the CPU, loaded once per test session."""

from __future__ import annotations

import os

import pytest
import torch

# Tests never reach a hub: anything that tries fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_engine():
    from core.engine.generation import Engine

    return Engine.load("tiny", device="cpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
