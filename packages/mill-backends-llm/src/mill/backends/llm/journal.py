"""Every answered request of a run, appended as it arrives, so a run cut between two chunk commits asks no
paid question twice (:class:`mill.core.backend.JournallingBackend`).

One JSON line per answer: the digest of the request (its whole body, images included, so a different
question or image is a different request) and the endpoint's answer as it came. The file lives in the run's
directory, whose lock the engine holds, so one process appends at a time. A line cut short by a killed
process is cut off when the journal is opened again; every complete line before it is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mill.core.atomic import file_mode


def request_digest(body: Mapping[str, Any]) -> str:
    """The sha256 of ``body`` as canonical JSON: equal requests give equal digests."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class Journal:
    """Answers by request digest: held in memory, and appended to ``path`` when one is given."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._answers: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if path is not None and path.exists():
            self._read(path)

    def get(self, digest: str) -> dict[str, Any] | None:
        with self._lock:
            return self._answers.get(digest)

    def add(self, digest: str, answer: Mapping[str, Any]) -> None:
        """Keep ``answer`` to the request ``digest``; on disk, flushed and synced before this returns."""
        line = json.dumps({"request": digest, "answer": answer}, separators=(",", ":"), ensure_ascii=False) + "\n"
        with self._lock:
            if self.path is not None:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode())
                try:
                    os.write(descriptor, line.encode())
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
            self._answers[digest] = dict(answer)

    def answers(self) -> Iterator[dict[str, Any]]:
        """Every kept answer (a snapshot), in no particular order."""
        with self._lock:
            kept = list(self._answers.values())
        return iter(kept)

    def __len__(self) -> int:
        with self._lock:
            return len(self._answers)

    def _read(self, path: Path) -> None:
        data = path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            # A line a killed process left unfinished: drop it so the next append starts a line of its own.
            with open(path, "rb+") as handle:
                handle.truncate(len(complete))
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("answer"), dict):
                self._answers[str(record.get("request"))] = record["answer"]
