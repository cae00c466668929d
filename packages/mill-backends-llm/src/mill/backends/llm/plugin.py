"""The ``mill.backends`` entry points of this distribution: ``hf`` (and its aliases) and ``vllm``.

Importing this module imports no ML framework: the runner resolves every installed plugin to
list backends, and only the one a run uses may pay for torch, transformers or vLLM.
"""

from __future__ import annotations

from attrs import frozen

from mill.backends.llm.args import HfArgs, VllmArgs, parse_args
from mill.backends.llm.checkpoint import Checkpoint
from mill.core.backend import Backend, BackendArgs, Capabilities, RunContext


@frozen
class HfPlugin:
    """Vision-language models through transformers."""

    name: str = "hf"

    def capabilities(self, args: BackendArgs) -> Capabilities:
        parsed = parse_args(HfArgs, args, self.name)
        return Checkpoint(parsed.path, self.name, parsed.revision, parsed.trust_remote_code).capabilities()

    def load(self, args: BackendArgs, context: RunContext) -> Backend:
        from mill.backends.llm.hf import HfBackend

        return HfBackend.load(parse_args(HfArgs, args, self.name), context, self.name)


@frozen
class VllmPlugin:
    """Vision-language models through vLLM's offline engine (the ``[vllm]`` extra)."""

    name: str = "vllm"

    def capabilities(self, args: BackendArgs) -> Capabilities:
        # vLLM reads the same Hugging Face config and processor files, so transformers answers
        # this without vLLM installed; load() is where a missing vLLM is reported.
        parsed = parse_args(VllmArgs, args, self.name)
        return Checkpoint(parsed.path, self.name, parsed.revision, parsed.trust_remote_code).capabilities()

    def load(self, args: BackendArgs, context: RunContext) -> Backend:
        from mill.backends.llm.vllm import VllmBackend

        return VllmBackend.load(parse_args(VllmArgs, args, self.name), context, self.name)


hf_plugin = HfPlugin()
vllm_plugin = VllmPlugin()
