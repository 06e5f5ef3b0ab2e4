"""The package's imports flow one way (CLI -> pipelines/weights -> models -> ops -> kernels/csrc/reference):
no module imports, directly or through others, a module that imports it back.

Every ``import`` statement of every module counts, also those inside functions (a lazy import is
still a dependency), read from the source with ``ast``; relative imports are resolved, and
``from package import name`` depends on ``package.name`` when that is a module.
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
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


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


@pytest.mark.parametrize(
    "lower,upper",
    [
        ("groupvit_fast.ops", "groupvit_fast.models"),
        ("groupvit_fast.reference", "groupvit_fast.ops"),
        ("groupvit_fast.kernels", "groupvit_fast.ops"),
        ("groupvit_fast.models", "groupvit_fast.segmentation"),
    ],
)
def test_lower_rooms_do_not_import_upper_rooms(lower, upper):
    graph = import_graph()
    offenders = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if m == lower or m.startswith(lower + ".")
        for t in targets
        if t == upper or t.startswith(upper + ".")
    )
    assert not offenders, offenders
