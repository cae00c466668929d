"""Every distribution imports exactly what it declares in its pyproject.toml.

Each module under ``packages/<dist>/src`` is parsed with ``ast`` (nothing is imported). An import of a third-party
library must name a distribution in ``[project.dependencies]``, or in an optional extra when the import is lazy
(inside a function) or for type checking only: a module-level import of an extra's library would break
``import`` for everyone who did not install the extra. Every declared requirement must be imported somewhere
under ``src/``, and every extra but ``test`` must carry a comment in the pyproject saying what it is for.

Import names map to distributions through ``importlib.metadata.packages_distributions()``; a library that is not
installed here (vllm, in most sessions) is taken to be the distribution of the same name. The ``mill`` namespace
resolves to the sibling distributions by where their code lives (``src/mill/backends/clip`` is ``mill.backends.clip``).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from attrs import frozen

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
DISTRIBUTIONS = sorted(p.name for p in PACKAGES.iterdir() if (p / "pyproject.toml").is_file())
#: Extras that only the distribution's own tests use; what the tests import is not checked here.
TEST_EXTRAS = {"test"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them: ``Open_Clip.torch`` and ``open-clip-torch`` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


@frozen
class Import:
    module: str
    file: str
    line: int
    #: "module" (runs at import), "lazy" (inside a function) or "typing" (under ``if TYPE_CHECKING:``).
    when: str

    def where(self) -> str:
        return f"{self.file}:{self.line}"


@frozen
class Declared:
    runtime: dict[str, str]  # canonical name -> the requirement as written
    extras: dict[str, dict[str, str]]  # extra -> canonical name -> requirement


class _Imports(ast.NodeVisitor):
    def __init__(self, file: str) -> None:
        self.file = file
        self.found: list[Import] = []
        self._when = "module"

    def _inside(self, when: str, nodes: list[ast.stmt]) -> None:
        # The outermost reason wins: a function defined under TYPE_CHECKING never runs either.
        outer = self._when
        self._when = when if outer == "module" else outer
        for node in nodes:
            self.visit(node)
        self._when = outer

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._inside("lazy", node.body)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._inside("lazy", node.body)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            self._inside("typing", node.body)
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [Import(alias.name, self.file, node.lineno, self._when) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:  # a relative import stays inside its own distribution
            self.found.append(Import(node.module, self.file, node.lineno, self._when))


def imports_of(dist: str) -> list[Import]:
    src = PACKAGES / dist / "src"
    found: list[Import] = []
    for path in sorted(src.rglob("*.py")):
        visitor = _Imports(str(path.relative_to(PACKAGES / dist)))
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        found += visitor.found
    return found


def declared(dist: str) -> Declared:
    project = tomllib.loads((PACKAGES / dist / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> dict[str, str]:
        matches = {req: _NAME.match(req) for req in requirements}
        unparsed = [req for req, match in matches.items() if match is None]
        assert not unparsed, f"{dist}: cannot read the distribution name of {unparsed}"
        return {canonical(match.group(1)): req for req, match in matches.items() if match is not None}

    extras = project.get("optional-dependencies", {})
    return Declared(
        runtime=names(project.get("dependencies", [])),
        extras={extra: names(reqs) for extra, reqs in extras.items() if extra not in TEST_EXTRAS},
    )


def namespace_owners() -> dict[str, str]:
    """``mill.backends.clip`` → ``mill-backends-clip``: each distribution's shallowest folder under src/mill
    holding Python files is the part of the namespace it provides."""
    owners = {}
    for dist in DISTRIBUTIONS:
        root = PACKAGES / dist / "src"
        folders = sorted({p.parent for p in (root / "mill").rglob("*.py")}, key=lambda p: len(p.parts))
        assert folders, f"{dist} has no Python files under src/mill"
        owners[".".join(folders[0].relative_to(root).parts)] = dist
    return owners


def distributions_of(module: str, owners: dict[str, str], installed: dict[str, list[str]]) -> set[str] | None:
    """The distributions that may provide ``module``; None for the standard library."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names:
        return None
    if top == "mill":
        prefixes = [p for p in owners if module == p or module.startswith(p + ".")]
        return {canonical(owners[max(prefixes, key=len)])} if prefixes else set()
    return {canonical(d) for d in installed.get(top, [top])}


def problems(dist: str) -> Iterator[str]:
    """One line per undeclared import, per declared requirement nothing imports, per undocumented extra."""
    owners = namespace_owners()
    installed = packages_distributions()
    declaration = declared(dist)
    in_extras = {name: extra for extra, reqs in declaration.extras.items() for name in reqs}
    used: set[str] = set()
    for imp in imports_of(dist):
        candidates = distributions_of(imp.module, owners, installed)
        if candidates is None or canonical(dist) in candidates:
            continue
        if not candidates:
            yield f"{dist}: {imp.where()} imports {imp.module}, which no Mill distribution provides"
            continue
        used |= candidates
        if candidates & declaration.runtime.keys():
            continue
        extra = next((in_extras[c] for c in sorted(candidates) if c in in_extras), None)
        names = " or ".join(sorted(candidates))
        if extra is None:
            yield (
                f"{dist}: {imp.where()} imports {imp.module} (distribution {names}), which {dist} does not declare: "
                "add it to [project.dependencies] in its pyproject.toml"
            )
        elif imp.when == "module":
            yield (
                f"{dist}: {imp.where()} imports {imp.module} (distribution {names}) at module level, but {dist} "
                f"declares it only in the extra [{extra}]: import it inside the function that needs it, or declare it "
                "in [project.dependencies]"
            )
    for section, requirements in [("[project.dependencies]", declaration.runtime)] + [
        (f"the extra [{extra}]", reqs) for extra, reqs in declaration.extras.items()
    ]:
        for name, requirement in requirements.items():
            if name not in used:
                yield f"{dist}: declares {requirement!r} in {section}, but nothing under src/ imports {name}: remove it"
    text = (PACKAGES / dist / "pyproject.toml").read_text().splitlines()
    for extra in declaration.extras:
        line = next(i for i, line in enumerate(text) if re.match(rf"^\s*{re.escape(extra)}\s*=", line))
        if not text[line - 1].lstrip().startswith("#"):
            yield f"{dist}: the extra [{extra}] has no comment above it in pyproject.toml saying what it is for"


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_imports_match_declared_dependencies(dist: str) -> None:
    found = list(problems(dist))
    assert not found, "\n".join(found)


def test_the_check_finds_undeclared_and_unused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A throwaway distribution with one of each fault: the check must name both sides of each.
    fake = tmp_path / "mill-fake"
    (fake / "src" / "mill" / "fake").mkdir(parents=True)
    (fake / "src" / "mill" / "fake" / "mod.py").write_text(
        "import json\nimport click\nfrom mill.core.errors import MillError\n\n"
        "def later():\n    import rich\n\nif TYPE_CHECKING:\n    import numpy\n"
    )
    (fake / "pyproject.toml").write_text(
        '[project]\nname = "mill-fake"\ndependencies = ["mill-core", "polars>=1.0"]\n'
        '[project.optional-dependencies]\ntest = ["pytest"]\n# what the extra is for\nfancy = ["click", "numpy"]\n'
        'bare = ["rich"]\n'
    )
    for dist in DISTRIBUTIONS:
        (tmp_path / dist).symlink_to(PACKAGES / dist)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "DISTRIBUTIONS", [*DISTRIBUTIONS, "mill-fake"])
    assert list(problems("mill-fake")) == [
        "mill-fake: src/mill/fake/mod.py:2 imports click (distribution click) at module level, but mill-fake declares "
        "it only in the extra [fancy]: import it inside the function that needs it, or declare it in "
        "[project.dependencies]",
        "mill-fake: declares 'polars>=1.0' in [project.dependencies], but nothing under src/ imports polars: remove it",
        "mill-fake: the extra [bare] has no comment above it in pyproject.toml saying what it is for",
    ]
    (fake / "src" / "mill" / "fake" / "mod.py").write_text("import braceexpand\nimport mill.nowhere\n")
    assert list(problems("mill-fake"))[:2] == [
        "mill-fake: src/mill/fake/mod.py:1 imports braceexpand (distribution braceexpand), which mill-fake does not "
        "declare: add it to [project.dependencies] in its pyproject.toml",
        "mill-fake: src/mill/fake/mod.py:2 imports mill.nowhere, which no Mill distribution provides",
    ]
