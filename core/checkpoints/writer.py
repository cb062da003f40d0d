"""Writing a diffusers pipeline folder, atomically: the one writer every checkpoint uses.

A pipeline folder is ``model_index.json`` (the pipeline class, the diffusers version and
one ``[library, class]`` entry per component) plus one ``save_pretrained`` sub-folder per
component. ``ensure_pipeline_folder`` builds it in a temporary sibling and renames it into
place, so a crash or a concurrent builder never leaves a half-written checkpoint behind,
and a folder that is already complete is reused as is.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The seed every built-in checkpoint draws its random weights from.
CHECKPOINT_SEED = 20241121
PIPELINE_CLASS = "FluxPipeline"
MODEL_INDEX = "model_index.json"


def model_index_entry(component: object) -> list[str]:
    """``[library, class name]`` of a component, as diffusers records it in model_index.json."""
    module = type(component).__module__
    library = "diffusers" if module.startswith("diffusers") else "transformers"
    return [library, type(component).__name__]


def save_component(directory: Path, name: str, component: Any) -> list[str]:
    """``save_pretrained`` the component into ``directory / name``; return its index entry."""
    component.save_pretrained(directory / name)
    return model_index_entry(component)


def write_model_index(
    directory: Path, entries: Mapping[str, list[str]], pipeline_class: str = PIPELINE_CLASS
) -> None:
    """Write model_index.json: the pipeline class, this diffusers version, the components."""
    index: dict[str, Any] = {
        "_class_name": pipeline_class,
        "_diffusers_version": importlib.metadata.version("diffusers"),
        **dict(sorted(entries.items())),
    }
    (directory / MODEL_INDEX).write_text(json.dumps(index, indent=2))


def write_pipeline_folder(
    directory: Path, components: Mapping[str, Any], pipeline_class: str = PIPELINE_CLASS
) -> Path:
    """Save every component and the model index into ``directory`` (which must not exist)."""
    directory.mkdir(parents=True)
    entries = {name: save_component(directory, name, c) for name, c in components.items()}
    write_model_index(directory, entries, pipeline_class)
    return directory


def is_pipeline_folder(directory: Path) -> bool:
    return (directory / MODEL_INDEX).is_file()


def ensure_pipeline_folder(directory: Path, build: Callable[[Path], object]) -> Path:
    """Return ``directory``, first building it with ``build(path)`` if it is not complete.

    ``build`` writes a whole pipeline folder at ``path`` (which does not exist yet), in a
    temporary sibling of ``directory`` that is renamed into place when it is done. When
    another builder finished first, its folder is kept and this one is discarded.
    """
    directory = Path(directory)
    if is_pipeline_folder(directory):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        build(staging / "pipeline")
        try:
            os.replace(staging / "pipeline", directory)
        except OSError:
            if not is_pipeline_folder(directory):
                raise
        logger.info("wrote the pipeline folder %s", directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
