"""Loading an open_clip model: architecture and weights resolved in one place, with their identity.

The model always comes with the validation transform open_clip returns for those weights, so
preprocessing matches the reference protocol (clip_benchmark) by construction.
"""

from __future__ import annotations

import difflib
import json
import posixpath
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import open_clip
import torch
import torchvision
from attrs import frozen

from mill.backends.clip.args import ClipArgs
from mill.backends.clip.checksum import file_sha256
from mill.backends.clip.precision import DEFAULT_PRECISION
from mill.core.backend import ModelInfo
from mill.core.errors import BackendArgumentError, ModelNotFoundError

#: Random weights are drawn from this seed, so a run without ``pretrained`` is reproducible.
RANDOM_INIT_SEED = 0
_REQUIRED_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")


@frozen
class Architecture:
    """The open_clip architecture to build for the requested ``path`` and ``pretrained``.

    ``name`` differs from what the user wrote when the weights need QuickGELU (``-quickgelu``
    variant); ``force_quick_gelu`` is set when no such variant is registered.
    """

    name: str
    force_quick_gelu: bool = False

    @property
    def switched_to_quickgelu(self) -> bool:
        return self.force_quick_gelu or self.name.endswith("-quickgelu")


@frozen
class LoadedModel:
    """An eval-mode open_clip model with its transform, tokenizer and provenance.

    ``weights_key`` identifies the weights for cache keys: tag and revision, file content hash,
    or the random-init seed.
    """

    model: Any
    preprocess: Callable[[Any], Any]
    tokenizer: Callable[[list[str]], torch.Tensor]
    architecture: Architecture
    model_config: dict[str, Any]
    weights_key: str
    info: ModelInfo


def quickgelu_architecture(name: str, pretrained: str | None) -> Architecture:
    """The architecture that matches the activation ``pretrained`` was trained with.

    open_clip >= 2.29 only warns when QuickGELU weights (e.g. ``openai``) are loaded into a GELU
    architecture, and the numbers are then wrong; this picks the ``-quickgelu`` variant instead.
    Pure lookup in open_clip's registries: downloads nothing.
    """
    if pretrained is None or not open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False):
        return Architecture(name)
    if (open_clip.get_model_config(name) or {}).get("quick_gelu", False):
        return Architecture(name)
    variant = f"{name}-quickgelu"
    if variant in open_clip.list_models():
        return Architecture(variant)
    return Architecture(name, force_quick_gelu=True)


def register_config(config_file: Path) -> str:
    """Register a model-config JSON with open_clip; returns its architecture name (the file stem).

    Raises ModelNotFoundError when the file is missing, BackendArgumentError when it is not an
    open_clip model config (open_clip would silently skip it).
    """
    if not config_file.is_file():
        raise ModelNotFoundError(f"clip backend: model config {config_file} does not exist")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BackendArgumentError(f"clip backend: cannot read model config {config_file}: {error}") from None
    missing = [key for key in _REQUIRED_CONFIG_KEYS if not isinstance(config, dict) or key not in config]
    if missing:
        raise BackendArgumentError(
            f"clip backend: {config_file} is not an open_clip model config: it lacks {', '.join(missing)}"
        )
    name = config_file.stem
    if open_clip.get_model_config(name) != config:
        open_clip.add_model_config(config_file)
    return name


def load_model(args: ClipArgs, *, cache_dir: Path) -> LoadedModel:
    """Build the model described by resolved ``args`` on ``args.device``.

    Raises ModelNotFoundError for an unknown architecture, tag or missing file, and
    BackendArgumentError for an unusable device.
    """
    args.check_files_exist()
    config_file = args.config_file
    requested = register_config(config_file) if config_file is not None else args.path
    if requested not in open_clip.list_models():
        close = difflib.get_close_matches(requested, open_clip.list_models(), n=5)
        raise ModelNotFoundError(
            f"clip backend: open_clip has no architecture {requested!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + " (open_clip.list_models() lists them all, or give a model-config .json path)"
        )
    checkpoint = args.checkpoint_file
    if args.pretrained is not None and checkpoint is None:
        tags = open_clip.list_pretrained_tags_by_model(requested)
        if not open_clip.get_pretrained_cfg(requested, args.pretrained):
            raise ModelNotFoundError(
                f"clip backend: pretrained={args.pretrained!r} is neither a checkpoint file nor an open_clip "
                f"tag for {requested}; its tags are: {', '.join(tags) or 'none'}"
            )
    device = _device(args.device)
    architecture = quickgelu_architecture(requested, args.pretrained if checkpoint is None else None)

    if args.pretrained is None:
        warnings.warn(
            f"clip backend: no pretrained= given for {requested}; using random weights (seed "
            f"{RANDOM_INIT_SEED}), so scores are meaningless",
            UserWarning,
            stacklevel=2,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                architecture.name,
                pretrained=str(checkpoint) if checkpoint is not None else args.pretrained,
                precision=args.precision.model_precision,
                device=device,
                force_quick_gelu=architecture.force_quick_gelu,
            )
        except RuntimeError as error:
            if "Failed to download" not in str(error):
                raise
            raise ModelNotFoundError(
                f"clip backend: could not fetch the {args.pretrained!r} weights of {requested}: {error}. "
                "Check the network or the Hugging Face cache, or give a local checkpoint file"
            ) from error
    model.eval()
    if args.compile:
        # Only the image tower runs for every batch; text is encoded once per classifier, or not at all
        # on a cache hit, so compiling it would cost more than it saves.
        model.visual = torch.compile(model.visual)

    if checkpoint is not None:
        digest = file_sha256(checkpoint, cache_dir=cache_dir)
        weights_key = f"sha256:{digest}"
        revision: str | None = weights_key
    elif args.pretrained is not None:
        revision = _tag_revision(architecture.name, args.pretrained)
        weights_key = f"tag:{revision}"
    else:
        revision = None
        weights_key = f"random:seed={RANDOM_INIT_SEED}"

    identity_path = config_file.stem if config_file is not None else args.path
    resolved = {**args.as_dict(), "architecture": architecture.name}
    if architecture.switched_to_quickgelu:
        resolved["quickgelu_switch"] = f"{requested} -> {architecture.name} (weights trained with QuickGELU)"
    info = ModelInfo(
        # The content hash in ``revision`` tells same-named checkpoint files apart.
        identity=f"{identity_path}/{args.weights_name}",
        settings={"precision": args.precision.name},
        resolved_args=resolved,
        revision=revision,
        library_versions=library_versions(),
        device_type=device.type,
        default_settings=args.precision.name == DEFAULT_PRECISION,
        cuda_version=torch.version.cuda,
    )
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(architecture.name),
        architecture=architecture,
        model_config=open_clip.get_model_config(architecture.name) or {},
        weights_key=weights_key,
        info=info,
    )


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose changes can change the numbers."""
    return {
        "open_clip": str(open_clip.__version__),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def _device(name: str | None) -> torch.device:
    try:
        device = torch.device(name or "cpu")
    except RuntimeError as error:
        raise BackendArgumentError(f"clip backend: device={name!r} is not a torch device: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendArgumentError(f"clip backend: device={name!r} but CUDA is not available here; use device=cpu")
    return device


def _tag_revision(architecture: str, tag: str) -> str:
    """``tag``, plus where open_clip fetched it from and, when the Hub cache reveals it, the commit."""
    cfg = open_clip.get_pretrained_cfg(architecture, tag)
    hub = str(cfg.get("hf_hub", ""))
    if hub:
        # open_clip's convention: 'org/repo/' names the default weight file, 'org/repo/f.bin' a given one.
        repo_id, filename = posixpath.split(hub)
        commit = _hub_commit(repo_id, filename or None)
        return f"{tag} (hf-hub:{repo_id}" + (f"@{commit}" if commit else "") + ")"
    url = str(cfg.get("url", ""))
    return f"{tag} ({url})" if url else tag


def _hub_commit(repo_id: str, filename: str | None) -> str | None:
    """The snapshot commit of the cached weight file, read from the local Hub cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    candidates = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    for candidate in candidates:
        cached = try_to_load_from_cache(repo_id, candidate)
        if isinstance(cached, str):
            match = re.search(r"[/\\]snapshots[/\\]([0-9a-f]{40})[/\\]", cached)
            if match:
                return match.group(1)
    return None
