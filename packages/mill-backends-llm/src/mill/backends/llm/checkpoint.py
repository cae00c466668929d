"""Where a model lives (a local directory or a Hugging Face Hub id), what it can serve, and which version it is.

Everything here reads configuration files only, never weights, so a plugin can answer
``capabilities`` cheaply and both backends record the same identity and revision for a model.
Transformers is imported inside the functions: the plugin module that uses this must stay light.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, NoReturn

from attrs import frozen

from mill.core.backend import Capabilities
from mill.core.checksum import file_stamp
from mill.core.errors import BackendArgumentError, CapabilityError, MillError, ModelNotFoundError
from mill.core.hub import TRANSFORMERS_MODEL_FILES, HubFiles, offline_unless_hub_reachable
from mill.core.kinds import generative_mcq, likelihood_mcq

# "name" (legacy) or "owner/name", as the Hub allows; anything else can only be a local path.
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_IMAGE_TEXT_AUTO_CLASSES = ("AutoModelForImageTextToText", "AutoModelForVision2Seq")
#: What a tokenizer's repository must hold (a fast tokenizer's file, or the config naming a slow one's files).
TOKENIZER_FILES = (("tokenizer_config.json", "tokenizer.json"),)


@frozen
class Checkpoint:
    """A model named in a spec: ``path`` as given, plus how to fetch it.

    ``backend`` is the backend name the user wrote; error messages quote it back.
    """

    path: str
    backend: str
    revision: str | None = None
    trust_remote_code: bool = False

    def locate(self) -> Path | None:
        """The directory ``path`` names on disk, or None when it can only be a Hub id.

        Raises :class:`ModelNotFoundError` when ``path`` is neither an existing directory nor
        something the Hub could hold.
        """
        local = Path(self.path).expanduser()
        if local.is_dir():
            return local
        if local.exists():
            raise ModelNotFoundError(
                f"model path {self.path!r} is a file; {self.backend} expects a model directory "
                "(as written by save_pretrained) or a Hugging Face Hub id"
            )
        if _HUB_ID.match(self.path) and ".." not in self.path:
            return None
        raise ModelNotFoundError(
            f"model path {self.path!r} does not exist; pass an existing model directory "
            "(as written by save_pretrained) or a Hugging Face Hub id such as Qwen/Qwen2-VL-2B-Instruct"
        )

    def offline_unless_hub_reachable(
        self, needed: tuple[tuple[str, ...], ...] = TRANSFORMERS_MODEL_FILES, what: str = "model"
    ) -> None:
        """Before transformers (or vLLM) asks the Hugging Face Hub for a Hub model's files: fail at once when the
        Hub cannot be reached and the cache lacks the ``needed`` ones (config and weights), read them from the
        cache when it holds them (:func:`mill.core.hub.offline_unless_hub_reachable`). A local directory is left
        alone.

        Raises :class:`ModelNotFoundError` naming the ``what`` and the ``hf download`` command.
        """
        if self.locate() is not None:
            return
        offline_unless_hub_reachable(
            HubFiles(self.path, needed, self.revision),
            backend=self.backend,
            what=f"{what} {self.path!r}" + (f" at revision {self.revision!r}" if self.revision else ""),
            instead="or pass the folder save_pretrained wrote",
        )

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every transformers ``from_pretrained`` call for this model takes."""
        return {"revision": self.revision, "trust_remote_code": self.trust_remote_code}

    def config(self) -> Any:
        """The model's transformers config (no weights). Raises as :meth:`raise_for` does."""
        from transformers import AutoConfig

        self.offline_unless_hub_reachable()
        try:
            return AutoConfig.from_pretrained(self.path, **self.load_kwargs())
        except (OSError, ValueError) as error:
            self.raise_for(error)

    def capabilities(self) -> Capabilities:
        """Multiple choice by generation and by letter likelihood, with image input when both the config and
        the processor handle images.

        The config decides whether the architecture has a vision tower; the image processor
        decides whether images can be turned into its inputs. A text-only model gets
        ``{"text"}`` and so serves no variant.
        """
        config = self.config()
        vision = self._config_has_vision(config) and self._has_image_processor()
        modalities = {"image", "text"} if vision else {"text"}
        kinds = frozenset({generative_mcq.NAME, likelihood_mcq.NAME})
        return Capabilities(kinds=kinds, modalities=frozenset(modalities))

    def _config_has_vision(self, config: Any) -> bool:
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        auto_map = getattr(config, "auto_map", None) or {}
        return (
            getattr(config, "vision_config", None) is not None
            or config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
            or any(name in auto_map for name in _IMAGE_TEXT_AUTO_CLASSES)
        )

    def _has_image_processor(self) -> bool:
        from transformers import AutoImageProcessor

        try:
            AutoImageProcessor.from_pretrained(self.path, **self.load_kwargs())
        except OSError:
            return False
        except ValueError as error:
            if isinstance(self.mill_error(error), BackendArgumentError):
                self.raise_for(error)
            return False
        return True

    def raise_for(self, error: Exception) -> NoReturn:
        """Raise the Mill error for a transformers loading failure, or ``error`` itself when it is a bug.

        Raises :class:`BackendArgumentError` (the model needs ``trust_remote_code``),
        :class:`CapabilityError` (not an image-text-to-text model), :class:`ModelNotFoundError`
        (files missing or unreachable).
        """
        mill_error = self.mill_error(error)
        if mill_error is None:
            raise error
        raise mill_error from error

    def mill_error(self, error: Exception) -> MillError | None:
        """The Mill error that explains a transformers loading failure, None when it is a bug."""
        text = str(error)
        if "trust_remote_code" in text:
            return BackendArgumentError(
                f"model {self.path!r} needs to run code from its model repository, which Mill never does "
                "on its own: running a repository's code is your explicit choice. If you trust it, pass "
                f"trust_remote_code=true, e.g. {self.backend}[path={self.path},trust_remote_code=true]"
            )
        if "Unrecognized configuration class" in text:
            return CapabilityError(
                f"model {self.path!r} is not an image-text-to-text model that transformers can load "
                f"for generation ({text.splitlines()[0]})"
            )
        if isinstance(error, ValueError) and "model_type" in text:
            return ModelNotFoundError(
                f"model {self.path!r}: its config.json names no model type transformers knows "
                f'({text.splitlines()[0]}); a folder written by save_pretrained has a "model_type" key there'
            )
        if isinstance(error, OSError):
            where = "the local directory" if self.locate() is not None else "the Hugging Face Hub or its cache"
            return ModelNotFoundError(
                f"model {self.path!r} could not be read from {where}"
                + (f" at revision {self.revision!r}" if self.revision else "")
                + f": {text.splitlines()[0] if text else type(error).__name__}. Check the path or Hub id; "
                f"for a Hub model without network access, download it first (hf download {self.path})"
            )
        return None

    def resolved_revision(self) -> str | None:
        """A string that changes when the model's files change, or None when nothing is known.

        A Hub model gives its commit (read from the local cache, so this works offline); a
        local directory gives a short hash of its config and of its weight files' names and stat stamps
        (size, modification time, inode, change time; reading the weights themselves would take minutes).
        """
        local = self.locate()
        if local is None:
            return self._hub_commit()
        if local.parent.name == "snapshots" and _COMMIT.match(local.name):
            return local.name
        digest = hashlib.sha256()
        config = local / "config.json"
        if config.is_file():
            digest.update(config.read_bytes())
        for weight in sorted(local.iterdir()):
            if weight.suffix in _WEIGHT_SUFFIXES and weight.is_file():
                # The whole stamp, not size and mtime alone, which a same-size copy made with `cp -p` keeps.
                stamp = ":".join(str(value) for value in file_stamp(weight.stat()).values())
                digest.update(f"{weight.name}:{stamp}\n".encode())
        return f"local-{digest.hexdigest()[:12]}"

    def _hub_commit(self) -> str | None:
        if self.revision is not None and _COMMIT.match(self.revision):
            return self.revision
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(self.path, "config.json", revision=self.revision)
        if isinstance(cached, str) and _COMMIT.match(Path(cached).parent.name):
            return Path(cached).parent.name
        return self.revision
