"""Loading an open_clip model: architecture and weights resolved in one place, with their identity.

The model always comes with the validation transform open_clip returns for those weights, so
preprocessing matches the reference protocol (clip_benchmark) by construction.
"""

from __future__ import annotations

import difflib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import open_clip
import torch
import torchvision
from attrs import frozen

from mill.backends.clip.args import ClipArgs
from mill.backends.clip.pretrained import (
    RANDOM_INIT_SEED,
    Weights,
    checkpoint_weights,
    location_config,
    location_weights,
    offline_unless_hub_reachable,
    random_weights,
    tag_weights,
)
from mill.core.backend import ModelInfo
from mill.core.device import checked_device
from mill.core.errors import BackendArgumentError, MillError, ModelNotFoundError
from mill.core.precision import DEFAULT_PRECISION

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


@frozen
class _Request:
    """What ``args`` ask open_clip to build: the name the user wrote (``requested``), the architecture built, and
    the name open_clip's factory and tokenizer take (the schema itself for a Hub repository or folder)."""

    requested: str
    architecture: Architecture
    factory_name: str


def load_model(args: ClipArgs, *, cache_dir: Path | None) -> LoadedModel:
    """Build the model described by resolved ``args`` on ``args.device``.

    Raises ModelNotFoundError for an unknown architecture, tag, missing file or uncached Hub repository, and
    BackendArgumentError for an unusable device or a malformed config.
    """
    args.check_files_exist()
    device = _device(args.device)
    request = _request(args)
    model, preprocess = _create(args, request, device)
    model.eval()
    if args.compile:
        # Only the image tower runs for every batch; text is encoded once per classifier, or not at all
        # on a cache hit, so compiling it would cost more than it saves.
        model.visual = torch.compile(model.visual)
    # Resolved after the factory ran, so a download it made is what the commit names.
    weights, model_config, identity = _weights(args, request, cache_dir)
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        # With a schema the tokenizer (and its context length) is the one the location's config names:
        # SigLIP-family models get their own, read from the repository or folder.
        tokenizer=open_clip.get_tokenizer(request.factory_name),
        architecture=request.architecture,
        model_config=model_config,
        weights_key=weights.key,
        info=_model_info(args, request, weights, identity, device),
    )


def _request(args: ClipArgs) -> _Request:
    location = args.location
    if location is not None:
        return _Request(location.model_name, Architecture(location.architecture_name), location.model_name)
    config_file = args.config_file
    requested = register_config(config_file) if config_file is not None else args.path
    _check_architecture(requested, args)
    architecture = quickgelu_architecture(requested, args.pretrained if args.checkpoint_file is None else None)
    return _Request(requested, architecture, architecture.name)


def _create(args: ClipArgs, request: _Request, device: torch.device) -> tuple[Any, Callable[[Any], Any]]:
    """The model and its validation transform from open_clip's factory, random weights seeded.

    Raises:
        BackendArgumentError: the user's checkpoint file is not one open_clip can load for the architecture.
        ModelNotFoundError: the weights could not be fetched.
    """
    checkpoint = args.checkpoint_file
    if args.pretrained is None and args.location is None:
        warnings.warn(
            f"clip backend: no pretrained= given for {request.requested}; using random weights (seed "
            f"{RANDOM_INIT_SEED}), so scores are meaningless",
            UserWarning,
            stacklevel=3,
        )
    hub_tag = args.pretrained if checkpoint is None else None
    offline_unless_hub_reachable(args.location, request.architecture.name, hub_tag)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        try:
            # With a schema open_clip's factory reads config, preprocessing and weights from the location.
            model, _, preprocess = open_clip.create_model_and_transforms(
                request.factory_name,
                pretrained=str(checkpoint) if checkpoint is not None else args.pretrained,
                precision=args.precision.model_precision,
                device=device,
                force_quick_gelu=request.architecture.force_quick_gelu,
            )
        except torch.OutOfMemoryError:
            raise
        except Exception as error:
            meaning = _factory_error(args, request, error)
            if meaning is None:
                raise
            raise meaning from (None if checkpoint is not None else error)
    return model, preprocess


def _factory_error(args: ClipArgs, request: _Request, error: Exception) -> MillError | None:
    """What open_clip's factory raising ``error`` means to the user: their checkpoint file is bad, or the weights
    could not be downloaded; None for anything else (a fault of Mill or open_clip, raised as it is)."""
    checkpoint = args.checkpoint_file
    if checkpoint is not None:
        # The only input that varies here is the user's file: whatever open_clip trips over in it
        # (text, a pickled list, another architecture's weights) is that file's fault.
        return BackendArgumentError(
            f"clip backend: pretrained={checkpoint} is not a checkpoint of {request.requested} that open_clip can "
            f"load ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}); "
            "give a state dict saved with torch.save (or a .safetensors file) for this architecture"
        )
    if not isinstance(error, RuntimeError) or (
        "Failed to download" not in str(error) and "from HF Hub" not in str(error)
    ):
        return None
    requested = request.requested
    what = requested if args.location is not None else f"the {args.pretrained!r} weights of {requested}"
    return ModelNotFoundError(
        f"clip backend: could not fetch {what}: {error}. "
        "Check the network or the Hugging Face cache (HF_HUB_CACHE), or give a local checkpoint file"
    )


def _weights(args: ClipArgs, request: _Request, cache_dir: Path | None) -> tuple[Weights, dict[str, Any], str]:
    """The weights that were loaded, the model's config and the model's identity."""
    location = args.location
    if location is not None:
        weights = location_weights(location, cache_dir=cache_dir)
        return weights, location_config(location), weights.name
    architecture = request.architecture
    checkpoint = args.checkpoint_file
    if checkpoint is not None:
        weights = checkpoint_weights(args.weights_name, checkpoint, cache_dir=cache_dir)
    elif args.pretrained is not None:
        weights = tag_weights(architecture.name, args.pretrained)
    else:
        weights = random_weights()
    identity_path = args.config_file.stem if args.config_file is not None else args.path
    # The content hash in ``revision`` tells same-named checkpoint files apart.
    return weights, open_clip.get_model_config(architecture.name) or {}, f"{identity_path}/{weights.name}"


def _model_info(args: ClipArgs, request: _Request, weights: Weights, identity: str, device: torch.device) -> ModelInfo:
    architecture = request.architecture
    resolved = {**args.as_dict(), "architecture": architecture.name}
    if architecture.switched_to_quickgelu:
        resolved["quickgelu_switch"] = f"{request.requested} -> {architecture.name} (weights trained with QuickGELU)"
    return ModelInfo(
        identity=identity,
        settings={"precision": args.precision.name},
        resolved_args=resolved,
        revision=weights.revision,
        library_versions=library_versions(),
        device_type=device.type,
        default_settings=args.precision.name == DEFAULT_PRECISION,
        cuda_version=torch.version.cuda,
    )


def _check_architecture(requested: str, args: ClipArgs) -> None:
    """Raise ModelNotFoundError unless open_clip knows ``requested`` and, when given, its tag."""
    if requested not in open_clip.list_models():
        close = difflib.get_close_matches(requested, open_clip.list_models(), n=5)
        raise ModelNotFoundError(
            f"clip backend: open_clip has no architecture {requested!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + " (open_clip.list_models() lists them all, or give a model-config .json path)"
        )
    if args.pretrained is not None and args.checkpoint_file is None:
        tags = open_clip.list_pretrained_tags_by_model(requested)
        if not open_clip.get_pretrained_cfg(requested, args.pretrained):
            raise ModelNotFoundError(
                f"clip backend: pretrained={args.pretrained!r} is neither a checkpoint file nor an open_clip "
                f"tag for {requested}; its tags are: {', '.join(tags) or 'none'}"
            )


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose changes can change the numbers."""
    return {
        "open_clip": str(open_clip.__version__),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def _device(name: str | None) -> torch.device:
    device: torch.device = checked_device(name or "cpu", "clip backend", torch)
    return device
