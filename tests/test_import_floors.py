"""The house rule of docs/ARCHITECTURE.md ("Floors"): no import runs from a lower floor to a higher one, and no circle.

Every ``import`` in ``pruning_core`` (and ``cache``) is read from the source with ``ast``: module-level,
function-local and ``TYPE_CHECKING`` imports alike, since each says the module depends on the other.  Importing
``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too, so it depends on those packages as well (unless
they are the importing module's own packages, which ran before it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pruning_core", "cache")

FLOORS: dict[str, int] = {
    # 0: where and how work runs, and the result store
    "cache": 0,
    "pruning_core": 0,  # the package itself: the version and the OpenMP wait policy
    "pruning_core.runtime": 0,
    # 1: data in, and the vocabulary of scores and tables every step speaks
    "pruning_core.data": 1,
    "pruning_core.scoring": 1,  # score_info, score_table, detection (pipeline is two floors up)
    "pruning_core.export": 1,  # subset: tables and folders out (manifest is two floors up)
    # 2: the steps, each owning what it runs (they may use each other, never in a circle)
    "pruning_core.embeddings": 2,
    "pruning_core.demo": 2,
    "pruning_core.clip_scores": 2,
    "pruning_core.dynamics": 2,
    "pruning_core.selection": 2,
    "pruning_core.audit": 2,
    "pruning_core.image_quality": 2,
    "pruning_core.subset_training": 2,
    "pruning_core.labelstudio": 2,  # the Label Studio round trip (tasks, client, push/pull over the decisions)
    "pruning_core.distill": 2,  # student, mdw (job, compare and export are one floor up)
    # 3: orchestration: steps joined into jobs
    "pruning_core.scoring.pipeline": 3,
    "pruning_core.subset_training.evaluate": 3,
    "pruning_core.export.manifest": 3,
    "pruning_core.distill.job": 3,
    "pruning_core.distill.compare": 3,
    "pruning_core.distill.export": 3,
    # 4: the entry points
    "pruning_core.cli": 4,
}
"""Module (or package prefix) -> floor; the longest matching prefix wins."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in FLOORS:
            return FLOORS[prefix]
    raise KeyError(module)


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``source`` imports, each with the packages Python runs to import it."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import submodule`
        for name in names:
            parts = name.split(".")
            found.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
    # a module's own packages ran before it: importing a sibling does not depend on them again
    own = {".".join(module.split(".")[:n]) for n in range(1, module.count(".") + 1)}
    return {name for name in found if name in known and name != module and name not in own}


def import_graph(overrides: dict[str, str] | None = None) -> dict[str, set[str]]:
    """module -> modules it imports, for every module of :data:`PACKAGES` (``overrides``: module -> extra source)."""
    files = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    known = set(files)
    graph = {}
    for module, path in files.items():
        source = path.read_text() + "\n" + (overrides or {}).get(module, "")
        graph[module] = imports_of(source, module, path.name == "__init__.py", known)
    return graph


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (floor {floor_of(a)}) -> {b} (floor {floor_of(b)})"
                  for a, targets in graph.items() for b in targets if floor_of(b) > floor_of(a))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_floor():
    unplaced = []
    for module in import_graph():
        try:
            floor_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"place these in FLOORS and docs/ARCHITECTURE.md: {unplaced}"


def test_no_import_runs_up_a_floor():
    assert upward(import_graph()) == []


def test_no_circle():
    assert circles(import_graph()) == []


@pytest.mark.parametrize("module, extra, kind", [
    # what the runtime did before: the executor built the CLIP actor itself, the planner ran the proxy
    ("pruning_core.runtime.executors", "def f():\n    from pruning_core.embeddings.encode import decode_batch\n", "up"),
    ("pruning_core.runtime.planner", "from pruning_core.dynamics.trainer import proxy_trainer\n", "up"),
    # and the data circle: images typed its argument with datasets' Dataset
    ("pruning_core.data.images", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                 "    from pruning_core.data.datasets import Dataset\n", "circle"),
    # a package that re-exports a floor above the modules that use it closes a circle through its __init__
    ("pruning_core.subset_training", "from .evaluate import evaluate_pruning\n", "up"),
])
def test_the_walk_sees_an_upward_import_or_a_circle_when_one_is_added(module, extra, kind):
    graph = import_graph({module: extra})
    if kind == "up":
        assert any(line.startswith(f"{module} ") for line in upward(graph))
    else:
        assert any(module in component for component in circles(graph))
