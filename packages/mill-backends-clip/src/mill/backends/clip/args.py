"""The clip backend's arguments: parsed once from the model spec into a validated value.

Imports no ML framework: the plugin parses arguments to answer ``capabilities`` cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import evolve, frozen

from mill.backends.clip.precision import DEFAULT_PRECISION, DTYPE_PRECISIONS, PRECISIONS, Precision
from mill.backends.clip.pretrained import LocalDir, Location, parse_location
from mill.core.backend import RunContext
from mill.core.errors import BackendArgumentError, ModelNotFoundError

ACCEPTED_ARGS = (
    "path",
    "pretrained",
    "precision",
    "dtype",
    "device",
    "batch_size",
    "num_workers",
    "text_batch_size",
    "compile",
)
DEFAULT_TEXT_BATCH_SIZE = 1024
DEFAULT_BATCH_SIZE = {"cuda": 256, "cpu": 64}
MAX_DEFAULT_WORKERS = 8
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
#: Models that ship inside this distribution (package data): ``{name}.json`` and ``{name}.pt``, addressed like an
#: open_clip architecture and its tag, ``path=mill-shapes,pretrained=mill-shapes``.
BUNDLED_DIR = Path(__file__).with_name("demo")
_FILE_HINTS = {
    "path": "an existing open_clip model-config .json, or an architecture name such as ViT-B-32",
    "pretrained": "an existing checkpoint file, or an open_clip tag such as laion2b_s34b_b79k",
}


@frozen
class ClipArgs:
    """Arguments of the clip backend.

    ``path`` is an open_clip architecture name, a model-config JSON file, or a whole model in open_clip's
    schemas (``hf-hub:ORG/REPO``, ``local-dir:FOLDER``, see :attr:`location`); ``pretrained`` an open_clip
    tag or a checkpoint file (None: random weights; never with a schema); ``compile`` runs the image tower through
    ``torch.compile``. ``device``, ``batch_size`` and ``num_workers`` are
    None until :meth:`resolve` fills them from the run context and the machine.
    """

    path: str
    pretrained: str | None = None
    precision: Precision = PRECISIONS[DEFAULT_PRECISION]
    device: str | None = None
    batch_size: int | None = None
    num_workers: int | None = None
    text_batch_size: int = DEFAULT_TEXT_BATCH_SIZE
    compile: bool = False

    @classmethod
    def from_mapping(cls, args: Mapping[str, Any]) -> ClipArgs:
        """Validate untyped spec arguments. Raises BackendArgumentError naming the bad argument."""
        unknown = sorted(set(args) - set(ACCEPTED_ARGS))
        if unknown:
            raise BackendArgumentError(
                f"clip backend: unknown argument(s) {', '.join(map(repr, unknown))}; "
                f"accepted arguments are {', '.join(ACCEPTED_ARGS)}"
            )
        path = _optional_str(args, "path")
        if path is None:
            raise BackendArgumentError(
                "clip backend: missing argument 'path' (an open_clip architecture such as ViT-B-32, "
                "or a model-config .json file)"
            )
        pretrained = _optional_str(args, "pretrained")
        # Parsed here so a malformed hf-hub:/local-dir: location is refused before anything loads.
        if parse_location(path) is not None and pretrained is not None:
            raise BackendArgumentError(
                f"clip backend: path={path!r} brings its own weights, so pretrained={pretrained!r} would be "
                "ignored; drop pretrained=, or give an architecture name as path"
            )
        return cls(
            path=path,
            pretrained=pretrained,
            precision=_precision(args),
            device=_optional_str(args, "device"),
            batch_size=_optional_int(args, "batch_size", minimum=1),
            num_workers=_optional_int(args, "num_workers", minimum=0),
            text_batch_size=_optional_int(args, "text_batch_size", minimum=1) or DEFAULT_TEXT_BATCH_SIZE,
            compile=_optional_bool(args, "compile") or False,
        )

    @property
    def location(self) -> Location | None:
        """The Hub repository (``hf-hub:``) or folder (``local-dir:``) holding the whole model, else None."""
        return parse_location(self.path)

    @property
    def config_file(self) -> Path | None:
        """The model-config JSON named by ``path`` (a file or a bundled model's name), or None when ``path``
        is an open_clip architecture name or a schema location."""
        if self.location is not None:
            return None
        if _looks_like_file(self.path):
            return Path(self.path)
        bundled = BUNDLED_DIR / f"{self.path}.json"
        return bundled if bundled.is_file() else None

    @property
    def checkpoint_file(self) -> Path | None:
        """The checkpoint named by ``pretrained``, or None when it is an open_clip tag or absent.

        A bundled model's weights are its own tag, as an open_clip tag belongs to its architecture: only
        ``path=NAME,pretrained=NAME`` resolves to the bundled ``NAME.pt``.
        """
        if self.pretrained is None:
            return None
        candidate = Path(self.pretrained).expanduser()
        if candidate.is_file() or _looks_like_file(self.pretrained, CHECKPOINT_SUFFIXES):
            return candidate
        bundled = BUNDLED_DIR / f"{self.pretrained}.pt"
        if self.pretrained == self.path and bundled.is_file():
            return bundled
        return None

    @property
    def weights_name(self) -> str:
        """How the weights appear in the model identity ``{path}/{weights}``: a checkpoint by its file name
        (its directory says nothing about the model), a tag or a bundled model as written, else ``random``."""
        checkpoint = self.checkpoint_file
        if checkpoint is None or checkpoint.parent == BUNDLED_DIR:
            return self.pretrained or "random"
        return checkpoint.name

    def check_files_exist(self) -> None:
        """Raise ModelNotFoundError when a file named by ``path`` or ``pretrained`` does not exist."""
        location = self.location
        if isinstance(location, LocalDir):
            # A Hub repository is looked up in the Hugging Face cache (or downloaded) when loading.
            location.check_exists()
        for key, file in (("path", self.config_file), ("pretrained", self.checkpoint_file)):
            if file is not None and not file.is_file():
                hint = _FILE_HINTS[key]
                raise ModelNotFoundError(f"clip backend: {key}={file} does not exist; give {hint}")

    def resolve(self, context: RunContext, *, cuda_available: bool) -> ClipArgs:
        """Fill device, batch size and workers: spec value, else the run context, else a default."""
        device = self.device or context.device or ("cuda" if cuda_available else "cpu")
        device_type = device.split(":")[0]
        default_workers = min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)
        return evolve(
            self,
            device=device,
            batch_size=self.batch_size or context.batch_size or DEFAULT_BATCH_SIZE.get(device_type, 64),
            num_workers=next(n for n in (self.num_workers, context.num_workers, default_workers) if n is not None),
        )

    def as_dict(self) -> dict[str, Any]:
        """Every argument, for the manifest."""
        return {
            "path": self.path,
            "pretrained": self.pretrained,
            "precision": self.precision.name,
            "device": self.device,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "text_batch_size": self.text_batch_size,
            "compile": self.compile,
        }


def _looks_like_file(value: str, suffixes: tuple[str, ...] = (".json",)) -> bool:
    return value.lower().endswith(suffixes) or os.sep in value or "/" in value


def _optional_str(args: Mapping[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, Path):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise BackendArgumentError(f"clip backend: {key}={value!r} must be a non-empty string")
    return value.strip()


def _optional_int(args: Mapping[str, Any], key: str, *, minimum: int) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    # Spec strings arrive as text ("batch_size=32"); bool is an int subclass but never a count.
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BackendArgumentError(f"clip backend: {key}={value!r} must be an integer >= {minimum}")
    return value


def _optional_bool(args: Mapping[str, Any], key: str) -> bool | None:
    value = args.get(key)
    if value is None or isinstance(value, bool):
        return value
    # Spec strings arrive as text ("compile=true").
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise BackendArgumentError(f"clip backend: {key}={value!r} must be true or false")


def _precision(args: Mapping[str, Any]) -> Precision:
    precision = _optional_str(args, "precision")
    dtype = _optional_str(args, "dtype")
    if precision is not None and precision not in PRECISIONS:
        raise BackendArgumentError(f"clip backend: precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if dtype is not None:
        if dtype not in DTYPE_PRECISIONS:
            raise BackendArgumentError(
                f"clip backend: dtype={dtype!r} is not one of {', '.join(DTYPE_PRECISIONS)} "
                f"(or give precision= one of {', '.join(PRECISIONS)})"
            )
        if precision is not None and precision != DTYPE_PRECISIONS[dtype]:
            raise BackendArgumentError(
                f"clip backend: dtype={dtype!r} means precision={DTYPE_PRECISIONS[dtype]!r}, which "
                f"contradicts precision={precision!r}; give only one of them"
            )
        precision = DTYPE_PRECISIONS[dtype]
    return PRECISIONS[precision or DEFAULT_PRECISION]
