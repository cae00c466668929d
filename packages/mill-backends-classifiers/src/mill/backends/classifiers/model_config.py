"""A model's ``config.json``, read from a model folder or a Hub repository, without any ML framework: the plugin's
claims route a bare path by it, and the families read a head's size from it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def read_config(path: str) -> Mapping[str, Any] | None:
    """The ``config.json`` of a model folder, or of a Hub repository as the cache (or, online, the Hub) holds it;
    None when there is none to read."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        file = folder / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        from mill.core.hub import HubFiles, unreachable_hub_problem

        try:
            # Offline, the hub client would retry for about 20 s before answering "not found".
            if unreachable_hub_problem(HubFiles(path, (("config.json",),)), f"{path}'s config") is not None:
                return None
            file = Path(hf_hub_download(path, "config.json"))
        except (OSError, ValueError):  # HFValidationError (not a repository id) is a ValueError
            # Not a repository, not reachable, no config: the default route reports it.
            return None
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None
