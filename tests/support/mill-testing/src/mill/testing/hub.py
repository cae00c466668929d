"""A Hugging Face cache seeded on disk, as a download leaves it, so that ``hf-hub:`` models load offline
(the ``hub_cache`` fixture points huggingface_hub at an empty one)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

#: Files a tokenizer asks the Hub for that a tiny model's repository lacks: a download records each under
#: ``.no_exist/<commit>/``, and offline lookups then answer "absent" instead of "not cached".
ABSENT_FILES = ("config.json",)


def seed_hub_cache(
    hub_cache: Path, source: Path, *, repo_id: str, commit: str, absent: Sequence[str] = ABSENT_FILES
) -> Path:
    """Put ``source``'s files in ``hub_cache`` as snapshot ``commit`` of model ``repo_id`` and point its ``main``
    ref at it, as ``hf download`` leaves them, with ``absent`` recorded as not in the repository. Returns the
    snapshot folder."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    (repo / ".no_exist" / commit).mkdir(parents=True)
    for name in absent:
        (repo / ".no_exist" / commit / name).touch()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    return snapshot
