"""The clip backend's arguments: parsed once from the model spec into a validated value.

Imports no ML framework: the plugin parses arguments to answer ``capabilities`` cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import evolve, frozen

from mill.backends.clip.pretrained import LocalDir, Location, parse_location
from mill.core.arguments import NonNegativeInt, PositiveInt, structure_arguments
from mill.core.backend import RunContext
from mill.core.errors import BackendArgumentError, ModelNotFoundError
from mill.core.precision import DEFAULT_PRECISION, PRECISIONS, DtypeName, Precision, PrecisionName, checked_precision

DEFAULT_TEXT_BATCH_SIZE = 1024
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
#: Models that ship inside this distribution (package data): ``{name}.json`` and ``{name}.pt``, addressed like an
#: open_clip architecture and its tag, ``path=mill-shapes,pretrained=mill-shapes``.
BUNDLED_DIR = Path(__file__).with_name("demo")
_PATH_HINT = "give path= an open_clip architecture such as ViT-B-32, or a model-config .json file"
_FILE_HINTS = {
    "path": "an existing open_clip model-config .json, or an architecture name such as ViT-B-32",
    "pretrained": "an existing checkpoint file, or an open_clip tag such as laion2b_s34b_b79k",
}


@frozen
class _ClipInput:
    """The arguments as a model spec gives them: ``dtype`` is shorthand for a ``precision``."""

    path: str
    pretrained: str | None = None
    precision: PrecisionName | None = None
    dtype: DtypeName | None = None
    device: str | None = None
    batch_size: PositiveInt | None = None
    num_workers: NonNegativeInt | None = None
    text_batch_size: PositiveInt = DEFAULT_TEXT_BATCH_SIZE
    compile: bool = False

    def checked_precision(self) -> Precision:
        """The precision named by ``precision`` or ``dtype``, refusing the two when they disagree."""
        return checked_precision(self.precision, self.dtype, "clip")


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
        """Structure untyped spec arguments. Raises BackendArgumentError naming the bad argument."""
        given = structure_arguments(args, _ClipInput, "clip", hints={"path": _PATH_HINT})
        # Parsed here so a malformed hf-hub:/local-dir: location is refused before anything loads.
        if parse_location(given.path) is not None and given.pretrained is not None:
            raise BackendArgumentError(
                f"clip backend: path={given.path!r} brings its own weights, so pretrained={given.pretrained!r} "
                "would be ignored; drop pretrained=, or give an architecture name as path"
            )
        return cls(
            path=given.path,
            pretrained=given.pretrained,
            precision=given.checked_precision(),
            device=given.device,
            batch_size=given.batch_size,
            num_workers=given.num_workers,
            text_batch_size=given.text_batch_size,
            compile=given.compile,
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
        device, batch_size, num_workers = context.resolve(
            self.device, self.batch_size, self.num_workers, cuda_available=cuda_available
        )
        return evolve(self, device=device, batch_size=batch_size, num_workers=num_workers)

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
