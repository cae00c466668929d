"""The transformers backend: multiple choice with ``AutoModelForImageTextToText``, by generation or by the
log-probabilities of the option letters.

Decoding is greedy and batches are left-padded, so a sample's answer does not depend on the
batch it lands in, except where padding changes a matmul's rounding enough to flip a near tie
(possible in bfloat16; the tests check float32 on CPU). For the same reason a batch that runs out of
device memory can be computed again in halves (:mod:`mill.core.batch_size`): the run goes on at that size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any

from mill.backends.llm.args import HfArgs, output_settings, resolved, run_setting
from mill.backends.llm.base import GenerativeBackend
from mill.backends.llm.checkpoint import Checkpoint
from mill.backends.llm.letters import FloatArray
from mill.backends.llm.messages import render_prompt
from mill.core.backend import ModelInfo, RunContext
from mill.core.batch_size import AdaptiveBatchSize
from mill.core.device import checked_device
from mill.core.errors import BackendArgumentError

DEFAULT_BATCH_SIZE = 8
_PIXEL_LIMITS = ("min_pixels", "max_pixels")


class HfBackend(GenerativeBackend):
    """A loaded transformers vision-language model answering multiple-choice tasks."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        info: ModelInfo,
        *,
        batch_size: int,
        num_workers: int,
        context: RunContext,
    ) -> None:
        super().__init__(info, batch_size=batch_size, num_workers=num_workers, context=context)
        self._model = model
        self._processor = processor
        self._batch = AdaptiveBatchSize(batch_size, release=_release_device_memory, name="batch")

    @classmethod
    def load(cls, args: HfArgs, context: RunContext, backend: str = "hf") -> HfBackend:
        """Load processor and model for ``args``; run settings in ``context`` fill unset arguments.

        Raises :class:`ModelNotFoundError` when the model cannot be found,
        :class:`BackendArgumentError` when it needs ``trust_remote_code`` or ``min_pixels``/
        ``max_pixels`` are set for a processor without them.
        """
        import torch
        from transformers import AutoModelForImageTextToText

        checkpoint = Checkpoint(args.path, backend, args.revision, args.trust_remote_code)
        device = run_setting(args.device, context.device, "cuda" if torch.cuda.is_available() else "cpu")
        if args.device_map is None:
            checked_device(device, f"{backend} backend", torch)
        batch_size = run_setting(args.batch_size, context.batch_size, DEFAULT_BATCH_SIZE)
        num_workers = run_setting(args.num_workers, context.num_workers, 0)
        checkpoint.offline_unless_hub_reachable()
        processor = _load_processor(checkpoint, args)
        model_kwargs: dict[str, Any] = {"dtype": getattr(torch, args.dtype), **checkpoint.load_kwargs()}
        if args.attn_implementation is not None:
            model_kwargs["attn_implementation"] = args.attn_implementation
        if args.device_map is not None:
            model_kwargs["device_map"] = args.device_map
        try:
            with _progress_bars(shown=not context.quiet):
                model: Any = AutoModelForImageTextToText.from_pretrained(args.path, **model_kwargs)
        except (OSError, ValueError) as error:
            checkpoint.raise_for(error)
        if args.device_map is None:
            model = model.to(device)
        model.eval()
        info = ModelInfo(
            identity=args.path,
            settings=output_settings(args),
            resolved_args=resolved(args, device=device, batch_size=batch_size, num_workers=num_workers),
            revision=checkpoint.resolved_revision(),
            library_versions={"transformers": version("transformers"), "torch": version("torch")},
            device_type=model.device.type,
            cuda_version=torch.version.cuda,
        )
        return cls(
            model,
            processor,
            info,
            batch_size=batch_size,
            num_workers=num_workers,
            context=context,
        )

    def run_info(self) -> Mapping[str, Any]:
        """The batch size generation runs at now and its out-of-memory fall-backs."""
        return {**super().run_info(), **self._batch.run_info()}

    def resume(self, previous: Mapping[str, Any]) -> None:
        """Start at the batch size an interrupted process of this run fell back to."""
        self._batch.resume(previous)

    @property
    def chat_processor(self) -> Any:
        return self._processor

    def next_token_logprobs(self, images: Sequence[Any], texts: list[str], token_ids: Sequence[int]) -> FloatArray:
        """One forward pass per batch; rows are left-padded, so every text's next token is at the last position."""
        import torch

        inputs = self._processor(text=texts, images=list(images), return_tensors="pt", padding=True)
        inputs = inputs.to(self._model.device)
        with torch.inference_mode():
            # Only the last position's logits are needed; the others would cost vocabulary-sized rows each.
            logits = self._model(**inputs, logits_to_keep=1).logits[:, -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)[:, list(token_ids)]
        return logprobs.double().cpu().numpy()

    def generate(self, images: Sequence[Any], prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy answers to ``prompts``, each about the image at the same position, at most the current
        batch size at a time."""
        parts = self._batch.map(
            len(prompts),
            lambda start, stop: self._generate(images[start:stop], prompts[start:stop], max_new_tokens),
            where=lambda: f"a prompt of {len(prompts[0])} characters",
        )
        return [text for part in parts for text in part]

    def _generate(self, images: Sequence[Any], prompts: list[str], max_new_tokens: int) -> list[str]:
        import torch

        texts = [render_prompt(self._processor, prompt) for prompt in prompts]
        inputs = self._processor(text=texts, images=list(images), return_tensors="pt", padding=True)
        inputs = inputs.to(self._model.device)
        with torch.inference_mode():
            output = self._model.generate(
                **inputs, do_sample=False, max_new_tokens=max_new_tokens, **self._unset_sampling()
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [str(text) for text in self._processor.batch_decode(new_tokens, skip_special_tokens=True)]

    def _unset_sampling(self) -> dict[str, Any]:
        # Checkpoints often ship sampling defaults (temperature, top_p, top_k); with greedy
        # decoding they do nothing, and clearing them keeps transformers from warning each batch.
        config = self._model.generation_config
        return {name: None for name in ("temperature", "top_p", "top_k") if getattr(config, name, None)}


def _release_device_memory() -> None:
    import torch

    # What a batch that ran out of memory allocated is cached by torch's allocator, not returned.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def _progress_bars(*, shown: bool) -> Iterator[None]:
    """transformers' own bars ("Loading weights") drawn or not while the block runs, as they were after it."""
    from transformers.utils import logging as transformers_logging

    was_shown = transformers_logging.is_progress_bar_enabled()
    if not shown:
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if was_shown:
            transformers_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _load_processor(checkpoint: Checkpoint, args: HfArgs) -> Any:
    from transformers import AutoImageProcessor, AutoProcessor

    limits = {name: getattr(args, name) for name in _PIXEL_LIMITS if getattr(args, name) is not None}
    try:
        processor = AutoProcessor.from_pretrained(args.path, **checkpoint.load_kwargs())  # type: ignore[no-untyped-call]
        if limits:
            _check_pixel_limits(processor, args.path)
            # Built into the image processor rather than passed per call, which transformers
            # deprecates; the rest of the processor stays as saved.
            processor.image_processor = AutoImageProcessor.from_pretrained(
                args.path, **checkpoint.load_kwargs(), **limits
            )
    except (OSError, ValueError) as error:
        checkpoint.raise_for(error)
    # Generation appends to the right end of each row, so padding must sit on the left.
    processor.tokenizer.padding_side = "left"
    return processor


def _check_pixel_limits(processor: Any, path: str) -> None:
    image_processor = getattr(processor, "image_processor", None)
    valid = getattr(getattr(image_processor, "valid_kwargs", None), "__annotations__", {})
    if not all(name in valid or hasattr(image_processor, name) for name in _PIXEL_LIMITS):
        raise BackendArgumentError(
            f"min_pixels/max_pixels were given, but the image processor of {path!r} "
            f"({type(image_processor).__name__}) has no such settings; remove them for this model"
        )
