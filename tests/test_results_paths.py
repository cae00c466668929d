"""One owner of the results directory: no module but :mod:`mill.core.results_dir` works out a path under an output
directory. A static scan of every distribution's sources (issue 20): a path joined onto an output directory
(``output_dir / ...``, ``Path(output_dir, ...)``, ``os.path.join(output_dir, ...)``, ``output_dir.joinpath(...)``),
or a run's file derived from another (``parquet.with_suffix(".json")``), anywhere else fails it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OWNER = ROOT / "packages" / "mill-core" / "src" / "mill" / "core" / "results_dir.py"
#: Names that hold an output directory (or a run's directory in it) wherever Mill's sources use them.
DIRECTORY_NAMES = frozenset({"output_dir", "out", "results_dir", "run_dir", "output_directory"})
#: Names that hold one of a run's files, from which another would be derived.
RUN_FILE_NAMES = frozenset({"parquet", "per_sample", "per_sample_file", "manifest", "manifest_file", "manifest_path"})
DERIVING_METHODS = frozenset({"with_suffix", "with_name", "with_stem"})


def _name(node: ast.expr) -> str | None:
    """The identifier an expression ends in (``output_dir``, ``self.output_dir``, ``options.output_dir``)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def results_paths(source: str) -> Iterator[tuple[int, str]]:
    """(line, what) for every path built under an output directory in ``source``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and _name(node.left) in DIRECTORY_NAMES:
            yield node.lineno, f"{_name(node.left)} / ..."
        if not isinstance(node, ast.Call):
            continue
        function, args = node.func, node.args
        called = _name(function)
        if called in {"Path", "PurePath", "join"} and len(args) > 1 and _name(args[0]) in DIRECTORY_NAMES:
            yield node.lineno, f"{called}({_name(args[0])}, ...)"
        if isinstance(function, ast.Attribute):
            owner = _name(function.value)
            if function.attr == "joinpath" and owner in DIRECTORY_NAMES:
                yield node.lineno, f"{owner}.joinpath(...)"
            if function.attr in DERIVING_METHODS and owner in RUN_FILE_NAMES:
                yield node.lineno, f"{owner}.{function.attr}(...)"


def source_files() -> list[Path]:
    found = [*ROOT.glob("packages/*/src/**/*.py"), *ROOT.glob("tests/support/*/src/**/*.py")]
    return sorted(path for path in found if path != OWNER)


def test_no_module_but_the_owner_builds_a_results_path() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in source_files()
        for line, what in results_paths(path.read_text(encoding="utf-8"))
    ]
    assert not found, "paths under the output directory built outside mill.core.results_dir:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "line",
    [
        # Each as Mill 0.1.0 wrote it, in engine.py, verify.py, rescore.py, chunks.py, main.py and report/.
        "run_dir = options.output_dir / RUNS_DIR / identity.digest()",
        'parquet = output_dir / row["output_file"]',
        'manifest_file = parquet.with_suffix(".json")',
        "target = out or output_dir / 'report.html'",
        "print(f\"{out / 'aggregate.csv'}\")",
        'kept = parquet.with_name(f"{parquet.stem}.scorer{stored}.parquet")',
        "folder = Path(output_dir, 'outputs')",
        "folder = os.path.join(results_dir, 'outputs')",
        "folder = self.output_dir.joinpath('outputs')",
    ],
)
def test_the_scan_finds_the_joins_of_mill_0_1_0(line: str) -> None:
    assert list(results_paths(line))


def test_the_scan_leaves_other_paths_alone() -> None:
    assert not list(results_paths("config = out_dir / 'model.json'\nshard = cache_dir / 'shards'\n"))
