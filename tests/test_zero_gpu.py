"""ZeroGPU the documented way: with SPACES_ZERO_GPU set and the spaces package (0.51)
installed, importing the app imports spaces before torch, and ``app.on_zero_gpu`` wraps
the engine's generation alone in ``spaces.GPU(size="xlarge")``; a quota refusal becomes
a message that offers a ready round.

spaces' ZeroGPU mode reads ``torch.version.cuda`` and ``torch._C._cuda_init`` when it is
imported, so the import needs a CUDA build of torch (what a ZeroGPU Space installs; README):
on a CPU-only build the test is skipped, and this project's CPU machines and CI have only
that build, so it has not run yet (no GPU session has carried spaces). Faking CUDA on a
CPU build gets past the import but not spaces' worker, which pickles torch.cuda's
functions. It runs in a fresh interpreter: spaces patches torch process-wide.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

PROBE = r"""
import importlib.abc, json, sys, types

order = []


class Recorder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("spaces", "torch") and name not in order:
            order.append(name)
        return None


sys.meta_path.insert(0, Recorder())
import app

first = list(order)


class Engine:
    def generate(self, prompt, settings, progress=None):
        return "made"

    def default_settings(self, seed=0):
        return "defaults"


engine = Engine()
app.on_zero_gpu(engine)
from spaces.zero.decorator import decorated_cache
import spaces.zero.wrappers as wrappers
from spaces.zero.gradio import error

asked = {}


def refuse(**kwargs):
    asked.update(duration=kwargs["duration"], size=kwargs["gpu_size"])
    raise error("ZeroGPU quota exceeded", "You have exceeded your free ZeroGPU quota")


wrappers.client.schedule = refuse  # the Hub's scheduler: no network here
try:
    engine.generate("a fox", types.SimpleNamespace(steps=50))
    refused = None
except Exception as exc:
    refused = [type(exc).__name__, str(exc)]
print(json.dumps({
    "order": first,
    "wrapped": sorted(k for k in vars(engine)),
    "decorated": [getattr(task, "__name__", "") for task in decorated_cache],
    "zerogpu": hasattr(engine.generate.gpu_task, "zerogpu"),
    "asked": {k: str(v) for k, v in asked.items()},
    "refused": refused,
}))
"""


@pytest.mark.skipif(
    torch.version.cuda is None, reason="spaces' ZeroGPU mode imports only with a CUDA torch"
)
def test_spaces_comes_before_torch_and_wraps_generation_alone(tmp_path):
    pytest.importorskip("spaces")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "SPACES_ZERO_GPU": "true",
        "SPACES_ZERO_DEVICE_API_URL": "http://127.0.0.1:9",  # never reached: refused above
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["order"][0] == "spaces"  # imported by app, before any torch
    assert found["wrapped"] == ["generate"]  # only generation is replaced
    assert found["decorated"] == ["generate", "generate"]  # the task and its wrapper
    assert found["zerogpu"]
    assert found["asked"] == {"duration": "0:01:00", "size": "xlarge"}
    name, message = found["refused"]
    assert name == "ZeroGpuRefusedError" and "play a ready round" in message
