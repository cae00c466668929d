"""The out-of-memory fall-back's notes of which slice size computed each item, and the per-sample column they
become (issue 21: under bf16 autocast a sample's result may depend on its batch's size)."""

from __future__ import annotations

import polars as pl
import pytest

from mill.core.batch_size import AdaptiveBatchSize, counts_by_batch_size, keep_batch_sizes


def test_each_key_is_noted_with_the_size_of_the_slice_that_computed_it() -> None:
    batch = AdaptiveBatchSize(4)
    computed: list[tuple[int, int]] = []

    def compute(start: int, stop: int) -> int:
        if stop - start > 2 and computed:  # the second slice of 4 runs out of memory
            raise RuntimeError("CUDA out of memory")
        computed.append((start, stop))
        return stop - start

    keys = [f"k{i}" for i in range(9)]
    assert batch.map(9, compute, keys=keys) == [4, 2, 2, 1]
    assert batch.take_sizes(["k8", "k0", "k5", "k4", "unknown"]) == [1, 4, 2, 2, None]
    assert batch.take_sizes(["k0"]) == [None]  # taken once
    assert batch.take_sizes(["k1", "k2", "k3", "k6", "k7"]) == [4, 4, 4, 2, 2]


def test_items_computed_without_keys_are_taken_in_order() -> None:
    batch = AdaptiveBatchSize(2)
    batch.map(3, lambda start, stop: stop - start)
    batch.map(2, lambda start, stop: stop - start, keys=["x", "y"])
    assert batch.take_sizes(["a", "x", "b", "c", "d"]) == [2, 2, 2, 1, None]


@pytest.mark.parametrize(
    ("column", "expected"),
    [([4, 4, 2, None], {4: 2, 2: 1}), ([None, None], None)],
    ids=["counted", "all-null"],
)
def test_counts_by_batch_size(column: list[int | None], expected: dict[int, int] | None) -> None:
    frame = pl.DataFrame(
        {"key": [str(i) for i in range(len(column))], "batch_size": column}, schema_overrides={"batch_size": pl.Int64}
    )
    assert counts_by_batch_size(frame) == expected
    assert counts_by_batch_size(frame.drop("batch_size")) is None  # a file written before the column


def test_keep_batch_sizes_joins_by_key_and_leaves_old_files_alone() -> None:
    source = pl.DataFrame({"key": ["b", "a"], "answer": [1, 2], "batch_size": [2, 4]})
    scored = pl.DataFrame({"key": ["a", "b"], "correct": [True, False]})
    kept = keep_batch_sizes(scored, source)
    assert kept.columns == ["key", "correct", "batch_size"]
    assert kept["batch_size"].to_list() == [4, 2]
    assert keep_batch_sizes(scored, source.drop("batch_size")).equals(scored)
