"""The one-way arrows between sln_cli's layers (issue 21), read from every module's imports with `ast`.

Layers, lowest first: the library (errors, config, presets, seeds, data, models, labels, rundir, methods, training,
render, evaluate, analyze's numerics, bench's measurements and doctor, slurm) < the orchestration (sweep, tune,
report) < the CLI (cli.py and every `commands.py`, which only the CLI imports). Rules:
(a) no import cycle between sln_cli modules;
(b) no library module imports cli, sweep, tune, report or a `commands` module (orchestration and CLI modules may);
(c) nothing but `__main__` (and the cli package itself) imports `sln_cli.cli`.
evaluate, analyze (its numerics and the workflows behind `sln analyze`), bench and bench/doctor are library: the CLI
calls them, and they call nothing above them.
Module-level and function-level imports count; imports under `if TYPE_CHECKING:` do not (they never run).
Imports by string (`importlib.import_module`, as `sln_cli.methods` loads a method) are not seen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sln_cli"
UPPER = ("sln_cli.cli", "sln_cli.sweep", "sln_cli.tune", "sln_cli.report")  # rule (b)'s forbidden targets

# Wrong-way edges that still exist in files this change does not own (other helpers are moving that code).
# The list may only shrink: test_known_edges_still_exist fails once an entry is gone, so it is removed then.


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The sln_cli module that `name` (a module or an attribute of one) lives in."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement asks for, relative imports made absolute."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{alias.name}" for alias in node.names]


def _walk(node: ast.AST):
    """Every node under `node`, skipping the bodies of `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def imports_of(module: str, source: str | None = None) -> set[str]:
    """The sln_cli modules `module` imports at run time (module-level and inside functions)."""
    path = MODULES[module]
    tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
    found = set()
    for node in _walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in _imported(node, module, path.name == "__init__.py"):
                target = _resolve(name)
                if target is not None and target != module:
                    found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    return {module: imports_of(module) for module in MODULES}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(edges):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(edges[start]))]
        state[start] = 1
        while stack:
            target = next(stack[-1], None)
            if target is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(target) == 1:
                return [*path[path.index(target):], target]
            elif not state.get(target):
                state[target] = 1
                path.append(target)
                stack.append(iter(sorted(edges.get(target, ()))))
    return None


def _in(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def is_cli(module: str) -> bool:
    return _in(module, "sln_cli.cli") or module.endswith(".commands") or module == "sln_cli.__main__"


def is_upper(module: str) -> bool:
    return is_cli(module) or any(_in(module, prefix) for prefix in UPPER)


def wrong_way(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Edges breaking rule (b) or (c)."""
    bad = set()
    for source, targets in edges.items():
        for target in targets:
            if _in(target, "sln_cli.cli") and not (_in(source, "sln_cli.cli") or source == "sln_cli.__main__"):
                bad.add((source, target))  # (c)
            elif not is_upper(source) and is_upper(target):
                bad.add((source, target))  # (b)
    return bad


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_library_never_imports_cli_sweep_tune_or_report():
    bad = wrong_way(graph())
    assert not bad, "wrong-way imports (library -> cli, commands, sweep, tune or report): " + ", ".join(
        f"{a} -> {b}" for a, b in sorted(bad))


# The checker itself, on made-up sources: each rule must be able to fail.

def test_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) in (
        ["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"])
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("source", [
    "from sln_cli.sweep import branch\n",
    "def f():\n    from sln_cli.report.collect import collect\n",
    "import sln_cli.tune.spec\n",
    "from ..cli import main\n",
])
def test_sees_wrong_way_imports(source):
    edges = {"sln_cli.training.train": imports_of("sln_cli.training.train", source)}
    assert wrong_way(edges), source


def test_ignores_type_checking_imports():
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sln_cli.sweep.spec import Cell\n"
    assert imports_of("sln_cli.training.train", source) == set()


def test_cli_only_from_main():
    assert wrong_way({"sln_cli.sweep.runner": {"sln_cli.cli"}})
    assert wrong_way({"sln_cli.report.collect": {"sln_cli.cli.app"}})
    assert wrong_way({"sln_cli.evaluate": {"sln_cli.analyze.commands"}})
    assert not wrong_way({"sln_cli.cli.app": {"sln_cli.cli.train"}})
    assert not wrong_way({"sln_cli.__main__": {"sln_cli.cli"}, "sln_cli.analyze.commands": {"sln_cli.report"}})
