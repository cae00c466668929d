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
    checkpoint_weights,
    location_config,
    location_weights,
    offline_unless_hub_reachable,
    random_weights,
    tag_weights,
)
from mill.core.backend import ModelInfo
from mill.core.device import checked_device
from mill.core.errors import BackendArgumentError, ModelNotFoundError
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


def load_model(args: ClipArgs, *, cache_dir: Path | None) -> LoadedModel:
    """Build the model described by resolved ``args`` on ``args.device``.

    Raises ModelNotFoundError for an unknown architecture, tag, missing file or uncached Hub repository, and
    BackendArgumentError for an unusable device or a malformed config.
    """
    args.check_files_exist()
    device = _device(args.device)
    location = args.location
    config_file = args.config_file
    if location is not None:
        requested = location.model_name
        architecture = Architecture(location.architecture_name)
    else:
        requested = register_config(config_file) if config_file is not None else args.path
        _check_architecture(requested, args)
        architecture = quickgelu_architecture(requested, args.pretrained if args.checkpoint_file is None else None)
    # open_clip's factory and get_tokenizer take the schema name itself.
    factory_name = requested if location is not None else architecture.name
    checkpoint = args.checkpoint_file

    if args.pretrained is None and location is None:
        warnings.warn(
            f"clip backend: no pretrained= given for {requested}; using random weights (seed "
            f"{RANDOM_INIT_SEED}), so scores are meaningless",
            UserWarning,
            stacklevel=2,
        )
    offline_unless_hub_reachable(location, architecture.name, args.pretrained if checkpoint is None else None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        try:
            # With a schema open_clip's factory reads config, preprocessing and weights from the location.
            model, _, preprocess = open_clip.create_model_and_transforms(
                factory_name,
                pretrained=str(checkpoint) if checkpoint is not None else args.pretrained,
                precision=args.precision.model_precision,
                device=device,
                force_quick_gelu=architecture.force_quick_gelu,
            )
        except torch.OutOfMemoryError:
            raise
        except Exception as error:
            if checkpoint is not None:
                # The only input that varies here is the user's file: whatever open_clip trips over in it
                # (text, a pickled list, another architecture's weights) is that file's fault.
                raise BackendArgumentError(
                    f"clip backend: pretrained={checkpoint} is not a checkpoint of {requested} that open_clip can "
                    f"load ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}); "
                    "give a state dict saved with torch.save (or a .safetensors file) for this architecture"
                ) from None
            if not isinstance(error, RuntimeError) or (
                "Failed to download" not in str(error) and "from HF Hub" not in str(error)
            ):
                raise
            what = f"{requested}" if location is not None else f"the {args.pretrained!r} weights of {requested}"
            raise ModelNotFoundError(
                f"clip backend: could not fetch {what}: {error}. "
                "Check the network or the Hugging Face cache (HF_HUB_CACHE), or give a local checkpoint file"
            ) from error
    model.eval()
    if args.compile:
        # Only the image tower runs for every batch; text is encoded once per classifier, or not at all
        # on a cache hit, so compiling it would cost more than it saves.
        model.visual = torch.compile(model.visual)

    if location is not None:
        # Resolved after the factory ran, so a download it made is what the commit names.
        weights = location_weights(location, cache_dir=cache_dir)
        model_config = location_config(location)
        identity = weights.name
    else:
        if checkpoint is not None:
            weights = checkpoint_weights(args.weights_name, checkpoint, cache_dir=cache_dir)
        elif args.pretrained is not None:
            weights = tag_weights(architecture.name, args.pretrained)
        else:
            weights = random_weights()
        model_config = open_clip.get_model_config(architecture.name) or {}
        identity_path = config_file.stem if config_file is not None else args.path
        # The content hash in ``revision`` tells same-named checkpoint files apart.
        identity = f"{identity_path}/{weights.name}"

    resolved = {**args.as_dict(), "architecture": architecture.name}
    if architecture.switched_to_quickgelu:
        resolved["quickgelu_switch"] = f"{requested} -> {architecture.name} (weights trained with QuickGELU)"
    info = ModelInfo(
        identity=identity,
        settings={"precision": args.precision.name},
        resolved_args=resolved,
        revision=weights.revision,
        library_versions=library_versions(),
        device_type=device.type,
        default_settings=args.precision.name == DEFAULT_PRECISION,
        cuda_version=torch.version.cuda,
    )
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        # With a schema the tokenizer (and its context length) is the one the location's config names:
        # SigLIP-family models get their own, read from the repository or folder.
        tokenizer=open_clip.get_tokenizer(factory_name),
        architecture=architecture,
        model_config=model_config,
        weights_key=weights.key,
        info=info,
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
