"""Model hubs asked, before a library's own client is, whether they can be reached at all.

The Hugging Face Hub client retries a failed connection for about 20 s per file, and a library asks it for
several files (config, weights, processor), so a machine with no route to the Hub waited a minute or more before
the library's message. :func:`offline_unless_hub_reachable` asks :func:`mill.core.network.route_problem` first:

- the Hub can be reached (or offline mode is already on): nothing changes, the client keeps its retries for
  failures that can pass;
- it cannot, and the cache holds the files: the client is put in offline mode for the rest of the process (and
  the processes it starts), so it reads them from the cache at once;
- it cannot, and the cache lacks them: one :class:`ModelNotFoundError` naming the repository and the
  ``hf download`` command, within seconds.

:func:`offline_unless_url_reachable` does the same for a weights URL that torch's hub downloads into its cache
(torchvision, timm's older tags).

huggingface_hub is imported when a function is called: every distribution that calls one depends on it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from attrs import frozen

from mill.core.errors import ModelNotFoundError
from mill.core.network import route_problem

log = logging.getLogger(__name__)

#: The weight files transformers looks for in a repository, any one of which will do.
TRANSFORMERS_WEIGHT_NAMES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: What a transformers model's repository must hold for it to load: its config and its weights.
TRANSFORMERS_MODEL_FILES = (("config.json",), TRANSFORMERS_WEIGHT_NAMES)


@frozen
class HubFiles:
    """What a library will ask the Hub for: a repository at a revision (None: ``main``) and the files it needs,
    each a choice of names (one of which the cache must hold)."""

    repo_id: str
    needed: tuple[tuple[str, ...], ...]
    revision: str | None = None

    @property
    def download_command(self) -> str:
        """What to run where there is network to put these files in the cache."""
        return f"hf download {self.repo_id}" + (f" --revision {self.revision}" if self.revision else "")

    def cached(self) -> bool:
        """Whether the cache holds one file of each choice (no network)."""
        return all(cached_hub_file(self.repo_id, names, self.revision) is not None for names in self.needed)


def hub_route_problem() -> str | None:
    """Why the Hugging Face Hub's endpoint (``$HF_ENDPOINT``) cannot be reached from this machine, or None when it
    may be, or when offline mode is on (the hub client then answers from its cache at once)."""
    from huggingface_hub import constants

    return None if constants.HF_HUB_OFFLINE else route_problem(constants.ENDPOINT)


def hub_cache_dir() -> str:
    """The Hugging Face cache downloads go to (``HF_HUB_CACHE``), read when called."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached_hub_file(repo_id: str, names: Sequence[str], revision: str | None = None) -> Path | None:
    """The first of ``names`` that the cache holds for ``repo_id`` at ``revision`` (None: ``main``), no network."""
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        try:
            cached = try_to_load_from_cache(repo_id, name, cache_dir=hub_cache_dir(), revision=revision)
        except ValueError:  # not a repository id the Hub allows (HFValidationError): nothing of it is cached
            return None
        if isinstance(cached, str):
            return Path(cached)
    return None


def unreachable_hub_problem(files: HubFiles, what: str) -> str | None:
    """Why ``files`` cannot be had: the Hub cannot be reached and the cache lacks them; None when they can, after
    putting the hub client offline when they are to be read from the cache (``what`` names them in the log)."""
    problem = hub_route_problem()
    if problem is None:
        return None
    if not files.cached():
        return problem
    log.info("the Hugging Face Hub cannot be reached (%s): reading %s from its cache", problem, what)
    go_offline()
    return None


def offline_unless_hub_reachable(files: HubFiles, *, backend: str, what: str, instead: str) -> None:
    """Before a library asks the Hugging Face Hub for ``files``: fail at once when the Hub cannot be reached and
    the cache lacks them; read them from the cache (offline) when it holds them; else leave the client alone.

    Raises ModelNotFoundError: ``{backend} backend: cannot fetch {what}: ...``, why the Hub is out of reach, the
    ``hf download`` command and where its files go, then ``instead`` (another way, e.g. "or give a local
    checkpoint file").
    """
    problem = unreachable_hub_problem(files, what)
    if problem is not None:
        raise ModelNotFoundError(
            f"{backend} backend: cannot fetch {what}: cannot reach the Hugging Face Hub: {problem} Download them "
            f"where there is network (`{files.download_command}`) into the Hugging Face cache ({hub_cache_dir()}, "
            f"or the one HF_HUB_CACHE names), {instead}"
        )


def offline_unless_url_reachable(url: str, cached: Path, *, backend: str, what: str, instead: str) -> None:
    """Before torch's hub downloads ``url`` into ``cached`` (which it reads without asking when it exists): fail
    at once when the file is not there and ``url``'s host cannot be reached.

    Raises ModelNotFoundError: ``{backend} backend: cannot download {what} from {url}: ...``, why, where the
    file goes, then ``instead``.
    """
    if cached.is_file():
        return
    problem = route_problem(url)
    if problem is not None:
        raise ModelNotFoundError(
            f"{backend} backend: cannot download {what} from {url}: {problem} Download it where there is network "
            f"into {cached} (the torch hub cache, under TORCH_HOME), {instead}"
        )


def go_offline() -> None:
    """Put the Hugging Face Hub client in offline mode for this process and the ones it starts (workers, vLLM's
    engine), which read ``HF_HUB_OFFLINE`` when they import it."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
