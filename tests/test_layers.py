"""Imports flow one way (docs/design.md): cli -> stages -> study/audit/export/synthesis/config ->
models/data/metrics/callbacks/checkpoints -> small utilities. A module may import its own layer or
lower ones, never a higher one, and no group of modules may import each other in a circle.
Imports inside functions count too: they hide cycles rather than remove them."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "synthmed_lightning"

# Layer of each module, by its dotted name's first part (highest layer on top).
LAYERS = [
    ("cli", "__main__"),
    ("stages",),
    ("study", "audit", "export", "synthesis", "config"),
    ("models", "data", "metrics", "callbacks", "checkpoints"),
    ("errors", "resources", "utils", "loggers", "visualize", "inference", "speed", "console", "__init__"),
]


def _layer(module: str) -> int:
    head = module.split(".")[0]
    for depth, heads in enumerate(LAYERS):
        if head in heads:
            return len(LAYERS) - depth
    raise AssertionError(f"{module}: not placed in a layer of tests/test_layers.py (add it where it belongs)")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: modules of this package it imports}, relative imports resolved."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                    module = ".".join([*base, node.module] if node.module else base)
                elif node.module and node.module.startswith("synthmed_lightning"):
                    module = node.module.removeprefix("synthmed_lightning").lstrip(".")
                else:
                    continue
                targets.add(module)
            elif isinstance(node, ast.Import):
                targets |= {a.name.removeprefix("synthmed_lightning.") for a in node.names
                            if a.name.startswith("synthmed_lightning.")}
        graph[name] = {t for t in targets if t and t != name}
    return graph


def test_no_module_imports_a_higher_layer():
    upward = [f"{module} imports {target}" for module, targets in import_graph().items() for target in targets
              if _layer(target) > _layer(module)]
    assert not upward, "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_there_is_no_import_cycle():
    assert _cycles(import_graph()) == []


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _cycles(graph) == expected


def test_the_layer_check_sees_an_upward_import():
    assert _layer("stages.generate") > _layer("audit") > _layer("models.segmenter") > _layer("utils")
