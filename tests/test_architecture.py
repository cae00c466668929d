"""Two rules of Mill's shape, checked on the sources of every distribution (nothing is imported):

- **No import cycles** among Mill's modules. An import counts wherever it is written: at module level, inside a
  function, or under ``if TYPE_CHECKING:``. A cycle, even a lazy one, means a type lives in the wrong module.
- **No function longer than 60 lines** in any ``src/``, counted from the ``def`` line to the function's last line
  (its docstring and comments included; decorators not).

Modules are the ``.py`` files under ``packages/*/src`` and ``tests/support/*/src``, named by their path under
``src`` (``src/mill/core/spec.py`` is ``mill.core.spec``). ``from a import b`` depends on the module ``a.b`` when
there is one, else on ``a``; an import of a module's parent package is not counted as an import of the package's
other modules (``mill.core``'s ``__init__`` is one module like any other). Imports by name at run time
(``importlib.import_module``, entry points) are not seen: they are how plugins are found, not how types are shared.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = sorted([*ROOT.glob("packages/*/src"), *ROOT.glob("tests/support/*/src")])
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of every distribution: its dotted name -> (file, whether it is a package's ``__init__``)."""
    modules: dict[str, tuple[Path, bool]] = {}
    for src in SOURCE_ROOTS:
        for file in sorted(src.rglob("*.py")):
            parts = list(file.relative_to(src).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[".".join(parts)] = (file, is_package)
    return modules


MODULES = _modules()


def _imported_names(name: str, file: Path, is_package: bool) -> Iterator[str]:
    """The dotted names ``file`` imports, wherever the import is written, relative imports resolved."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), filename=str(file))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                yield submodule if submodule in MODULES else module


def _owning_module(dotted: str) -> str | None:
    """The Mill module ``dotted`` names or lies in (``mill.core.spec.Spec`` -> ``mill.core.spec``), if any."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def import_graph() -> dict[str, set[str]]:
    """Each Mill module -> the Mill modules it imports (itself left out)."""
    graph: dict[str, set[str]] = {}
    for name, (file, is_package) in MODULES.items():
        targets = {_owning_module(imported) for imported in _imported_names(name, file, is_package)}
        graph[name] = {target for target in targets if target is not None and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = lowlink[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            successor = next(successors, None)
            if successor is not None:
                if successor not in index:
                    index[successor] = lowlink[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                elif successor in on_stack:
                    lowlink[node] = min(lowlink[node], index[successor])
                continue
            work.pop()
            if work:
                lowlink[work[-1][0]] = min(lowlink[work[-1][0]], lowlink[node])
            if lowlink[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def test_the_cycle_finder_finds_a_cycle_through_three_modules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles_among_mills_modules() -> None:
    graph = import_graph()
    assert "mill.core.spec" in graph, "the scan found no modules: SOURCE_ROOTS is wrong"
    described = [
        "\n".join(f"  {module} imports {', '.join(sorted(graph[module] & set(cycle)))}" for module in cycle)
        for cycle in cycles(graph)
    ]
    assert not described, "import cycles (move the shared type to the module it belongs to):\n" + "\n\n".join(described)


def _long_functions() -> Iterator[str]:
    for file, _ in MODULES.values():
        relative = file.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), filename=str(file))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    yield f"{relative}:{node.lineno} {node.name} ({length} lines)"


def test_no_function_is_longer_than_60_lines() -> None:
    long = sorted(_long_functions())
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them by job):\n" + "\n".join(long)
