"""The ``mill.backends`` entry points of this distribution: ``hf`` (and its aliases), ``vllm`` and ``openai``.

Importing this module imports no ML framework: the runner resolves every installed plugin to
list backends, and only the one a run uses may pay for torch, transformers or vLLM.
"""

from __future__ import annotations

import importlib
from typing import Generic

from attrs import frozen

from mill.backends.llm.args import ArgsT, HfArgs, OpenAIArgs, VllmArgs, parse_args
from mill.backends.llm.checkpoint import Checkpoint
from mill.core.backend import Backend, BackendArgs, Capabilities, RunContext


@frozen
class GenerativePlugin(Generic[ArgsT]):
    """A vision-language model family: its arguments' class, and the backend class that loads it, named as
    ``module:Class`` so that its framework is imported only when a run loads it."""

    name: str
    args_type: type[ArgsT]
    backend_class: str

    def capabilities(self, args: BackendArgs) -> Capabilities:
        # hf and vLLM read the same Hugging Face config and processor files, so transformers answers this
        # without vLLM installed; load() is where a missing vLLM is reported.
        parsed = parse_args(self.args_type, args, self.name)
        assert not isinstance(parsed, OpenAIArgs)  # served models have a plugin of their own
        return Checkpoint(parsed.path, self.name, parsed.revision, parsed.trust_remote_code).capabilities()

    def load(self, args: BackendArgs, context: RunContext) -> Backend:
        module, _, name = self.backend_class.partition(":")
        backend_type = getattr(importlib.import_module(module), name)
        backend: Backend = backend_type.load(parse_args(self.args_type, args, self.name), context, self.name)
        return backend


#: Vision-language models through transformers.
hf_plugin = GenerativePlugin("hf", HfArgs, "mill.backends.llm.hf:HfBackend")
#: Vision-language models through vLLM's offline engine (the ``[vllm]`` extra).
vllm_plugin = GenerativePlugin("vllm", VllmArgs, "mill.backends.llm.vllm:VllmBackend")


@frozen
class ServedPlugin:
    """Models behind an OpenAI-compatible endpoint (the ``[openai]`` extra). Nothing is asked of the endpoint
    until the model loads: a hosted API (no ``base_url``) serves generative multiple choice only, a server
    of one's own (``base_url``) is offered letter likelihood too, which the backend checks before any image
    is sent (:mod:`mill.backends.llm.served`)."""

    name: str = "openai"

    def capabilities(self, args: BackendArgs) -> Capabilities:
        parsed = parse_args(OpenAIArgs, args, self.name)
        kinds = {"generative_mcq"} if parsed.base_url is None else {"generative_mcq", "likelihood_mcq"}
        return Capabilities(kinds=frozenset(kinds))

    def load(self, args: BackendArgs, context: RunContext) -> Backend:
        from mill.backends.llm.served import ServedBackend

        return ServedBackend.load(parse_args(OpenAIArgs, args, self.name), context, self.name)


#: Models behind an OpenAI-compatible chat-completions endpoint: a local vLLM server or a hosted API.
openai_plugin = ServedPlugin()
