"""The library's import graph follows docs/architecture.md: no circles, no arrow against the
layer order ``core → {data, mixing} → models → influence → analysis → report``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tikmix"
#: Top-level helpers every layer may use (they import nothing of a layer above core).
BASE = {"tikmix", "tikmix.seeds", "tikmix.progress", "tikmix.resources"}


def documented_layers() -> list[set[str]]:
    """The layer order of docs/architecture.md's first paragraph, lowest first."""
    text = (REPO / "docs" / "architecture.md").read_text()
    order = re.search(r"`(core → [^`]+)`", text).group(1)
    return [set(re.findall(r"\w+", layer)) for layer in order.split("→")]


def module_imports() -> dict[str, set[str]]:
    """tikmix module → the tikmix modules it imports (any import statement, at any depth)."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            imported |= {name for name in names if name in files and name != module}
        graph[module] = imported
    return graph


def layer_of(module: str, layers: list[set[str]]) -> int | None:
    """The module's layer index; ``-1`` for the shared helpers, None for entry points (cli,
    config, validation, workflow, provenance), which may import any layer."""
    if module in BASE:
        return -1
    parts = module.split(".")
    for index, names in enumerate(layers):
        if len(parts) > 1 and parts[1] in names and (PACKAGE / parts[1]).is_dir():
            return index
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circles() -> None:
    assert cycles(module_imports()) == []


def test_no_import_goes_against_the_documented_layer_order() -> None:
    layers = documented_layers()
    assert [sorted(names) for names in layers] == [
        ["core"],
        ["data", "mixing"],
        ["models"],
        ["influence"],
        ["analysis"],
        ["report"],
    ]
    against = []
    for module, imported in module_imports().items():
        source = layer_of(module, layers)
        if source is None:
            continue
        for target in imported:
            destination = layer_of(target, layers)
            same_package = module.split(".")[:2] == target.split(".")[:2]
            # an entry point imported by a layer, a higher layer, or a sibling of the same layer
            if (
                destination is None
                or destination > source
                or (destination == source and not same_package and source >= 0)
            ):
                against.append(f"{module} -> {target}")
    assert against == []
