"""The ``mill.backends`` entry point of the clip backend. Imports no ML framework until ``load``."""

from __future__ import annotations

from mill.backends.clip.args import ClipArgs
from mill.core.backend import Backend, BackendArgs, Capabilities, RunContext
from mill.core.kinds import retrieval, zero_shot

#: What every open_clip model serves, over images and text.
CAPABILITIES = Capabilities(kinds=frozenset({zero_shot.NAME, retrieval.NAME}), modalities=frozenset({"image", "text"}))


class ClipPlugin:
    """Zero-shot classification and retrieval with open_clip models (``clip[path=ViT-B-32,pretrained=openai]``)."""

    def capabilities(self, args: BackendArgs) -> Capabilities:
        """Zero-shot over images and text. Raises ModelNotFoundError for a missing config or checkpoint."""
        ClipArgs.from_mapping(args).check_files_exist()
        return CAPABILITIES

    def load(self, args: BackendArgs, context: RunContext) -> Backend:
        from mill.backends.clip.backend import ClipBackend

        return ClipBackend.load(ClipArgs.from_mapping(args), context)


plugin = ClipPlugin()
