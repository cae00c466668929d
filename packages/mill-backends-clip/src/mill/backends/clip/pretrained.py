"""Where a clip model's weights come from, and what names them, resolved in one place (open_clip's split).

Four sources: an open_clip tag (``pretrained=laion2b_s34b_b79k``), a checkpoint file, random weights, and a
whole model published with open_clip's schemas: ``path=hf-hub:ORG/REPO`` (a Hugging Face Hub repository) or
``path=local-dir:/a/folder`` (its ``open_clip_config.json``, weights and tokenizer files). Each resolves to
:class:`Weights`: the name in the ``model`` column, the manifest revision, and the key the classifier cache
uses, which changes whenever the weights can.

Imports no ML framework at module level: ``args.py`` parses schemas with it to answer ``capabilities``.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from pathlib import Path
from typing import Any

from attrs import frozen

from mill.backends.clip.checksum import file_sha256
from mill.core import hub as core_hub
from mill.core.errors import BackendArgumentError, ModelNotFoundError
from mill.core.hub import HubFiles, cached_hub_file, hub_cache_dir

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
#: The file open_clip reads a schema model's architecture (``model_cfg``) and preprocessing from.
CONFIG_NAME = "open_clip_config.json"
#: The weight files open_clip's factory downloads for ``hf-hub:``, in its order of preference.
HUB_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
#: The weight files open_clip's factory looks for in a ``local-dir:`` folder (its ``_find_checkpoint_in_dir``).
LOCAL_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")
#: Random weights are drawn from this seed, so a run without ``pretrained`` is reproducible.
RANDOM_INIT_SEED = 0
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@frozen
class HubRepo:
    """``path=hf-hub:ORG/REPO``: config, weights and (usually) tokenizer in one Hub repository."""

    repo_id: str

    @property
    def model_name(self) -> str:
        """The name open_clip's factory and ``get_tokenizer`` take."""
        return f"{HF_HUB_PREFIX}{self.repo_id}"

    @property
    def architecture_name(self) -> str:
        """What names its architecture in the classifier cache key (the config and commit are there too)."""
        return self.model_name


@frozen
class LocalDir:
    """``path=local-dir:FOLDER``: a folder laid out like an open_clip Hub repository."""

    folder: Path

    @property
    def model_name(self) -> str:
        return f"{LOCAL_DIR_PREFIX}{self.folder}"

    @property
    def architecture_name(self) -> str:
        """Not the folder's path: its content hash names it, so a copied folder shares its cached classifiers."""
        return LOCAL_DIR_PREFIX.rstrip(":")

    def check_exists(self) -> None:
        """Raise ModelNotFoundError unless the folder holds an open_clip config and a weight file.

        open_clip itself would build a model with random weights, and only log it, when the weights are missing.
        """
        config = self.folder / CONFIG_NAME
        if not config.is_file():
            raise ModelNotFoundError(
                f"clip backend: path={self.model_name} needs {config}; give a folder holding an open_clip "
                f"{CONFIG_NAME}, its weights and tokenizer files (as open_clip's push_to_hf_hub writes them)"
            )
        if not local_weight_files(self.folder):
            raise ModelNotFoundError(
                f"clip backend: path={self.model_name} has no weight file "
                f"({', '.join('*' + s for s in LOCAL_WEIGHT_SUFFIXES)}) in {self.folder}; add the checkpoint "
                "next to its config"
            )


Location = HubRepo | LocalDir


def parse_location(path: str) -> Location | None:
    """The Hub repository or local folder named by an open_clip schema in ``path``, or None without a schema.

    Raises BackendArgumentError for an empty or malformed location.
    """
    if path.startswith(HF_HUB_PREFIX):
        repo_id = path[len(HF_HUB_PREFIX) :].strip().strip("/")
        if not _REPO_ID.match(repo_id):
            raise BackendArgumentError(
                f"clip backend: path={path!r} must name a Hub repository as hf-hub:ORG/REPO "
                "(e.g. hf-hub:timm/ViT-B-16-SigLIP)"
            )
        return HubRepo(repo_id)
    if path.startswith(LOCAL_DIR_PREFIX):
        folder = path[len(LOCAL_DIR_PREFIX) :].strip()
        if not folder:
            raise BackendArgumentError(f"clip backend: path={path!r} names no folder; write local-dir:/path/to/folder")
        return LocalDir(Path(folder).expanduser())
    return None


@frozen
class Weights:
    """What names a model's weights.

    ``name`` is the weights part of the ``model`` column (or the whole column for a schema model),
    ``revision`` the manifest's record of exactly which weights ran, ``key`` the classifier cache's.
    """

    name: str
    revision: str | None
    key: str


def checkpoint_weights(name: str, checkpoint: Path, *, cache_dir: Path | None) -> Weights:
    """A checkpoint file, named as ``name`` and identified by its content hash."""
    digest = f"sha256:{file_sha256(checkpoint, cache_dir=cache_dir)}"
    return Weights(name=name, revision=digest, key=digest)


def random_weights() -> Weights:
    return Weights(name="random", revision=None, key=f"random:seed={RANDOM_INIT_SEED}")


def tag_hub_files(architecture: str, tag: str) -> tuple[str, tuple[str, ...]] | None:
    """The Hub repository an open_clip tag's weights are downloaded from and the file names open_clip asks for
    there, in its order (either will do); None when the tag's weights come from elsewhere (a URL)."""
    import open_clip

    hub = str(open_clip.get_pretrained_cfg(architecture, tag).get("hf_hub", ""))
    if not hub:
        return None
    # open_clip's convention: 'org/repo/' names the default weight file, 'org/repo/f.bin' a given one.
    repo_id, filename = posixpath.split(hub)
    return repo_id, ((filename,) if filename else HUB_WEIGHT_NAMES)


def tag_weights(architecture: str, tag: str) -> Weights:
    """An open_clip tag, plus where open_clip fetched it from and, when the Hub cache reveals it, the commit."""
    import open_clip

    hub_files = tag_hub_files(architecture, tag)
    url = str(open_clip.get_pretrained_cfg(architecture, tag).get("url", ""))
    if hub_files is not None:
        repo_id, names = hub_files
        cached = cached_hub_file(repo_id, names)
        commit = _snapshot_commit(cached) if cached is not None else None
        revision = f"{tag} (hf-hub:{repo_id}" + (f"@{commit}" if commit else "") + ")"
    else:
        revision = f"{tag} ({url})" if url else tag
    return Weights(name=tag, revision=revision, key=f"tag:{revision}")


def offline_unless_hub_reachable(location: Location | None, architecture: str, tag: str | None) -> None:
    """Before open_clip's factory asks the Hugging Face Hub for the weights of ``location`` or ``tag``:
    :func:`mill.core.hub.offline_unless_hub_reachable` for its repository (open_clip asks for two files, a
    ``.safetensors`` first, each retried for about 20 s: offline, that was most of a minute before any message).

    Raises ModelNotFoundError naming the repository, why the Hub is out of reach and how to get the files.
    """
    if isinstance(location, HubRepo):
        files = HubFiles(location.repo_id, ((CONFIG_NAME,), HUB_WEIGHT_NAMES))
        what = location.model_name
    elif location is None and tag is not None and (hub_files := tag_hub_files(architecture, tag)) is not None:
        files = HubFiles(hub_files[0], (hub_files[1],))
        what = f"the {tag!r} weights of {architecture} (hf-hub:{hub_files[0]})"
    else:
        return
    core_hub.offline_unless_hub_reachable(files, backend="clip", what=what, instead="or give a local checkpoint file")


def hub_weights(repo: HubRepo) -> Weights:
    """The commit of ``repo`` that the local Hugging Face cache resolves ``main`` to, with its weight file.

    Read from the cache's ``refs/`` and ``snapshots/`` folders, so it works offline and names what open_clip's
    factory (which asks for ``main``) loaded. Raises ModelNotFoundError when the cache lacks the config or
    the weights.
    """
    config = cached_hub_file(repo.repo_id, (CONFIG_NAME,))
    commit = _snapshot_commit(config) if config is not None else None
    if config is None or commit is None:
        raise ModelNotFoundError(
            f"clip backend: {repo.model_name} has no {CONFIG_NAME} in the Hugging Face cache ({hub_cache_dir()}); "
            f"download it with `hf download {repo.repo_id}` where there is network, or point HF_HUB_CACHE at "
            "the cache that holds it"
        )
    weights = cached_hub_file(repo.repo_id, HUB_WEIGHT_NAMES)
    if weights is None or weights.parent != config.parent:
        raise ModelNotFoundError(
            f"clip backend: {repo.model_name} at commit {commit} has no weight file "
            f"({' or '.join(HUB_WEIGHT_NAMES)}) in the Hugging Face cache; download the repository again "
            f"(`hf download {repo.repo_id}`)"
        )
    revision = f"{repo.model_name}@{commit}"
    return Weights(name=repo.model_name, revision=revision, key=f"{revision}/{weights.name}")


def local_dir_weights(local: LocalDir, *, cache_dir: Path | None) -> Weights:
    """A ``local-dir:`` folder, identified by the content hash of its files (config, weights, tokenizer).

    Every visible file at the top of the folder counts (open_clip reads nothing below it); each file's hash is
    remembered by path, size and mtime, so a multi-GB checkpoint is read once.
    """
    local.check_exists()
    digest = hashlib.sha256()
    for file in sorted(p for p in local.folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.name}\0{file_sha256(file, cache_dir=cache_dir)}\n".encode())
    content = f"sha256:{digest.hexdigest()}"
    # The folder's path is in the manifest's arguments; the revision is its content alone, so a copied
    # folder resumes and matches the runs of the original.
    return Weights(
        name=f"{LOCAL_DIR_PREFIX}{local.folder.resolve().name}", revision=content, key=f"{LOCAL_DIR_PREFIX}{content}"
    )


def location_weights(location: Location, *, cache_dir: Path | None) -> Weights:
    return hub_weights(location) if isinstance(location, HubRepo) else local_dir_weights(location, cache_dir=cache_dir)


def location_config(location: Location) -> dict[str, Any]:
    """The ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``) of a schema model, read locally."""
    file = (
        location.folder / CONFIG_NAME
        if isinstance(location, LocalDir)
        else cached_hub_file(location.repo_id, (CONFIG_NAME,))
    )
    if file is None:
        raise ModelNotFoundError(f"clip backend: {location.model_name} has no {CONFIG_NAME} in the Hugging Face cache")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BackendArgumentError(f"clip backend: cannot read {file}: {error}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise BackendArgumentError(
            f"clip backend: {file} is not an open_clip model config: it lacks 'model_cfg' "
            "(open_clip's push_to_hf_hub writes {'model_cfg': ..., 'preprocess_cfg': ...})"
        )
    return config


def local_weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in LOCAL_WEIGHT_SUFFIXES)


def _snapshot_commit(cached: Path) -> str | None:
    """The commit of the ``snapshots/<commit>/`` folder a cached file lies in."""
    for folder in cached.parents:
        if folder.parent.name == "snapshots" and _COMMIT.match(folder.name):
            return folder.name
    return None
