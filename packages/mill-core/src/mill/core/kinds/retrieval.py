"""Zero-shot retrieval: images against captions, in both directions, over a benchmark whose samples are an image
with several captions (Flickr30k, MSCOCO).

The backend answers with each image's normalised embedding and those of its captions; the scorer compares every
caption with every image (cosine similarity, as clip_benchmark's ``zeroshot_retrieval`` does) and ranks:

- image → text: an image is the query, every caption of the benchmark a candidate; the image's rank is that of
  its best-ranked own caption (``image_to_text_rank``). clip_benchmark calls its recall ``text_retrieval_recall``.
- text → image: a caption is the query, every image a candidate; its rank is that of its own image
  (``text_to_image_ranks``, one per caption). clip_benchmark calls its recall ``image_retrieval_recall``.

Recall@k is the fraction of queries whose rank is at most k (a query is right when any of its positives is within
the top k); the headline is DataComp's ``mean_recall@1``, the mean of the two directions' Recall@1. A rank is one
plus the number of candidates scoring strictly higher than the best positive, so a negative that ties a positive
exactly (two identical captions) does not push it down; torch.topk, which clip_benchmark uses, leaves the order
of ties unspecified, the one case where the two can differ.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import polars as pl
from attrs import frozen

from mill.core.backend import Backend
from mill.core.metrics import MetricValue, pooled_rates_with_stderr
from mill.core.sample import SampleSource
from mill.core.spec import Spec
from mill.core.task_kind import SAMPLE_COLUMNS, Rescorer, Scored, TableMark

NAME = "retrieval"
#: The k of every Recall@k reported, as clip_benchmark's retrieval benchmarks and DataComp report them.
RECALL_AT = (1, 5, 10)
#: Captions compared with every image at once while ranking: bounds the score matrix held in memory.
_BLOCK = 1024


@frozen
class RetrievalVariant:
    """``[variants.X]`` with ``kind = "retrieval"``: ``metric`` names the mean of the two directions' Recall@1."""

    kind: str
    metric: str


@frozen
class RetrievalTask:
    """Embed every image and each of its captions (the dataset's ``text_member``, one caption per line)."""

    benchmark: str
    variant: str


@frozen
class RetrievalBatchResult:
    """Per sample, aligned with ``keys``: its captions, the image's normalised embedding and its captions'."""

    keys: Sequence[str]
    shards: Sequence[str]
    captions: Sequence[Sequence[str]]
    image_embeddings: npt.NDArray[np.float32]
    text_embeddings: Sequence[npt.NDArray[np.float32]]

    def frame(self) -> pl.DataFrame:
        """The batch as raw chunk columns."""
        columns = {
            "key": self.keys,
            "shard": self.shards,
            "gold": [None] * len(self.keys),
            "captions": [list(c) for c in self.captions],
            "image_embedding": self.image_embeddings.astype(np.float32).tolist(),
            "text_embeddings": [t.astype(np.float32).tolist() for t in self.text_embeddings],
        }
        return pl.DataFrame(columns, schema={**SAMPLE_COLUMNS, **RAW_SCHEMA})


@runtime_checkable
class RetrievalBackend(Backend, Protocol):
    """A loaded model that embeds images and texts in one space."""

    def run_retrieval(self, task: RetrievalTask, data: SampleSource) -> Iterator[RetrievalBatchResult]: ...


RAW_SCHEMA: dict[str, Any] = {
    "captions": pl.List(pl.String),
    "image_embedding": pl.List(pl.Float32),
    "text_embeddings": pl.List(pl.List(pl.Float32)),
}

OUTPUT_SCHEMA: dict[str, Any] = {
    **SAMPLE_COLUMNS,
    "captions": pl.List(pl.String),
    "image_to_text_rank": pl.Int64,
    "text_to_image_ranks": pl.List(pl.Int64),
}


def ranks(
    images: npt.NDArray[np.float32], texts: npt.NDArray[np.float32], text_image: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(image → text rank per image, text → image rank per text), 1 for the best, of normalised embeddings
    ``images`` ``[n_images, d]`` and ``texts`` ``[n_texts, d]``, text ``t`` describing image ``text_image[t]``.

    Scores are float32 dot products, as clip_benchmark computes them. A rank is one plus the number of candidates
    scoring strictly higher than the query's best positive; an image without captions ranks last.
    """
    n_texts, n_images = len(texts), len(images)
    images_t = np.ascontiguousarray(images.T)
    own = np.empty(n_texts, dtype=np.float32)
    text_to_image = np.empty(n_texts, dtype=np.int64)
    for start in range(0, n_texts, _BLOCK):
        scores = texts[start : start + _BLOCK] @ images_t
        mine = scores[np.arange(len(scores)), text_image[start : start + _BLOCK]]
        own[start : start + len(scores)] = mine
        text_to_image[start : start + len(scores)] = 1 + (scores > mine[:, None]).sum(axis=1)
    best = np.full(n_images, -np.inf, dtype=np.float32)
    np.maximum.at(best, text_image, own)
    above = np.zeros(n_images, dtype=np.int64)
    for start in range(0, n_texts, _BLOCK):
        # The same blocks as above, so a score is computed the same way in both directions.
        scores = texts[start : start + _BLOCK] @ images_t
        above += (scores > best[None, :]).sum(axis=0)
    return 1 + above, text_to_image


def score(raw: pl.DataFrame, metric: str, seed: int) -> Scored:
    """Per-sample ranks in both directions and their :func:`metrics`. ``raw`` is sorted by key."""
    n_captions = raw["text_embeddings"].list.len().to_numpy()
    images = _matrix(raw["image_embedding"])
    texts = _matrix(raw["text_embeddings"].explode().drop_nulls())
    text_image = np.repeat(np.arange(len(raw), dtype=np.intp), n_captions)
    image_to_text, text_to_image = ranks(images, texts, text_image)
    frame = pl.DataFrame(
        {
            "key": raw["key"],
            "shard": raw["shard"],
            "gold": raw["gold"],
            "captions": raw["captions"],
            "image_to_text_rank": image_to_text,
            "text_to_image_ranks": [part.tolist() for part in np.split(text_to_image, np.cumsum(n_captions)[:-1])],
        },
        schema=OUTPUT_SCHEMA,
    )
    return Scored(frame, metrics(frame, metric, seed))


def _matrix(column: pl.Series) -> npt.NDArray[np.float32]:
    """A list column of equal-length float vectors as a ``[rows, d]`` float32 matrix."""
    return np.asarray(column.to_list(), dtype=np.float32).reshape(len(column), -1)


def metrics(frame: pl.DataFrame, metric: str, seed: int) -> dict[str, MetricValue]:
    """``metric`` (the mean of both directions' Recall@1), then ``image_to_text_recall@k`` and
    ``text_to_image_recall@k`` for k in :data:`RECALL_AT`, of a per-sample frame (:data:`OUTPUT_SCHEMA`).

    Each has a bootstrap stderr seeded by ``seed``; a resample draws images, each with its captions."""
    images = np.ones(len(frame))
    captions = frame["text_to_image_ranks"].list.len().to_numpy()
    image_hits = {k: (frame["image_to_text_rank"] <= k).to_numpy() for k in RECALL_AT}
    text_hits = {
        k: frame["text_to_image_ranks"].list.eval(pl.element() <= k).list.sum().fill_null(0).to_numpy()
        for k in RECALL_AT
    }
    values = {metric: pooled_rates_with_stderr([(image_hits[1], images), (text_hits[1], captions)], seed)}
    for k in RECALL_AT:
        values[f"image_to_text_recall@{k}"] = pooled_rates_with_stderr([(image_hits[k], images)], seed)
        values[f"text_to_image_recall@{k}"] = pooled_rates_with_stderr([(text_hits[k], captions)], seed)
    return values


@frozen
class RetrievalKind:
    """The ``retrieval`` task kind."""

    name: str = NAME
    variant_type: type[RetrievalVariant] = RetrievalVariant
    backend_protocol: type[Any] = RetrievalBackend
    raw_schema: Mapping[str, Any] = RAW_SCHEMA
    mark: TableMark | None = None
    # The ranks follow from the embeddings alone: nothing is parsed, so nothing can be re-graded.
    rescorer: Rescorer | None = None

    def check_variant(self, variant: RetrievalVariant, n_classes: int) -> Sequence[tuple[str, str]]:
        del variant
        # A spec without classes is one whose samples hold captions (dataset.text_member): see spec.py.
        if n_classes:
            return [("kind", "retrieval ranks captions, not classes: its spec has dataset.text_member, no [classes]")]
        return []

    def settings(self, variant: RetrievalVariant) -> Mapping[str, str]:
        del variant
        return {}

    def build_task(self, spec: Spec, variant_name: str, variant: RetrievalVariant, seed: int) -> RetrievalTask:
        del variant, seed
        return RetrievalTask(spec.name, variant_name)

    def answer(self, backend: RetrievalBackend, task: RetrievalTask, data: SampleSource) -> Iterator[pl.DataFrame]:
        for batch in backend.run_retrieval(task, data):
            yield batch.frame()

    def score(self, task: RetrievalTask, variant: RetrievalVariant, raw: pl.DataFrame, seed: int) -> Scored:
        del task
        return score(raw, variant.metric, seed)

    def metrics(self, frame: pl.DataFrame, metric: str, seed: int) -> Mapping[str, MetricValue]:
        return metrics(frame, metric, seed)


kind = RetrievalKind()
