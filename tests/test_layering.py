"""Imports run one way, down the stages, and never in a circle.

Every module of the package is parsed (``ast``: imports at any depth, in functions and under
``TYPE_CHECKING`` too, relative ones resolved) into a graph of module -> modules it imports.
The layers, bottom up (ARCHITECTURE.md draws them):

- core: the top-level modules (config, models, errors, summary, names, shards...);
- ``server/``: the local Roboflow-compatible server, a component of its own: it imports
  nothing of batchclassify outside ``server/``, so any layer may use it (the job starts it for
  ``api_url="local"``, the CLI for ``serve``), and it could leave the package unchanged;
- ``inputs/``, ``api/``, ``output/``: the stages, each on core alone;
- ``job/``: wires the stages;
- ``commands/`` and ``ray_data.py``: the entry points built on the job and the stages;
- ``commands/cli.py``: the shell over the commands (nothing below imports it);
- the package itself (``__init__.py``, the public API) and ``__main__.py``.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "batchclassify"
ROOT = "batchclassify"
SERVER = "batchclassify.server"

#: A module's layer: the longest of these prefixes it starts with decides; core otherwise.
LAYERS = {
    "batchclassify.server": 0,
    "batchclassify.inputs": 1,
    "batchclassify.api": 1,
    "batchclassify.output": 1,
    "batchclassify.job": 2,
    "batchclassify.commands": 3,
    "batchclassify.ray_data": 3,
    "batchclassify.commands.cli": 4,
    "batchclassify.__main__": 5,
}
LAYER_NAMES = {0: "core", 1: "a stage", 2: "the job", 3: "a command", 4: "the CLI", 5: "the API"}


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str) -> str:
    """The module a dotted name lives in (``batchclassify.config.JobConfig`` -> the config)."""
    known = modules()
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


@cache
def graph() -> dict[str, frozenset[str]]:
    """Each module -> the package's modules it imports anywhere in its text."""
    known = modules()
    edges: dict[str, frozenset[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1])
                    source = f"{base}.{node.module}" if node.module else base
                else:
                    source = node.module or ""
                for alias in node.names:
                    # ``from . import charts`` imports the module ``charts``, not the package.
                    submodule = f"{source}.{alias.name}"
                    imported.add(submodule if submodule in known else source)
        targets = {
            _resolve(target)
            for target in imported
            if target == ROOT or target.startswith(ROOT + ".")
        }
        edges[name] = frozenset(targets - {name})
    return edges


def layer(name: str) -> int:
    if name == ROOT:  # the package's __init__: the public API, on top of everything
        return 5
    best = max(
        (prefix for prefix in LAYERS if (name + ".").startswith(prefix + ".")),
        key=len,
        default=None,
    )
    return 0 if best is None else LAYERS[best]


def cycles() -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _shown(component: frozenset[str]) -> str:
    edges = graph()
    return "; ".join(
        f"{name} -> {', '.join(sorted(edges[name] & component))}" for name in sorted(component)
    )


def upward_imports() -> dict[tuple[str, str], str]:
    """(importer, imported) -> why it is not allowed."""
    wrong = {}
    for name, targets in graph().items():
        for target in targets:
            in_server = name == SERVER or name.startswith(SERVER + ".")
            if in_server and not (target == SERVER or target.startswith(SERVER + ".")):
                wrong[name, target] = "the server imports nothing of the client"
            elif layer(target) > layer(name):
                wrong[name, target] = (
                    f"{LAYER_NAMES[layer(name)]} imports {LAYER_NAMES[layer(target)]}"
                )
    return wrong


def test_the_graph_sees_every_kind_of_import() -> None:
    """Function-level and relative imports are edges (the circles they made were real)."""
    edges = graph()
    assert len(modules()) > 90
    assert "batchclassify.config" in edges["batchclassify.job.runner"]  # from ..config import
    assert "batchclassify.server" in edges["batchclassify.job.runner"]  # inside a function
    assert "batchclassify.commands.report.charts" in edges["batchclassify.commands.report.html"]
    assert "batchclassify.job.runner" in edges["batchclassify"]  # PEP 562 __getattr__
    assert layer("batchclassify.config") == 0 and layer("batchclassify.commands.cli") == 4


def test_no_import_cycles() -> None:
    found = cycles()
    assert not found, "import circles: " + " | ".join(map(_shown, found))


def test_no_module_imports_from_a_higher_layer() -> None:
    found = upward_imports()
    assert not found, "upward imports: " + "; ".join(
        f"{a} -> {b} ({why})" for (a, b), why in sorted(found.items())
    )


def test_architecture_tree_names_every_module() -> None:
    """ARCHITECTURE.md's tree is the table of modules: each module of the core and of the
    stages is on it by its file name (export/, report/ and server/ are described as wholes)."""
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    tree = text.split("## The tree", 1)[1].split("```")[1]
    described_whole = ("batchclassify.commands.export", "batchclassify.commands.report")
    missing = [
        str(path.relative_to(PACKAGE))
        for name, path in modules().items()
        if path.name != "__init__.py"
        and not name.startswith(described_whole)
        and not name.startswith(SERVER + ".")
        and path.name not in tree
    ]
    assert not missing, f"not in ARCHITECTURE.md's tree: {missing}"
