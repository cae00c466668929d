"""Committed chunks: atomic, numbered, reused only by the same identity, cleaned of half-written files."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import polars as pl
import pytest

from mill.core.backend import ModelInfo
from mill.core.chunks import RUNS_DIR, ChunkStore, journal_path
from mill.core.errors import ResultsError
from mill.core.kinds import generative_mcq, zero_shot
from mill.core.kinds.generative_mcq import McqBatchResult
from mill.core.kinds.zero_shot import ZeroShotBatchResult
from mill.core.run_identity import RunIdentity
from mill.core.task_kind import raw_schema

RAW_ZERO_SHOT_SCHEMA = raw_schema(zero_shot.kind)
RAW_MCQ_SCHEMA = raw_schema(generative_mcq.kind)


def skipped_row(key: str, shard: str, reason: str) -> pl.DataFrame:
    return pl.DataFrame({"key": [key], "shard": [shard], "skipped": [reason]})


def _identity(seed: int = 42) -> RunIdentity:
    info = ModelInfo(identity="m", settings={"precision": "fp32"}, resolved_args={"path": "m"})
    return RunIdentity.of(
        info,
        settings=info.settings,
        versions={},
        benchmark="b",
        spec_hash="h",
        variant="b",
        seed=seed,
        limit=None,
        shards=[("test/0.tar", 10, None)],
    )


ZS = ZeroShotBatchResult(keys=["b", "a"], shards=["0.tar", "0.tar"], golds=[1, 0], topk=[[1, 2], [2, 0]])


def test_commit_then_reopen_reads_the_union_sorted_by_key(tmp_path: Path) -> None:
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA) as store:
        first = store.commit(ZS.frame())
        second = store.commit(skipped_row("c", "1.tar", "cannot decode"))
        run_id = store.run_id
    assert [first.name, second.name] == ["chunk-00000.parquet", "chunk-00001.parquet"]
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA) as store:
        assert store.run_id == run_id
        assert store.done_keys(skipped=True) == {"a", "b", "c"}
        frame = store.read().sort("key")
        assert store.commit(ZS.frame()).name == "chunk-00002.parquet"
    assert frame["key"].to_list() == ["a", "b", "c"]
    done = frame.filter(pl.col("skipped").is_null())
    assert (done["key"].to_list(), done["topk"].to_list()) == (["a", "b"], [[2, 0], [1, 2]])


def test_skipped_samples_count_as_done_only_when_skipping(tmp_path: Path) -> None:
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA) as store:
        store.commit(pl.concat([ZS.frame()[:1], skipped_row("a", "0.tar", "cannot decode")], how="diagonal_relaxed"))
        assert store.done_keys(skipped=True) == {"a", "b"}
        assert store.done_keys(skipped=False) == {"b"}
        # Evaluated again once readable (a run that fails on bad samples retries them): the result wins.
        store.commit(ZS.frame()[1:])
        frame = store.read().sort("key")
    assert frame["key"].to_list() == ["a", "b"]
    assert frame["skipped"].to_list() == [None, None]


def test_mcq_rows_round_trip(tmp_path: Path) -> None:
    batch = McqBatchResult(keys=["k"], shards=["0.tar"], golds=[3], prompts=["Which?"], responses=["B"])
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_MCQ_SCHEMA) as store:
        store.commit(batch.frame())
        read = store.read()
    assert read.drop("skipped", "batch_size").to_dicts() == batch.frame().to_dicts()
    assert read["skipped"].to_list() == [None]


def test_another_identity_gets_another_directory(tmp_path: Path) -> None:
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA) as store:
        store.commit(ZS.frame())
    with ChunkStore.open(tmp_path, _identity(seed=1), schema=RAW_ZERO_SHOT_SCHEMA) as other:
        assert other.done_keys(skipped=True) == set()
    assert len(list((tmp_path / RUNS_DIR).iterdir())) == 2


def test_overwrite_forgets_committed_chunks_and_the_run_id(tmp_path: Path) -> None:
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA) as store:
        store.commit(ZS.frame())
        run_id = store.run_id
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA, overwrite=True) as store:
        assert store.done_keys(skipped=True) == set()
        assert store.run_id != run_id


def test_a_resumed_run_keeps_its_journals_and_an_overwrite_forgets_them(tmp_path: Path) -> None:
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA) as store:
        journals = [journal_path(store.path), journal_path(store.path, worker=1)]
        assert [p.name for p in journals] == ["journal.jsonl", "journal-r1.jsonl"]
        for journal in journals:
            journal.write_text('{"request": "x", "answer": {}}\n')
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA):
        assert all(journal.exists() for journal in journals)
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA, overwrite=True):
        assert not any(journal.exists() for journal in journals)


def test_half_written_chunk_is_ignored_and_removed(tmp_path: Path) -> None:
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA) as store:
        store.commit(ZS.frame())
        leftover = store.path / ".chunk-00001.parquet.x1y2.tmp"
    leftover.write_bytes(b"PAR1 cut short")
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA) as store:
        assert not leftover.exists()
        assert store.done_keys(skipped=True) == {"a", "b"}


def test_run_record_of_another_identity_is_refused(tmp_path: Path) -> None:
    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA) as store:
        path = store.path
    # As if another identity had the same digest: the record is compared, not only the name.
    os.rename(path, tmp_path / RUNS_DIR / _identity(seed=1).digest())
    with (
        pytest.raises(ResultsError, match="records another run"),
        ChunkStore.open(tmp_path, _identity(seed=1), schema=RAW_ZERO_SHOT_SCHEMA),
    ):
        pass


def test_a_second_process_on_the_same_run_is_refused(tmp_path: Path) -> None:
    errors: list[str] = []

    def contender() -> None:
        try:
            with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA):
                pass
        except ResultsError as error:
            errors.append(str(error))

    with ChunkStore.open(tmp_path, _identity(), schema=RAW_ZERO_SHOT_SCHEMA):
        thread = threading.Thread(target=contender)
        thread.start()
        thread.join()
    assert len(errors) == 1 and "another mill eval is running this same run" in errors[0]


def test_output_dir_under_a_file_is_a_results_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with (
        pytest.raises(ResultsError, match=r"cannot create the output directory .*file.*--output_dir"),
        ChunkStore.open(tmp_path / "file" / "out", _identity(), schema=RAW_ZERO_SHOT_SCHEMA),
    ):
        pass
