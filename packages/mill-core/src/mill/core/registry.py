"""Where benchmark specs are found, and how a BENCHMARK argument names one.

Search order: the built-in specs shipped inside mill-core, then every directory listed in
``MILL_SPEC_PATH`` (``os.pathsep``-separated), then each ``--spec FILE``. A later spec with the
same name replaces an earlier one, so users can shadow a built-in deliberately.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

from attrs import frozen

from mill.core.errors import UnknownBenchmarkError
from mill.core.spec import Spec
from mill.core.specfile import load_spec

SPEC_PATH_ENV = "MILL_SPEC_PATH"


def builtin_spec_dir() -> Path:
    """The directory of specs that ship with mill-core.

    A wheel carries them as ``mill/core/specs``; an editable install from a checkout reads the
    repository's top-level ``specs/`` instead, which is the same content.
    """
    packaged = Path(str(resources.files("mill.core") / "specs"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[4].parent / "specs"


@frozen
class Selection:
    """What a BENCHMARK argument resolved to: a spec, and a variant when one was named."""

    spec: Spec
    variant: str | None


class SpecRegistry:
    """Every spec visible to this process, by name."""

    def __init__(self, specs: Iterable[Spec]) -> None:
        self._specs: dict[str, Spec] = {}
        for spec in specs:
            self._specs[spec.name] = spec

    @classmethod
    def discover(cls, extra_files: Iterable[Path] = (), env: Mapping[str, str] | None = None) -> SpecRegistry:
        """Load the built-in specs, those under ``MILL_SPEC_PATH``, then ``extra_files``.

        Raises:
            SpecError: for the first spec file that does not validate.
        """
        env = os.environ if env is None else env
        files = sorted(builtin_spec_dir().glob("*.toml"))
        for directory in filter(None, env.get(SPEC_PATH_ENV, "").split(os.pathsep)):
            files.extend(sorted(Path(directory).glob("*.toml")))
        files.extend(extra_files)
        return cls(load_spec(file) for file in files)

    @property
    def specs(self) -> Mapping[str, Spec]:
        return self._specs

    def select(self, benchmark: str) -> Selection:
        """Resolve a benchmark name, a variant name, or a spec file path.

        A benchmark name wins over a variant of the same name.

        Raises:
            UnknownBenchmarkError: with close-match suggestions.
        """
        if benchmark in self._specs:
            return Selection(self._specs[benchmark], None)
        for spec in self._specs.values():
            if benchmark in spec.variants:
                return Selection(spec, benchmark)
        if benchmark.endswith(".toml") and Path(benchmark).is_file():
            spec = load_spec(Path(benchmark))
            self._specs.setdefault(spec.name, spec)
            return Selection(spec, None)
        names = sorted(set(self._specs) | {v for s in self._specs.values() for v in s.variants})
        close = difflib.get_close_matches(benchmark, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownBenchmarkError(
            f"unknown benchmark or variant {benchmark!r}.{hint} Known: {', '.join(names) or 'none'}. "
            "Add your own with --spec FILE or a directory in MILL_SPEC_PATH; `mill ls` lists them."
        )
