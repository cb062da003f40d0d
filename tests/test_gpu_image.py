"""The lent GPU machine can start the app: every distribution app.py imports at start is in
its image (.ci/gpu-image.txt) or among the wheels carried to it (.ci/gpu-wheels.txt).

The imports are read from a fresh interpreter that does what ``python app.py`` does before
serving: import app, then the modules ``app.load_arena`` imports (the engine, the game and
the store). Each imported top-level module is mapped to the distribution that installs it.
Only distributions the project requires are checked (requirements.txt and what those
require, recursively): a library also imports optional packages when they happen to be
installed in this venv (diffusers imports ``gguf`` if present), and those are absent, so
not imported, on the GPU machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What ``python app.py`` imports before it serves: app itself, then load_arena's imports.
START_IMPORTS = """
import json, sys
import app
import core.engine.generation, core.game.rounds, core.store.storage
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def _normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _listed(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(_normalized(re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0]))
    return names


def _required_closure() -> set[str]:
    """requirements.txt's distributions and, recursively, what they require here (extras
    left out, environment markers evaluated for this interpreter)."""
    import importlib.metadata

    from packaging.requirements import Requirement

    pending = sorted(_listed(REPO / "requirements.txt"))
    closure: set[str] = set()
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            pending.append(_normalized(requirement.name))
    return closure


def _distributions_imported_at_start() -> dict[str, str]:
    """{distribution: a top-level module of it} for every non-stdlib module imported."""
    import importlib.metadata

    out = subprocess.run(
        [sys.executable, "-c", START_IMPORTS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    owners = importlib.metadata.packages_distributions()
    found: dict[str, str] = {}
    for module in modules:
        if module in sys.stdlib_module_names or module.startswith("_"):
            continue
        if module in {"app", "core", "tests"}:
            continue
        for distribution in owners.get(module, []):
            found.setdefault(_normalized(distribution), module)
    return found


def test_the_lists_parse_and_pin_every_wheel():
    wheels = (REPO / ".ci" / "gpu-wheels.txt").read_text().splitlines()
    pinned = [line for line in wheels if line.strip() and not line.startswith("#")]
    assert pinned and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][^ ]*", p) for p in pinned)
    assert {"torch", "accelerate", "numpy"} <= _listed(REPO / ".ci" / "gpu-image.txt")


def test_every_distribution_app_imports_at_start_is_on_the_gpu_machine():
    available = _listed(REPO / ".ci" / "gpu-image.txt") | _listed(REPO / ".ci" / "gpu-wheels.txt")
    required = _required_closure()
    imported = {d: m for d, m in _distributions_imported_at_start().items() if d in required}
    # The ones the GPU run found missing, and the app's own stack, are really imported.
    assert {"gradio", "fastapi", "opentelemetry-api", "torch", "diffusers"} <= set(imported)
    missing = {d: m for d, m in imported.items() if d not in available}
    assert not missing, (
        f"imported at start but neither in .ci/gpu-image.txt nor .ci/gpu-wheels.txt: {missing}"
    )
