"""The library's import graph: it never imports the application (configs/, experiments/, scripts/), has no import
cycle between its files, and its config package stays in layers (docs/ARCHITECTURE.md). Read with `ast`, nothing
imported; imports inside functions count as well (a cycle through a lazy import is still a cycle of concepts)."""

from __future__ import annotations

import ast
import functools
import os

import pytest

from tests.helpers import REPO_DIR

ROOT = REPO_DIR
LIBRARY = os.path.join(ROOT, "cosmos_transfer")
APPLICATION = ("configs", "experiments", "scripts", "benchmarks", "tests")


def _module_name(path: str) -> str:
    relative = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
    return relative[: -len(".__init__")] if relative.endswith(".__init__") else relative


def _library_files() -> dict[str, str]:
    files = {}
    for folder, _, names in os.walk(LIBRARY):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                files[_module_name(path)] = path
    return files


def _imported_names(path: str, module: str) -> set[str]:
    """Dotted names every import statement of the file names (`from a.b import c` -> a.b and a.b.c)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@functools.lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    """Library module -> the library modules it imports."""
    files = _library_files()
    graph = {}
    for module, path in files.items():
        targets = set()
        for name in _imported_names(path, module):
            while name and name not in files:  # `from pkg.mod import func` -> pkg.mod
                name = name.rpartition(".")[0]
            if name and name != module and not (files[name].endswith("__init__.py") and module.startswith(name + ".")):
                targets.add(name)
        graph[module] = targets
    return graph


def test_the_library_never_imports_the_application():
    offending = sorted(f"{module} imports {name}" for module, path in _library_files().items()
                       for name in _imported_names(path, module) if name.split(".")[0] in APPLICATION)
    assert not offending, offending


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """One 'a -> b -> a' line per import loop found by a depth-first walk."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path = path + [module]
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path)
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return cycles


def test_the_cycle_finder_finds_a_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == ["a -> b -> c -> a"]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_library_has_no_import_cycle():
    graph = _graph()
    # The graph is read whole: module-level imports and imports inside functions (loading.py's are all lazy).
    assert len(graph) > 50 and "cosmos_transfer.config.schema" in graph["cosmos_transfer.config.compose"]
    assert "cosmos_transfer.trainer.checkpoint" in graph["cosmos_transfer.inference.loading"]
    cycles = _cycles(graph)
    assert not cycles, cycles


@pytest.mark.parametrize("layer, allowed", [
    ("errors", set()),
    ("lazy", {"errors"}),
    ("schema", {"errors", "lazy"}),
    ("experiments", {"errors"}),
    ("compose", {"errors", "lazy", "schema", "experiments"}),
])
def test_the_config_package_is_in_layers(layer, allowed):
    """Each config module imports only the layers before it, and of the rest of the library only the leaf tables
    (dtypes.py, hints.py: no imports of their own), never a component."""
    imported = _graph()[f"cosmos_transfer.config.{layer}"]
    config = {name.rpartition(".")[2] for name in imported if name.startswith("cosmos_transfer.config.")}
    assert config <= allowed, f"config/{layer}.py imports {sorted(config - allowed)}"
    others = {name for name in imported if not name.startswith("cosmos_transfer.config")}
    assert others <= {"cosmos_transfer.dtypes", "cosmos_transfer.hints"}, others


COMPONENTS = ("networks", "tokenizers", "diffusion", "data", "checkpoints", "ema", "lora", "flops", "metrics",
              "video_io", "dtypes", "hints")
RUNNERS = ("trainer", "inference", "memory", "preflight", "cli")
# The one crossing on purpose: data-loader workers ignore the stop signals that the trainer's rank handles.
CROSSINGS = {("cosmos_transfer.data.sampler", "cosmos_transfer.trainer.signals")}


def test_components_never_import_a_runner():
    """Networks, tokenizers, models, data, weight formats, ... are built from plain arguments and know neither the
    trainer nor inference (docs/ARCHITECTURE.md, Layers); only the runners build and drive them."""
    def part(module: str) -> str:  # cosmos_transfer.trainer.signals -> trainer; the package itself -> __init__
        return (module.split(".") + ["__init__"])[1]

    upward = sorted(f"{module} -> {target}" for module, targets in _graph().items() if part(module) in COMPONENTS
                    for target in targets if part(target) in RUNNERS and (module, target) not in CROSSINGS)
    assert not upward, upward
    assert {part(module) for module in _graph()} - {"config", "__init__"} <= set(COMPONENTS + RUNNERS)
