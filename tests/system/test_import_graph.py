"""The package's imports flow one way (CLI -> pipelines/weights -> models -> ops -> kernels/csrc/reference):
no module imports, directly or through others, a module that imports it back.

Every ``import`` statement of every module counts, also those inside functions (a lazy import is
still a dependency), read from the source with ``ast``; relative imports are resolved, and
``from package import name`` depends on ``package.name`` when that is a module. Importing
``a.b.c`` runs ``a/b/__init__.py`` first, so it depends on the parent package ``a.b`` too (the
top-level ``groupvit_fast`` facade aside: every module sits below it). A room's rule holds for
everything it reaches, not only what it names: ``evaluation -> datasets -> train`` breaks
``evaluation -/-> train`` as surely as a direct import would.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import groupvit_fast
from groupvit_fast import kernels as kernels_package

PACKAGE_ROOT = Path(groupvit_fast.__file__).resolve().parent
KERNELS_ROOT = Path(next(iter(kernels_package.__path__))).resolve()  # a namespace package: no __file__


def _modules() -> dict[str, Path]:
    found = {}
    for root, prefix in ((PACKAGE_ROOT, "groupvit_fast"), (KERNELS_ROOT, "groupvit_fast.kernels")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in its source)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        base = name if is_package else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    source = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
            for target in targets:
                # the groupvit_fast facade runs before any module of the package: no edge of its own
                if target in modules and target not in (name, "groupvit_fast"):
                    graph[name].add(target)
                    graph[name].update(p for p in _parent_packages(target, modules) if p != name)
    return graph


def _parent_packages(module: str, modules: dict[str, Path]) -> list[str]:
    """The packages whose ``__init__`` runs before ``module`` (not the ``groupvit_fast`` facade itself)."""
    parts = module.split(".")
    return [p for i in range(2, len(parts)) if (p := ".".join(parts[:i])) in modules]


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module that importing ``start`` may import, directly or through others."""
    seen, pending = set(), [start]
    while pending:
        for nxt in graph[pending.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                pending.append(nxt)
    return seen


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            # a package's own __init__ importing its submodules is how packages work, not a circle
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _in_room(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def room_offenders(graph: dict[str, set[str]], lower: str, upper: str) -> list[str]:
    """``module -> reached`` for every module of room ``lower`` that reaches a module of room ``upper``."""
    return sorted(f"{m} -> {t}" for m in graph if _in_room(m, lower) for t in reachable(graph, m) if _in_room(t, upper))


@pytest.mark.parametrize(
    "lower,upper",
    [
        ("groupvit_fast.ops", "groupvit_fast.models"),
        ("groupvit_fast.reference", "groupvit_fast.ops"),
        ("groupvit_fast.kernels", "groupvit_fast.ops"),
        ("groupvit_fast.models", "groupvit_fast.segmentation"),
        # inference and evaluation must work with only their own extras installed: train's
        # package needs the train extra at import (docs/README "Install"), so nothing below may reach it
        ("groupvit_fast.evaluation", "groupvit_fast.train"),
        ("groupvit_fast.segmentation", "groupvit_fast.train"),
        ("groupvit_fast.segmentation", "groupvit_fast.evaluation"),
        ("groupvit_fast.datasets", "groupvit_fast.train"),
        ("groupvit_fast.datasets", "groupvit_fast.evaluation"),
        ("groupvit_fast.datasets", "groupvit_fast.segmentation"),
    ],
)
def test_lower_rooms_do_not_import_upper_rooms(lower, upper):
    offenders = room_offenders(import_graph(), lower, upper)
    assert not offenders, offenders


def test_a_parent_package_counts_as_an_import():
    # importing groupvit_fast.train.data.stream runs train/__init__.py (which requires the train extra)
    assert _parent_packages("groupvit_fast.train.data.stream", _modules()) == [
        "groupvit_fast.train",
        "groupvit_fast.train.data",
    ]
    graph = import_graph()
    assert {"groupvit_fast.train", "groupvit_fast.train.data"} <= graph["groupvit_fast.train.loop"]


def test_a_room_rule_covers_what_a_module_reaches_through_others():
    graph = {"e.a": {"d.s"}, "d.s": {"t.x"}, "t.x": set()}
    assert room_offenders(graph, "e", "t") == ["e.a -> t.x"]
    assert room_offenders(graph, "t", "e") == []
