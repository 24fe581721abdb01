"""Arrows point down: the package's imports, read from its source (every import, also those
inside functions), never reach ``components/`` or ``pipelines/``, never close a cycle, and
only go to a lower layer of ``LAYERS``.

A new module or subpackage fails here until it is placed in ``LAYERS``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "vsearch"

# The layering the code has, lowest first. A unit (a subpackage or a top-level module of
# vsearch) imports only units of lower layers.
LAYERS: list[set[str]] = [
    {"schema", "faults", "images", "collectives", "configs", "model_folder", "html_page", "memory"},
    {"config", "artifacts", "lineage"},
    # blessing writes through artifacts.staged_file; the registry reads blessings.
    {"data", "blessing", "errors", "run_status"},
    {"models", "validation", "features", "registry"},
    # monitoring sits below training: training saves the drift reference with each model.
    {"losses", "monitoring", "indexing"},
    {"training"},
    {"evaluation"},
    {"rollout"},
    {"serving", "release"},
    {"demo"},
    {"cli"},
]
OUTSIDE = ("components", "pipelines")  # the KFP layer above the package


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, me: str | None = None, modules: dict[str, Path] = MODULES) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in ``path`` (module ``me``);
    ``from a import b`` names ``a.b`` when that is a module, else ``a``; relative imports are
    resolved."""
    me = me or _module(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((full if full in modules else base, node.lineno))
    return found


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "vsearch" and len(parts) > 1 else None


def _edges(modules: dict[str, Path]) -> dict[str, dict[str, str]]:
    """{module: {imported vsearch module: "file:line"}} (a module importing itself left out)."""
    edges: dict[str, dict[str, str]] = defaultdict(dict)
    for module, path in modules.items():
        for target, line in imports(path, module, modules):
            if target in modules and target != module:
                edges[module].setdefault(target, f"{path.relative_to(PACKAGE.parent)}:{line}")
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_never_imports_the_kfp_layer():
    upward = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
              for path in MODULES.values() for target, line in imports(path)
              if target.split(".")[0] in OUTSIDE]
    assert upward == []


def test_no_import_cycle_between_modules_or_between_subpackages():
    edges = _edges(MODULES)
    module_graph = {m: set(targets) for m, targets in edges.items()}
    assert cycles(module_graph) == []
    unit_graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in edges.items():
        unit_graph[_unit(module)] |= {_unit(t) for t in targets if _unit(t) not in (None, _unit(module))}
    unit_graph.pop(None, None)
    assert cycles(unit_graph) == []


def upward(edges: dict[str, dict[str, str]], layers: list[set[str]]) -> list[str]:
    """Every import from one unit to another of the same or a higher layer."""
    layer = {unit: i for i, units in enumerate(layers) for unit in units}
    return [f"{where}: {_unit(module)} (layer {layer[_unit(module)]}) imports {target} (layer {layer[_unit(target)]})"
            for module, targets in sorted(edges.items()) for target, where in sorted(targets.items())
            if _unit(module) and _unit(target) and _unit(module) != _unit(target)
            and layer[_unit(target)] >= layer[_unit(module)]]


def test_every_import_points_to_a_lower_layer():
    placed = {unit for units in LAYERS for unit in units}
    units = {_unit(m) for m in MODULES} - {None}
    assert units == placed, f"place in LAYERS: {sorted(units - placed)}; no longer there: {sorted(placed - units)}"
    assert sum(len(units) for units in LAYERS) == len(placed)  # each unit in one layer
    assert upward(_edges(MODULES), LAYERS) == []


@pytest.mark.parametrize("source, expected", [
    ("from components.image import IMAGE\n", ["components.image"]),
    ("def f():\n    import pipelines.local\n", ["pipelines.local"]),
    ("from vsearch import schema\nfrom vsearch.training import distributed\n",
     ["vsearch.schema", "vsearch.training.distributed"]),
    ("from . import distributed\nfrom ..config import ConfigError\n", ["vsearch.training.distributed", "vsearch.config"]),
])
def test_the_walk_sees_every_kind_of_import(tmp_path, source, expected):
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    assert [target for target, _ in imports(probe, "vsearch.training.probe")] == expected


def test_a_cycle_and_an_upward_arrow_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    edges = {"vsearch.losses": {"vsearch.training.distributed": "losses.py:14"},
             "vsearch.training.loop": {"vsearch.losses": "training/loop.py:3"}}
    assert upward(edges, LAYERS) == ["losses.py:14: losses (layer 4) imports vsearch.training.distributed (layer 5)"]
