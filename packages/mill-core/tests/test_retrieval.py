"""The retrieval kind: ranks in both directions on hand-built embeddings (several captions per image, ties), the
recalls pooled over queries, their bootstrap errors, and the variants a spec may declare."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mill.core.kinds.retrieval import OUTPUT_SCHEMA, RetrievalBatchResult, RetrievalTask, kind, metrics, ranks
from mill.core.metrics import accuracy_with_stderr, pooled_rates_with_stderr
from mill.testing.bootstrap import bootstrap_stderr


def _unit(*angles: float) -> np.ndarray:
    """Unit vectors in the plane at ``angles`` (degrees): their dot products are cosines of the differences."""
    radians = np.radians(angles)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_ranks_hand_computed() -> None:
    images = _unit(0, 90, 180)
    # Image 0's captions at 10 and 110 degrees, image 1's at 80, image 2's at 260.
    texts = _unit(10, 110, 80, 260)
    image_to_text, text_to_image = ranks(images, texts, np.array([0, 0, 1, 2]))
    # Caption 1 (110) is 20 from image 1 and 70 from image 2 before its own image 0 (110): rank 3.
    assert text_to_image.tolist() == [1, 3, 1, 1]
    # Image 2 (180): caption 1 (70 away) is above its own caption 3 (80 away): rank 2.
    assert image_to_text.tolist() == [1, 1, 2]


def test_a_negative_ranked_above_every_positive_pushes_the_image_down() -> None:
    images = _unit(0, 45)
    texts = _unit(40, 50, 44)  # image 0's captions are both nearer image 1; image 1's caption is at 50
    image_to_text, text_to_image = ranks(images, texts, np.array([0, 0, 1]))
    # Image 0: its best caption is 40 away, the negative caption 2 is 44 away: rank 1.
    assert image_to_text.tolist() == [1, 1]
    assert text_to_image.tolist() == [2, 2, 1]
    image_to_text, _ = ranks(images, _unit(60, 70, 44), np.array([0, 0, 1]))
    # Now image 0's captions are 60 and 70 away and image 1's caption only 44: one negative above, rank 2.
    assert image_to_text.tolist() == [2, 1]


def test_an_exact_tie_with_a_negative_does_not_push_a_positive_down() -> None:
    images = _unit(0, 90)
    texts = _unit(30, 30)  # the same caption for both images
    image_to_text, text_to_image = ranks(images, texts, np.array([0, 1]))
    assert image_to_text.tolist() == [1, 1]
    assert text_to_image.tolist() == [1, 2]


def test_ranking_in_blocks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 8)).astype(np.float32)
    texts = rng.normal(size=(100, 8)).astype(np.float32)
    text_image = rng.integers(0, 40, 100)
    whole = ranks(images, texts, text_image)
    monkeypatch.setattr("mill.core.kinds.retrieval._BLOCK", 7)
    blocked = ranks(images, texts, text_image)
    assert [a.tolist() for a in blocked] == [a.tolist() for a in whole]
    # Reference: the dense score matrix.
    scores = texts @ images.T
    own = scores[np.arange(100), text_image]
    assert whole[1].tolist() == (1 + (scores > own[:, None]).sum(axis=1)).tolist()
    best = np.array([own[text_image == i].max() if (text_image == i).any() else -np.inf for i in range(40)])
    assert whole[0].tolist() == (1 + (scores > best[None, :]).sum(axis=0)).tolist()


def _frame(image_ranks: list[int], text_ranks: list[list[int]]) -> pl.DataFrame:
    n = len(image_ranks)
    return pl.DataFrame(
        {
            "key": [f"k{i}" for i in range(n)],
            "shard": ["s"] * n,
            "gold": [None] * n,
            "captions": [["c"] * len(r) for r in text_ranks],
            "image_to_text_rank": image_ranks,
            "text_to_image_ranks": text_ranks,
        },
        schema=OUTPUT_SCHEMA,
    )


def test_recalls_are_over_queries_of_each_direction() -> None:
    frame = _frame([1, 3, 12, 6], [[1, 2, 1], [7], [11, 1], [5, 5, 20, 2]])
    values = {name: value.value for name, value in metrics(frame, "mean_recall@1", seed=0).items()}
    assert values == pytest.approx(
        {
            "mean_recall@1": (1 / 4 + 3 / 10) / 2,
            "image_to_text_recall@1": 1 / 4,
            "text_to_image_recall@1": 3 / 10,  # over the 10 captions, not the 4 images
            "image_to_text_recall@5": 2 / 4,
            "text_to_image_recall@5": 7 / 10,
            "image_to_text_recall@10": 3 / 4,
            "text_to_image_recall@10": 8 / 10,
        }
    )
    assert next(iter(values)) == "mean_recall@1"


def test_pooled_rate_of_single_queries_is_the_accuracy_with_its_stderr() -> None:
    hits = np.random.default_rng(1).random(200) < 0.3
    pooled = pooled_rates_with_stderr([(hits, np.ones(200))], seed=5)
    plain = accuracy_with_stderr(hits, seed=5)
    assert pooled.value == pytest.approx(plain.value)
    assert pooled.stderr == pytest.approx(plain.stderr)


def test_pooled_rates_resample_whole_samples() -> None:
    rng = np.random.default_rng(2)
    counts = rng.integers(1, 6, 50)
    hits = rng.binomial(counts, 0.4)
    single = rng.random(50) < 0.5
    value = pooled_rates_with_stderr([(single, np.ones(50)), (hits, counts)], seed=3)
    assert value.value == pytest.approx((single.mean() + hits.sum() / counts.sum()) / 2)

    def statistic(rows: np.ndarray) -> float:
        return float((single[rows].mean() + hits[rows].sum() / counts[rows].sum()) / 2)

    assert value.stderr == pytest.approx(bootstrap_stderr(statistic, 50, seed=3))


def test_pooled_rates_refuse_parts_without_queries_or_of_other_lengths() -> None:
    with pytest.raises(ValueError, match="holds no query"):
        pooled_rates_with_stderr([(np.zeros(3), np.zeros(3))], seed=0)
    with pytest.raises(ValueError, match="one entry per sample"):
        pooled_rates_with_stderr([(np.ones(3), np.ones(3)), (np.ones(2), np.ones(2))], seed=0)


def test_score_ranks_the_committed_embeddings_in_key_order() -> None:
    batch = RetrievalBatchResult(
        keys=["a", "b"],
        shards=["t/0.tar", "t/0.tar"],
        captions=[["first", "second"], ["third"]],
        image_embeddings=_unit(0, 90),
        text_embeddings=[_unit(80, 10), _unit(85)],
    )
    task = RetrievalTask("bench", "bench")
    scored = kind.score(task, kind.variant_type("retrieval", "m"), batch.frame(), 0)
    frame = scored.frame
    assert frame.schema == pl.Schema(OUTPUT_SCHEMA)
    assert frame["image_to_text_rank"].to_list() == [1, 1]
    assert frame["text_to_image_ranks"].to_list() == [[2, 1], [1]]
    assert frame["captions"].to_list() == [["first", "second"], ["third"]]
    assert frame["gold"].null_count() == 2
    assert scored.metrics["m"].value == pytest.approx((1 + 2 / 3) / 2)


def test_a_retrieval_variant_takes_no_classes() -> None:
    variant = kind.variant_type("retrieval", "mean_recall@1")
    assert kind.check_variant(variant, 0) == []
    ((key, message),) = kind.check_variant(variant, 3)
    assert key == "kind" and "ranks captions, not classes" in message
