"""Writing the trained micro model as an ordinary diffusers ``FluxPipeline`` folder.

``model_index.json``, one sub-folder per component, bf16 safetensors and real tokenizers —
the same layout as a hub model, so ``FluxPipeline.from_pretrained`` and the engine load it
unchanged. The folder is written next to its destination and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from core.checkpoints.writer import write_pipeline_folder

PROVENANCE_FILE = "micro.json"


def write_pipeline(
    directory: Path, components: Mapping[str, Any], provenance: Mapping[str, Any]
) -> Path:
    """Save ``components`` (FluxPipeline names -> modules, tokenizers, scheduler) in bf16
    into ``directory``, replacing it if it exists, with ``provenance`` in micro.json."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".micro-", dir=directory.parent))
    try:
        in_bf16 = {
            name: c.to(torch.bfloat16) if isinstance(c, torch.nn.Module) else c
            for name, c in components.items()
        }
        target = write_pipeline_folder(staging / "pipeline", in_bf16)
        (target / PROVENANCE_FILE).write_text(json.dumps(dict(provenance), indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(target, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
