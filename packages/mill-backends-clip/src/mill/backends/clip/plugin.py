"""The ``mill.backends`` entry point of the clip backend. Imports no ML framework until ``load``."""

from __future__ import annotations

from mill.backends.clip.args import ClipArgs
from mill.core.backend import BackendArgs, Capabilities, RunContext
from mill.core.kinds import zero_shot
from mill.core.kinds.zero_shot import ZeroShotBackend


class ClipPlugin:
    """Zero-shot classification with open_clip models (``clip[path=ViT-B-32,pretrained=openai]``)."""

    def capabilities(self, args: BackendArgs) -> Capabilities:
        """Zero-shot over images and text. Raises ModelNotFoundError for a missing config or checkpoint."""
        ClipArgs.from_mapping(args).check_files_exist()
        return Capabilities(kinds=frozenset({zero_shot.NAME}), modalities=frozenset({"image", "text"}))

    def load(self, args: BackendArgs, context: RunContext) -> ZeroShotBackend:
        from mill.backends.clip.backend import ClipBackend

        return ClipBackend.load(ClipArgs.from_mapping(args), context)


plugin = ClipPlugin()
