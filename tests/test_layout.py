"""The wings of core/: which wing may import which, and where torch stops."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"

# A wing may import itself, the root vocabulary and the wings named here; nothing else.
ALLOWED = {
    "root": set(),
    "store": set(),
    "game": {"store"},
    "checkpoints": set(),
    "engine": {"checkpoints"},
    "bench": {"store", "game", "engine", "checkpoints"},
}
ROOT_MODULES = {"config", "errors", "records"}
TORCH_FREE = [
    "core.config",
    "core.errors",
    "core.records",
    "core.store.storage",
    "core.store.round_images",
    "core.game.rounds",
    "core.game.arena",
    "core.game.stats",
    "core.game.export",
    "core.game.request_limits",
    "core.game.presentation",
    "core.bench.report",
    "core.bench.simulate",
    "app",
]


def _wing(module: str) -> str:
    """The wing of a dotted core module name: its first part below core, or "root"."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "core":
        raise ValueError(module)
    return "root" if parts[1] in ROOT_MODULES | {"__init__"} else parts[1]


def _core_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core"):
            if node.module == "core":
                names.update(f"core.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("core."))
    return names


def test_every_module_lives_in_a_wing() -> None:
    loose = {p.stem for p in CORE.glob("*.py")} - ROOT_MODULES - {"__init__"}
    assert not loose, f"modules outside a wing: {sorted(loose)}"
    wings = {p.name for p in CORE.iterdir() if (p / "__init__.py").exists()}
    assert wings == set(ALLOWED) - {"root"}


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_runs_back_up(path: Path) -> None:
    rel = path.relative_to(ROOT).with_suffix("")
    here = (
        _wing(".".join(rel.parts)) if rel.parts[-1] != "__init__" or len(rel.parts) > 2 else "root"
    )
    for target in _core_imports(path):
        there = _wing(target)
        assert there in ALLOWED[here] | {here, "root"}, f"{rel} ({here}) imports {target} ({there})"


def test_data_side_and_serving_layer_never_import_torch() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {TORCH_FREE!r}:\n"
        "    importlib.import_module(name)\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'bitsandbytes', 'transformers')"
        " if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "", f"imported: {done.stdout.strip()}"


TESTS = ROOT / "tests"
TEST_HELPERS = {p.stem for p in TESTS.glob("*.py") if not p.stem.startswith("test_")}


@pytest.mark.parametrize("path", sorted(TESTS.glob("*.py")), ids=lambda p: p.name)
def test_tests_import_their_helpers_one_way(path: Path) -> None:
    """``from tests.app_server import …``: the repository root is on sys.path (pytest's
    ``pythonpath``), so no test imports a helper by its bare name, imports conftest, or
    edits sys.path."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level]  # a relative import
        else:
            names = []
        for name in names:
            assert name.split(".")[0] not in TEST_HELPERS | {""}, (
                f"{path.name}:{node.lineno} imports {name!r}; write `from tests.<helper> import`"
            )
        if isinstance(node, ast.Attribute) and node.attr == "path":
            assert not (isinstance(node.value, ast.Name) and node.value.id == "sys"), (
                f"{path.name}:{node.lineno} touches sys.path"
            )
