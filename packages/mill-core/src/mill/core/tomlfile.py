"""Reading the TOML files Mill is given (specs, suites, model files), with the same two errors for each."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mill.core.errors import MillError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib


def read_toml(file: Path, what: str, error: type[MillError]) -> tuple[dict[str, Any], bytes]:
    """The parsed table of ``file`` and its bytes (a spec hashes them into the run identity).

    Raises:
        error: ``{file}: cannot read {what} file (reason)``, or ``{file}: TOML syntax error: ...`` with the line,
            or that it is not UTF-8 text.
    """
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise error(f"{file}: cannot read {what} file ({exc.strerror})") from None
    try:
        return tomllib.loads(raw.decode("utf-8")), raw
    except UnicodeDecodeError as exc:
        raise error(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{file}: TOML syntax error: {exc}") from None
