"""Building a classifier of each family with the preprocessing its own library prescribes, and its identity.

- timm: the model from timm's registry (``resnet50.a1_in1k``), its Hub repository (``hf-hub:``) or a folder
  (``local-dir:``), optionally with a local checkpoint; preprocessing as timm's validate.py composes it:
  ``resolve_data_config`` over the model's pretrained config (test size, crop_pct, crop mode, interpolation,
  mean/std), each overridable, then ``create_transform``.
- torchvision: ``get_model(name, weights=...)``; preprocessing is the weights' own ``transforms()``.
- transformers: ``AutoModelForImageClassification``; preprocessing is the checkpoint's image processor.

Every function reads configuration before weights: ``*_outputs`` answer how many classes a head scores
without loading any weights.
"""

from __future__ import annotations

import difflib
import urllib.parse
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from attrs import frozen

from mill.backends.classifiers.args import RunArgs, TimmArgs, TorchvisionArgs, TransformersArgs
from mill.backends.classifiers.model_config import read_config
from mill.core.backend import ModelInfo
from mill.core.errors import BackendArgumentError, ModelNotFoundError
from mill.core.held_model import parameters_digest
from mill.core.hub import (
    TRANSFORMERS_MODEL_FILES,
    HubFiles,
    offline_unless_hub_reachable,
    offline_unless_url_reachable,
)

#: Random weights (``pretrained=false``) are drawn from this seed, so two runs score the same model.
RANDOM_INIT_SEED = 0
#: The weight files timm asks a Hub repository for by default, a ``.safetensors`` first.
_TIMM_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
_CHECKPOINT_INSTEAD = "or give a local weights file with checkpoint="
_HUB_HINT = (
    "check the network, or the Hugging Face cache (HF_HUB_CACHE) when offline (HF_HUB_OFFLINE=1), "
    "or give a local weights file with checkpoint="
)


@frozen
class LoadedClassifier:
    """An eval-mode classifier: ``forward`` maps a preprocessed image batch to its logits, ``transform`` one RGB
    PIL image to the model's input tensor."""

    model: Any
    forward: Callable[[torch.Tensor], torch.Tensor]
    transform: Callable[[Any], Any]
    info: ModelInfo


def library_versions(*names: str) -> dict[str, str]:
    """Versions of the libraries whose changes can change the numbers (those installed)."""
    found = {"torch": str(torch.__version__)}
    for name in ("torchvision", *names):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _info(identity: str, model: Any, run: RunArgs, resolved: dict[str, Any], libraries: dict[str, str]) -> ModelInfo:
    return ModelInfo(
        identity=identity,
        settings={"precision": run.precision.name},
        resolved_args=resolved,
        # The weights' content, whatever file or cache they came from.
        revision=parameters_digest(model),
        library_versions=libraries,
        device_type=torch.device(run.device or "cpu").type,
        default_settings=run.precision.name == "fp32",
        cuda_version=torch.version.cuda,
    )


def prepared(model: Any, run: RunArgs) -> Any:
    """``model`` in eval mode on ``run.device``, its weights cast for a pure low-precision run."""
    model.eval()
    dtype = {"pure_bf16": torch.bfloat16, "pure_fp16": torch.float16}.get(run.precision.model_precision)
    return model.to(device=device_of(run), dtype=dtype) if dtype is not None else model.to(device_of(run))


def device_of(run: RunArgs) -> torch.device:
    """``run.device`` as a torch device. Raises BackendArgumentError when it is not one, or not here."""
    try:
        device = torch.device(run.device or "cpu")
    except RuntimeError as error:
        raise BackendArgumentError(f"device={run.device!r} is not a torch device: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendArgumentError(f"device={run.device!r} but CUDA is not available here; use device=cpu")
    return device


def offline_unless_torch_hub_reachable(url: str, *, backend: str, what: str) -> None:
    """Before torch's hub downloads weights from ``url``: fail at once when its cache lacks them and the host
    cannot be reached (:func:`mill.core.hub.offline_unless_url_reachable`)."""
    # Where load_state_dict_from_url keeps a download: the URL's file name under the hub's checkpoints folder.
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlsplit(url).path).name
    offline_unless_url_reachable(url, cached, backend=backend, what=what, instead=_CHECKPOINT_INSTEAD)


# --- timm ---------------------------------------------------------------------------------------------------------


def _timm_location(name: str) -> str | None:
    for schema in ("hf-hub:", "local-dir:"):
        if name.startswith(schema):
            return name[len(schema) :]
    return None


def _timm_hub_files(repo: str, needed: tuple[tuple[str, ...], ...]) -> HubFiles:
    """``ORG/REPO[@REVISION]``, as timm names a Hub repository, and the files timm will read there."""
    repo_id, _, revision = repo.partition("@")
    return HubFiles(repo_id, needed, revision or None)


def _timm_weight_names(pretrained_cfg: Any) -> tuple[str, ...]:
    """The weight files timm looks for in a tag's Hub repository: its own file (and a ``.bin``'s safetensors
    alternative, which timm tries first), else timm's defaults."""
    filename = pretrained_cfg.hf_hub_filename
    if not filename:
        return _TIMM_WEIGHT_NAMES
    return (filename[: -len(".bin")] + ".safetensors", filename) if filename.endswith(".bin") else (filename,)


def _timm_offline_unless_reachable(args: TimmArgs, pretrained_cfg: Any) -> None:
    """Before timm fetches a model's config or weights from the Hugging Face Hub (or a tag's weights from a URL):
    fail at once when they cannot be reached nor read from a cache; read a cached copy offline."""
    location = _timm_location(args.name)
    weights = args.pretrained and args.checkpoint is None
    if args.name.startswith("hf-hub:") and location is not None:
        needed = (("config.json",), _TIMM_WEIGHT_NAMES) if weights else (("config.json",),)
        files = _timm_hub_files(location, needed)
    elif location is not None or not weights or pretrained_cfg is None:
        return
    elif pretrained_cfg.hf_hub_id:
        files = _timm_hub_files(pretrained_cfg.hf_hub_id, (_timm_weight_names(pretrained_cfg),))
    else:
        if pretrained_cfg.url:
            offline_unless_torch_hub_reachable(pretrained_cfg.url, backend="timm", what=f"the weights of {args.name}")
        return
    offline_unless_hub_reachable(
        files, backend="timm", what=f"{args.name} ({files.repo_id})", instead=_CHECKPOINT_INSTEAD
    )


def timm_outputs(args: TimmArgs) -> int | None:
    """The classes of the model's pretrained config, None with a checkpoint (its head may differ).

    Raises:
        ModelNotFoundError: timm has no such model or tag.
    """
    import timm

    location = _timm_location(args.name)
    if location is not None:
        _timm_offline_unless_reachable(args, None)
        config = read_config(location) or {}
        n = config.get("num_classes")
        return n if isinstance(n, int) and args.checkpoint is None else None
    architecture, _, tag = args.name.partition(".")
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(args.name, timm.list_models(pretrained=True), n=5)
        raise ModelNotFoundError(
            f"timm backend: timm {timm.__version__} has no model {args.name!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + " (timm.list_models(pretrained=True) lists them, or give name=hf-hub:ORG/REPO)"
        )
    # An unknown tag makes get_pretrained_cfg raise, so it is looked up among the published ones first.
    known = not tag or args.name in timm.list_pretrained(args.name)
    pretrained_cfg: Any = timm.models.get_pretrained_cfg(args.name) if known else None
    if pretrained_cfg is None:
        tags = timm.list_pretrained(f"{architecture}.*")
        raise ModelNotFoundError(
            f"timm backend: {architecture} has no pretrained tag {tag!r}; its tags are: {', '.join(tags) or 'none'}"
        )
    _timm_offline_unless_reachable(args, pretrained_cfg)
    return None if args.checkpoint is not None else int(pretrained_cfg.num_classes)


def load_timm(args: TimmArgs, run: RunArgs) -> LoadedClassifier:
    """Build the model and its validation transform exactly as timm's validate.py does (``use_test_size``).

    Raises:
        ModelNotFoundError: the weights cannot be fetched (no network, not in the cache) or the model is unknown.
    """
    import timm
    from timm.data import create_transform, resolve_data_config

    # Unknown models and tags get their message before anything is fetched, and an unreachable Hub its own.
    timm_outputs(args)
    pretrained = args.pretrained and args.checkpoint is None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        try:
            model = timm.create_model(
                args.name,
                pretrained=pretrained,
                checkpoint_path=str(args.checkpoint) if args.checkpoint is not None else None,
            )
        except (OSError, ValueError) as error:
            if args.checkpoint is not None and not isinstance(error, OSError):
                raise BackendArgumentError(
                    f"timm backend: cannot load checkpoint={args.checkpoint}: {error}"
                ) from error
            raise ModelNotFoundError(
                f"timm backend: could not fetch the weights of {args.name} from the Hugging Face Hub "
                f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); {_HUB_HINT}"
            ) from error
    # As validate.py: the command line's overrides, then the model's pretrained config, at its test size.
    data_config = resolve_data_config(args.data_overrides(), model=model, use_test_size=True)
    transform = create_transform(**data_config, is_training=False)
    weights = args.checkpoint.name if args.checkpoint is not None else (None if pretrained else "random")
    identity = args.name if weights is None else f"{args.name}/{weights}"
    resolved = {**args.as_dict(), **run.as_dict(), "data_config": {k: _plain(v) for k, v in data_config.items()}}
    model = prepared(model, run)
    return LoadedClassifier(model, model, transform, _info(identity, model, run, resolved, library_versions("timm")))


def timm_transform(model: Any) -> Callable[[Any], Any]:
    """The validation transform timm resolves from ``model``'s pretrained config (validate.py's defaults)."""
    from timm.data import create_transform, resolve_data_config

    transform: Callable[[Any], Any] = create_transform(
        **resolve_data_config({}, model=model, use_test_size=True), is_training=False
    )
    return transform


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# --- torchvision --------------------------------------------------------------------------------------------------


def _torchvision_weights(args: TorchvisionArgs) -> Any:
    from torchvision.models import get_model_weights, list_models

    if args.name not in list_models():
        close = difflib.get_close_matches(args.name, list_models(), n=5)
        raise ModelNotFoundError(
            f"torchvision backend: torchvision has no model {args.name!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
        )
    members = get_model_weights(args.name)
    if args.weights not in members.__members__:
        raise ModelNotFoundError(
            f"torchvision backend: {args.name} has no weights {args.weights!r}; "
            f"its weights are: {', '.join(members.__members__)}"
        )
    return members[args.weights]


def torchvision_outputs(args: TorchvisionArgs) -> int | None:
    """The number of categories the weights were trained on (from their metadata, without loading them)."""
    return len(_torchvision_weights(args).meta["categories"])


def load_torchvision(args: TorchvisionArgs, run: RunArgs) -> LoadedClassifier:
    """The model with its weights (or ``checkpoint``'s state dict) and the weights' own ``transforms()``.

    Raises:
        ModelNotFoundError: the weights cannot be downloaded; BackendArgumentError: the checkpoint does not fit.
    """
    from torchvision.models import get_model

    weights = _torchvision_weights(args)
    if args.checkpoint is None:
        offline_unless_torch_hub_reachable(
            weights.url, backend="torchvision", what=f"the {args.weights} weights of {args.name}"
        )
    try:
        model = get_model(args.name, weights=None if args.checkpoint is not None else weights)
    except OSError as error:  # urllib's URLError included
        raise ModelNotFoundError(
            f"torchvision backend: could not download the {args.weights} weights of {args.name} ({error}); check "
            "the network, or the torch hub cache (TORCH_HOME), or give a local state dict with checkpoint="
        ) from error
    if args.checkpoint is not None:
        try:
            model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError) as error:
            first = str(error).splitlines()[0]
            raise BackendArgumentError(
                f"torchvision backend: cannot load checkpoint={args.checkpoint}: {first}"
            ) from error
    identity = f"{args.name}/{args.weights if args.checkpoint is None else args.checkpoint.name}"
    model = prepared(model, run)
    info = _info(identity, model, run, {**args.as_dict(), **run.as_dict()}, library_versions())
    return LoadedClassifier(model, model, weights.transforms(), info)


# --- transformers -------------------------------------------------------------------------------------------------


def _transformers_error(args: TransformersArgs, error: Exception) -> ModelNotFoundError:
    where = "the local folder" if Path(args.path).expanduser().is_dir() else "the Hugging Face Hub or its cache"
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ModelNotFoundError(
        f"hf_classifier backend: model {args.path!r} could not be read from {where}: {first}; check the path or Hub "
        f"id, and for a Hub model without network access download it first (hf download {args.path})"
    )


def transformers_offline_unless_reachable(args: TransformersArgs) -> None:
    """Before transformers asks the Hugging Face Hub for a Hub model's config and weights: fail at once when the
    Hub cannot be reached and the cache lacks them; read a cached copy offline. A local folder is left alone."""
    if Path(args.path).expanduser().is_dir():
        return
    offline_unless_hub_reachable(
        HubFiles(args.path, TRANSFORMERS_MODEL_FILES, args.revision),
        backend="hf_classifier",
        what=f"model {args.path!r}" + (f" at revision {args.revision!r}" if args.revision else ""),
        instead="or pass the folder save_pretrained wrote",
    )


def transformers_outputs(args: TransformersArgs) -> int | None:
    """``num_labels`` of the model's config (no weights read)."""
    from transformers import AutoConfig

    transformers_offline_unless_reachable(args)
    try:
        config = AutoConfig.from_pretrained(args.path, revision=args.revision)
    except (OSError, ValueError) as error:
        raise _transformers_error(args, error) from error
    return int(config.num_labels)


@frozen
class ProcessorTransform:
    """An image processor applied to one image: the ``pixel_values`` of a batch of one (picklable for workers)."""

    processor: Any

    def __call__(self, image: Any) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]  # type: ignore[no-any-return]


@frozen
class LogitsOf:
    """A transformers classifier called the way torch modules are: pixel values in, logits out."""

    model: Any

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).logits  # type: ignore[no-any-return]


def load_transformers(args: TransformersArgs, run: RunArgs) -> LoadedClassifier:
    """The classifier and its image processor. Raises ModelNotFoundError when either cannot be read."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    # Typed in some transformers releases and not in others: called through a plain callable either way.
    load_processor: Callable[..., Any] = AutoImageProcessor.from_pretrained
    transformers_offline_unless_reachable(args)
    try:
        processor = load_processor(args.path, revision=args.revision)
        model = AutoModelForImageClassification.from_pretrained(args.path, revision=args.revision)
    except (OSError, ValueError) as error:
        raise _transformers_error(args, error) from error
    model = prepared(model, run)
    info = _info(args.path, model, run, {**args.as_dict(), **run.as_dict()}, library_versions("transformers"))
    return LoadedClassifier(model, LogitsOf(model), ProcessorTransform(processor), info)
