"""The wings of core/: which wing may import which, and where torch stops."""

from __future__ import annotations

import ast
import re
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
ROOT_MODULES = {"config", "errors", "limits", "records", "settings"}
TORCH_FREE = [
    "core.config",
    "core.limits",
    "core.settings",
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


def _module_name(path: Path, root: Path) -> str:
    """``core/engine/loading.py`` -> ``core.engine.loading``; a package's ``__init__`` is
    named by its folder."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Which modules of ``package`` each of its modules imports, read from the source.

    Every import statement counts, wherever it stands: at the top, inside a function (a
    lazy import) or under ``if TYPE_CHECKING`` — each is a dependency a reader follows, and
    a lazy import only hides a circle from the interpreter. ``from a.b import c`` names the
    module ``a.b.c`` when that is a module of the package, else ``a.b``.
    """
    root = package.parent
    modules = {_module_name(p, root): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle of imports in ``graph``: one list of modules per strongly connected
    group of more than one module (Tarjan), sorted, each starting at its first name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def _describe(graph: dict[str, set[str]], group: list[str]) -> str:
    """The shortest circle through ``group``'s first module, as ``a -> b -> a``; the rest
    of a larger group is named after it."""
    start, members = group[0], set(group)
    came_from: dict[str, str] = {}  # module -> the module that imports it on the way
    frontier = [start]
    while start not in came_from:  # breadth first inside the group, which is a circle
        reached = []
        for here in frontier:
            for target in sorted(graph[here] & members):
                if target not in came_from:
                    came_from[target] = here
                    reached.append(target)
        frontier = reached
    path = [start]
    while len(path) == 1 or path[-1] != start:
        path.append(came_from[path[-1]])
    circle = " -> ".join(reversed(path))
    rest = members - set(path)
    return circle + (f" (with {', '.join(sorted(rest))})" if rest else "")


def test_the_cycle_finder_finds_a_circle_and_names_it(tmp_path: Path) -> None:
    """The finder on a package of its own: a lazy and a TYPE_CHECKING import close circles."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for path, text in {
        "__init__.py": "",
        "a.py": "from pkg.sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "def f():\n    from pkg import a\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.d\n",
        "d.py": "from pkg.c import x\nimport pkg.a\n",
        "e.py": "import pkg.a\n",
    }.items():
        (pkg / path).write_text(text)
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    cycles = import_cycles(graph)
    assert cycles == [["pkg.a", "pkg.sub.b"], ["pkg.c", "pkg.d"]]
    assert _describe(graph, cycles[0]) == "pkg.a -> pkg.sub.b -> pkg.a"


def test_no_modules_of_core_import_each_other_in_a_circle() -> None:
    """Modules import downward only: what two modules share lives in a third both import."""
    graph = import_graph(CORE)
    circles = [_describe(graph, group) for group in import_cycles(graph)]
    assert not circles, "import cycles in core/ (found from the source):\n" + "\n".join(circles)


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


# --- README's "Where things are" table -------------------------------------------------------

_TOKEN = re.compile(r"`([^`]+)`|[()]")


def table_paths(readme: str) -> set[Path]:
    """The files README's "Where things are" table names, relative to the repository.

    A row's first cell names its folder (`core/engine/`); a backticked `name.py` in the
    row is a file of that folder, and one inside a `sub/` ( … ) group is a file of that
    subfolder; a backticked `sub/` is a folder of its own. Other backticked text (class
    names, commands) is not a path.
    """
    section = readme.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    paths: set[Path] = set()
    for line in section.splitlines():
        if not line.startswith("| `core/"):
            continue
        first, owns = line.split("|")[1], "|".join(line.split("|")[2:-2])
        folder = Path(re.search(r"`([^`]+)`", first)[1])  # type: ignore[index]
        if first.strip() != f"`{folder}/`":
            owns = first.split("`", 2)[2]  # the root row names its files in the first cell
        stack: list[tuple[int, Path]] = []  # (paren depth it closes at, subfolder)
        depth, pending = 0, None
        for match in _TOKEN.finditer(owns):
            token = match[0]
            if token == "(":
                depth += 1
                if pending is not None:
                    stack.append((depth, pending))
                pending = None
                continue
            if token == ")":
                if stack and stack[-1][0] == depth:
                    stack.pop()
                depth -= 1
                pending = None
                continue
            name = match[1]
            base = stack[-1][1] if stack else folder
            pending = None
            if name.endswith(".py") and "/" not in name and " " not in name:
                paths.add(base / name)
            elif name.endswith("/") and " " not in name:
                pending = base / name.rstrip("/")
                paths.add(pending)
    return paths


def test_the_table_reader_follows_subfolders() -> None:
    readme = (
        "## Where things are\n\n| wing | owns | may import |\n|---|---|---|\n"
        "| `core/` root: `config.py`, `errors.py`, `records.py` | vocabulary | nothing |\n"
        "| `core/x/` | tools: `a.py` (`A`, `python -m core.x.a`), `sub/` (the sub: `b.py`, "
        "`c.py` (one (nested) aside)), `d.py` | root |\n\n## Next\n| `core/y/` | `e.py` |"
    )
    assert table_paths(readme) == {
        Path(p)
        for p in (
            "core/config.py", "core/errors.py", "core/records.py", "core/x/a.py",
            "core/x/sub", "core/x/sub/b.py", "core/x/sub/c.py", "core/x/d.py",
        )
    }  # fmt: skip


def test_readme_table_names_every_module_of_core_and_only_real_files() -> None:
    named = table_paths((ROOT / "README.md").read_text(encoding="utf-8"))
    missing = sorted(str(p) for p in named if not (ROOT / p).exists())
    assert not missing, f"README's table names files that do not exist: {missing}"
    modules = {
        path.relative_to(ROOT)
        for path in CORE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")  # a package, a `python -m` shim
    }
    unnamed = sorted(str(p) for p in modules - named)
    assert not unnamed, f"modules README's 'Where things are' table does not name: {unnamed}"
