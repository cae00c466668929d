"""The loaded clip backend: zero-shot classification exactly as clip_benchmark's ``run_classification``, and the
embeddings of zero-shot retrieval as its ``zeroshot_retrieval.evaluate`` computes them.

Image batches that run out of device memory are computed again at half the size
(:mod:`mill.core.batch_size`); image features or class embeddings that are not finite stop the run
(:class:`~mill.core.errors.NonFiniteError`) instead of producing a silently wrong accuracy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import open_clip
import torch
import torch.nn.functional as F

from mill.backends.clip.args import ClipArgs
from mill.backends.clip.classifier import (
    ClassifierStore,
    build_classifier,
    check_finite,
    classifier_cache_key,
    encode_text,
)
from mill.backends.clip.model import Architecture, LoadedModel, library_versions, load_model
from mill.core.backend import ModelInfo, RunContext
from mill.core.batch_size import AdaptiveBatchSize
from mill.core.errors import DataError, NonFiniteError
from mill.core.held_model import first_device, parameters_digest, preserved
from mill.core.image_batches import answer_batches, topk_result
from mill.core.kinds.retrieval import RetrievalBatchResult, RetrievalTask
from mill.core.kinds.zero_shot import ZeroShotBatchResult, ZeroShotTask
from mill.core.precision import DEFAULT_PRECISION, PRECISIONS, PrecisionName
from mill.core.sample import SampleBatch, SampleSource


class ClipBackend:
    """An open_clip model serving zero-shot classification and retrieval tasks. Build with :meth:`load`."""

    def __init__(
        self, loaded: LoadedModel, args: ClipArgs, context: RunContext, *, cache_classifier: bool = True
    ) -> None:
        self.loaded = loaded
        self.args = args
        self.context = context
        self.device = torch.device(args.device or "cpu")
        self._cache_classifier = cache_classifier
        cache = context.cache_dir if cache_classifier else None
        self._store = None if cache is None else ClassifierStore(cache / "classifiers")
        self._run_info: dict[str, Any] = {}
        self._batch = AdaptiveBatchSize(args.batch_size or 1, release=_release_device_memory, name="image batch")

    @classmethod
    def load(cls, args: ClipArgs, context: RunContext) -> ClipBackend:
        """Resolve ``args`` against ``context`` and load the model (progress phase "loading model")."""
        resolved = args.resolve(context, cuda_available=torch.cuda.is_available())
        context.progress.start("loading model")
        try:
            loaded = load_model(resolved, cache_dir=context.cache_dir)
        finally:
            context.progress.finish()
        return cls(loaded, resolved, context)

    def for_next_run(self) -> ClipBackend:
        """Another run's backend over the same loaded model: a fresh batch size and run facts (a suite's
        members share one load, :mod:`mill.core.model_loads`)."""
        return type(self)(self.loaded, self.args, self.context, cache_classifier=self._cache_classifier)

    @property
    def info(self) -> ModelInfo:
        return self.loaded.info

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def preprocess(self) -> Any:
        return self.loaded.preprocess

    def run_info(self) -> Mapping[str, Any]:
        """``classifier_cache_hit`` and ``classifier_cache_key`` of the last classifier built or loaded, the
        image batch size now and its out-of-memory fall-backs."""
        return {**self._run_info, **self._batch.run_info()}

    def resume(self, previous: Mapping[str, Any]) -> None:
        """Start at the batch size an interrupted process of this run fell back to."""
        self._batch.resume(previous)

    def batch_sizes(self, keys: Sequence[str]) -> list[int | None]:
        """The size of the image batch that computed each of ``keys`` (:meth:`AdaptiveBatchSize.take_sizes`)."""
        return self._batch.take_sizes(keys)

    def classifier_key(self, task: ZeroShotTask) -> str:
        """The cache key of ``task``'s classifier: everything its weights depend on."""
        return classifier_cache_key(
            {
                "architecture": self.loaded.architecture.name,
                "model_config": self.loaded.model_config,
                "weights": self.loaded.weights_key,
                "precision": self.args.precision.name,
                "classnames": list(task.classnames),
                "templates": list(task.templates),
                "open_clip": str(open_clip.__version__),
                "torch": torch.__version__,
                "device_type": self.device.type,
            }
        )

    def classifier_for(self, task: ZeroShotTask) -> torch.Tensor:
        """``task``'s classifier ``[embed_dim, n_classes]``, from the cache or built and cached."""
        key = self.classifier_key(task)
        progress = self.context.progress
        progress.start("building classifier", total=None)

        def build() -> torch.Tensor:
            built = build_classifier(
                self.model,
                self.loaded.tokenizer,
                task.classnames,
                task.templates,
                device=self.device,
                autocast=self._autocast,
                text_batch_size=self.args.text_batch_size,
            )
            return self._checked(built, task)

        try:
            if self._store is None:
                classifier, hit = build(), False
            else:
                classifier, hit = self._store.load_or_build(
                    key, build, n_classes=len(task.classnames), device=self.device
                )
        finally:
            progress.finish()
        self._run_info = {"classifier_cache_hit": hit, "classifier_cache_key": key}
        return classifier

    def _checked(self, classifier: torch.Tensor, task: ZeroShotTask) -> torch.Tensor:
        check_finite(classifier, task.classnames, precision=self.args.precision.name)
        return classifier

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The image tower's (unnormalised) features of preprocessed ``images``, ``[n_images, embed_dim]``."""
        images = images.to(
            self.device,
            dtype=getattr(torch, self.args.precision.input_dtype),
            non_blocking=self.device.type == "cuda",
        )
        with torch.inference_mode(), self._autocast():
            features: torch.Tensor = self.model.encode_image(images)
        return features

    def logits_from(self, image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
        """Float32 logits ``[n_images, n_classes]`` of ``image_features``, as in clip_benchmark."""
        with torch.inference_mode(), self._autocast():
            normalised = F.normalize(image_features, dim=-1)
            # Pure low-precision weights give low-precision features; autocast casts for itself.
            logits = 100.0 * normalised @ classifier.to(normalised.dtype)
        return logits.float()

    def logits_for(self, images: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
        """Float32 logits ``[n_images, n_classes]`` of preprocessed ``images``, as in clip_benchmark."""
        return self.logits_from(self.image_features(images), classifier)

    def run_zero_shot(self, task: ZeroShotTask, data: SampleSource) -> Iterator[ZeroShotBatchResult]:
        """Top-``task.top_k`` classes of every sample in ``data``, one result per batch."""
        classifier = self.classifier_for(task)
        k = min(task.top_k, len(task.classnames))
        yield from answer_batches(
            data,
            batch_size=self._batch,
            transform=self.preprocess,
            num_workers=self.args.num_workers or 0,
            pin_memory=self.device.type == "cuda",
            compute=lambda images: self._topk(images, classifier, k),
            combine=lambda parts: (torch.cat([topk for topk, _ in parts]), torch.cat([finite for _, finite in parts])),
            collect=self._result,
            progress=self.context.progress,
        )

    def _batches(self, data: SampleSource) -> Iterator[SampleBatch]:
        """``data``'s samples preprocessed for the image tower, at the current image batch size."""
        return data.batches(
            batch_size=self._batch.size,
            num_workers=self.args.num_workers or 0,
            transform=self.preprocess,
            pin_memory=self.device.type == "cuda",
        )

    def _topk(self, images: torch.Tensor, classifier: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The top-``k`` classes of ``images`` and whether each image's features are finite (both on the device,
        so checking costs no synchronisation until the batch's classes are copied back anyway)."""
        features = self.image_features(images)
        finite = torch.isfinite(features).all(dim=-1)
        return self.logits_from(features, classifier).topk(k, dim=-1).indices, finite

    def _result(self, batch: SampleBatch, answer: tuple[torch.Tensor, torch.Tensor]) -> ZeroShotBatchResult:
        topk, finite = answer
        return topk_result(
            batch,
            topk.cpu().tolist(),
            finite.tolist(),
            what="image features",
            fix=(
                f"the image tower overflows at precision={self.args.precision.name}: run with precision=fp32 (or "
                "amp_bf16), or check these images"
            ),
            progress=self.context.progress,
        )

    def _check_finite(self, batch: SampleBatch, finite: torch.Tensor, tower: str) -> None:
        """Raise NonFiniteError naming the samples of ``batch`` whose ``tower`` features are not ``finite``."""
        bad = [(key, shard) for key, shard, ok in zip(batch.keys, batch.shards, finite.tolist(), strict=True) if not ok]
        if bad:
            shown = ", ".join(f"{key!r} (shard {shard})" for key, shard in bad[:10])
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            what = "images" if tower == "image" else "captions"
            raise NonFiniteError(
                f"non-finite (NaN or inf) {tower} features for {len(bad)} of {len(batch.keys)} samples in a batch: "
                f"{shown}{more}; the {tower} tower overflows at precision={self.args.precision.name}: run with "
                f"precision=fp32 (or amp_bf16), or check these {what}"
            )

    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised float32 embeddings ``[n_texts, embed_dim]`` of ``texts``, ``text_batch_size`` at a time."""
        embeddings = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.args.text_batch_size):
                tokens = self.loaded.tokenizer(list(texts[start : start + self.args.text_batch_size])).to(self.device)
                with self._autocast():
                    encoded = encode_text(self.model, tokens)
                embeddings.append(F.normalize(encoded.float(), dim=-1))
        return torch.cat(embeddings)

    def run_retrieval(self, task: RetrievalTask, data: SampleSource) -> Iterator[RetrievalBatchResult]:
        """The normalised embedding of every image in ``data`` and of each of its captions, one result per batch,
        as clip_benchmark's ``zeroshot_retrieval.evaluate`` computes them (the kind ranks them).

        Raises:
            DataError: ``data`` holds no captions (its spec names no ``dataset.text_member``).
            NonFiniteError: an image's or a caption's features are not finite.
        """
        progress = self.context.progress
        progress.start("evaluating", total=len(data))
        try:
            for batch in self._batches(data):
                if batch.texts is None:
                    raise DataError(
                        f"benchmark {task.benchmark!r}: its samples hold no captions; a retrieval spec names the "
                        "member holding them in dataset.text_member"
                    )
                parts = self._batch.map(
                    len(batch.keys),
                    lambda start, stop: self.image_features(batch.images[start:stop]),  # noqa: B023
                    where=lambda: f"shard {batch.shards[0]}, sample {batch.keys[0]!r}",  # noqa: B023
                    keys=batch.keys,
                )
                images = F.normalize(torch.cat(parts).float(), dim=-1)
                self._check_finite(batch, torch.isfinite(images).all(dim=-1), "image")
                texts = self.text_embeddings([caption for captions in batch.texts for caption in captions])
                counts = [len(captions) for captions in batch.texts]
                per_sample = torch.split(texts, counts)
                self._check_finite(batch, torch.stack([torch.isfinite(t).all() for t in per_sample]), "text")
                progress.advance(len(batch.keys))
                yield RetrievalBatchResult(
                    keys=list(batch.keys),
                    shards=list(batch.shards),
                    captions=[list(captions) for captions in batch.texts],
                    image_embeddings=images.cpu().numpy(),
                    text_embeddings=[t.cpu().numpy() for t in per_sample],
                )
        finally:
            progress.finish()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = self.args.precision.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, dtype))


class HeldClip(Protocol):
    """What :meth:`InMemoryClipBackend.wrap` reads of the in-memory plugin
    (:class:`~mill.backends.clip.memory.InMemoryClip`, which imports this module only when loading)."""

    @property
    def model(self) -> Any: ...

    @property
    def preprocess(self) -> Callable[[Any], Any]: ...

    @property
    def tokenizer(self) -> Callable[[list[str]], Any]: ...

    @property
    def name(self) -> str: ...

    @property
    def precision(self) -> PrecisionName: ...

    @property
    def cache_classifier(self) -> bool: ...


class InMemoryClipBackend(ClipBackend):
    """A :class:`ClipBackend` over a model the caller holds (``mill.backends.clip.from_model``): it runs on
    the model's own device unless told otherwise, and leaves the model as it found it."""

    @classmethod
    def wrap(cls, held: HeldClip, context: RunContext) -> InMemoryClipBackend:
        model = held.model
        args = ClipArgs(
            path=held.name, precision=PRECISIONS[held.precision], device=context.device or first_device(model)
        )
        resolved = args.resolve(context, cuda_available=torch.cuda.is_available())
        device = torch.device(resolved.device or "cpu")
        revision = parameters_digest(model)
        info = ModelInfo(
            identity=held.name,
            settings={"precision": held.precision},
            resolved_args={**resolved.as_dict(), "in_memory": True},
            revision=revision,
            library_versions=library_versions(),
            device_type=device.type,
            default_settings=held.precision == DEFAULT_PRECISION,
            cuda_version=torch.version.cuda,
        )
        loaded = LoadedModel(
            model=model,
            preprocess=held.preprocess,
            tokenizer=held.tokenizer,
            architecture=Architecture(held.name),
            model_config={},
            weights_key=revision,
            info=info,
        )
        return cls(loaded, resolved, context, cache_classifier=held.cache_classifier)

    def run_zero_shot(self, task: ZeroShotTask, data: SampleSource) -> Iterator[ZeroShotBatchResult]:
        with preserved(self.model):
            self.model.to(self.device).eval()
            yield from super().run_zero_shot(task, data)

    def run_retrieval(self, task: RetrievalTask, data: SampleSource) -> Iterator[RetrievalBatchResult]:
        with preserved(self.model):
            self.model.to(self.device).eval()
            yield from super().run_retrieval(task, data)


def _release_device_memory() -> None:
    # What a batch that ran out of memory allocated is cached by torch's allocator, not returned.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
