"""Running a planned pair: load the model, answer the samples not yet committed, commit the raw answers every
``chunk_size`` samples, and hand the union to :mod:`mill.core.recording`.

A run commits its backend's raw answers every ``chunk_size`` samples (see :mod:`mill.core.chunks`), so a
crash, a pre-emption or Ctrl-C costs at most one chunk: the same run started again computes only what is
missing. Smaller chunks lose less work when a run is cut and cost a little more I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import polars as pl
from attrs import evolve

from mill.core.backend import Backend, BatchSizedBackend, JournallingBackend, ResumableBackend, RunContext
from mill.core.batch_size import BATCH_SIZE_COLUMN
from mill.core.chunks import ChunkStore, MemoryChunkStore, committed_samples
from mill.core.collectives import Collectives, SingleProcess, rank_keys
from mill.core.environment import MILL_DISTRIBUTIONS, versions
from mill.core.errors import ResultsError, ResultsWriteError
from mill.core.model_loads import SharedLoad
from mill.core.planning import PlannedRun, RunOptions, load_backend
from mill.core.recording import Answered, RunResult, Store, record_run
from mill.core.results_dir import ResultsDir
from mill.core.run_identity import RunIdentity
from mill.core.sample import DataOpener, Dataset
from mill.core.specfile import spec_as_opened
from mill.core.task_kind import raw_schema


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run after its finished batches were committed; the message says how to resume."""


def execute(
    run: PlannedRun,
    options: RunOptions,
    context: RunContext,
    *,
    open_data: DataOpener,
    collectives: Collectives | None = None,
) -> RunResult | None:
    """Run one planned pair end to end and store its results (unless ``options.output_dir`` is None);
    returns what it produced on rank 0, None on the other ranks of a launch.

    Samples committed by an earlier, interrupted run with the same identity are not computed again.

    Raises:
        RunInterrupted: on Ctrl-C, after committing every finished batch.
        MillError: bad data, a backend that cannot serve the kind, an unwritable output directory.
    """
    world = collectives or SingleProcess()
    spec = run.spec
    # Before anything slow: a typo in --output_dir must not cost a model load.
    if options.output_dir is not None:
        ResultsDir(options.output_dir).ensure()
    seed = spec.seed if options.seed is None else options.seed
    data = open_data(spec, options.data_dirs.get(spec.name, options.default_data_dir), options.read_options())
    # Class names or templates read from the data export join the spec (and its hash: the run identity) here.
    run = evolve(run, spec=spec_as_opened(spec, data))
    spec = run.spec
    if options.limit is not None:
        context.progress.start(f"subset: {len(data)} of the samples, spread over all shards (--limit)", None)
        context.progress.finish()
    # A suite's later runs reuse the weights the first one loaded: say so rather than "loading" again.
    shared = run.plugin.plugin
    reusing = isinstance(shared, SharedLoad) and shared.holds_model
    context.progress.start(f"{'reusing the loaded' if reusing else 'loading'} {run.model.spec.text}", None)
    backend = load_backend(run, context)
    context.progress.finish()
    settings = {**backend.info.settings, **run.kind.settings(run.variant)}
    identity = _identity(run, options, backend, data, seed, settings)
    task = run.kind.build_task(spec, run.variant_name, run.variant, seed)
    is_main = world.rank == 0
    if not is_main:
        world.barrier()  # rank 0 prepares the run's directory first
    with (
        _naming_committed_samples(run, options, identity, len(data)),
        _open_store(options, identity, raw_schema(run.kind), world.rank) as store,
    ):
        if is_main:
            world.barrier()
        gathered = _answer(run, options, context, backend, task, data, store, world)
        if gathered is None:
            return None
        raw, n_computed = gathered
        return record_run(
            Answered(run, options, backend, task, data, raw, seed, settings, store, n_reused=len(data) - n_computed)
        )


def _identity(
    run: PlannedRun, options: RunOptions, backend: Backend, data: Dataset, seed: int, settings: Mapping[str, str]
) -> RunIdentity:
    # The identity is taken after loading: only the loaded model knows its weights' revision (a
    # checkpoint's hash, a hub commit) and its libraries; re-deriving them before the load would
    # duplicate every backend's resolution. A resumed run pays one model load, not the samples.
    return RunIdentity.of(
        backend.info,
        settings=settings,
        versions=versions([*MILL_DISTRIBUTIONS, *filter(None, [run.plugin.distribution])]),
        benchmark=run.spec.name,
        spec_hash=run.spec.content_hash,
        variant=run.variant_name,
        seed=seed,
        limit=options.limit,
        shards=[(s.name, s.size, s.sha256) for s in data.shards],
    )


def _answer(
    run: PlannedRun,
    options: RunOptions,
    context: RunContext,
    backend: Backend,
    task: Any,
    data: Dataset,
    store: Store,
    world: Collectives,
) -> tuple[pl.DataFrame, int] | None:
    """Answer this rank's uncommitted samples, then gather every rank's answers on rank 0: (the raw answers
    sorted by key, how many samples were computed now); None on the other ranks."""
    done = store.done_keys(skipped=options.on_bad_sample == "skip")
    mine = set(rank_keys(data.keys, world.rank, world.world_size))
    todo = [key for key in data.keys if key not in done and key in mine]
    if done:
        context.progress.start(f"resuming: {len(done)} of {len(data)} samples already committed")
        context.progress.finish()
    if isinstance(backend, ResumableBackend) and (previous := store.recorded_run_info()):
        backend.resume(previous)
    if isinstance(backend, JournallingBackend):
        backend.keep_journal(store.journal_file(world.rank))
    if todo:
        _Committer(run, backend, data.subset(todo), store, options.chunk_size).answer(task, n_total=len(data))
    # Every rank hands its part to rank 0, which scores the union: the same rows, sorted by key,
    # as a single process would have (and no shared filesystem is assumed between nodes).
    own = store.read().filter(pl.col("key").is_in(sorted(mine)))
    parts = world.gather((own, len(todo)))
    if parts is None:
        return None
    raw = pl.concat([frame for frame, _ in parts]).sort("key")
    return raw, sum(count for _, count in parts)


@contextmanager
def _open_store(options: RunOptions, identity: RunIdentity, schema: Mapping[str, Any], rank: int) -> Iterator[Store]:
    """The run's committed chunks: on disk under the output directory (locked), or in memory without one."""
    if options.output_dir is None:
        yield MemoryChunkStore(schema)
        return
    with ChunkStore.open(
        options.output_dir, identity, schema=schema, overwrite=options.overwrite and rank == 0, worker=rank
    ) as store:
        yield store


@contextmanager
def _naming_committed_samples(
    run: PlannedRun, options: RunOptions, identity: RunIdentity, n_total: int
) -> Iterator[None]:
    """A results write that fails (a full disk) ends the run, saying how much of it is committed."""
    try:
        yield
    except ResultsWriteError as exc:
        if options.output_dir is None:
            raise
        run_dir = ResultsDir(options.output_dir).run_dir(identity.digest()).path
        raise ResultsError(
            f"{exc}; {committed_samples(run_dir)} of {n_total} samples of {run.model.spec.text} on "
            f"{run.variant_name} are committed in {run_dir}; free space there (or choose another "
            "--output_dir) and re-run the same command to continue from there"
        ) from None


class _Committer:
    """Answers a run's samples and commits them to its store every ``chunk_size`` samples."""

    def __init__(self, run: PlannedRun, backend: Backend, data: Dataset, store: Store, chunk_size: int) -> None:
        self.run, self.backend, self.data, self.store, self.chunk_size = run, backend, data, store, chunk_size
        self.pending: list[pl.DataFrame] = []
        self.n_pending = 0
        self.n_skipped_committed = 0
        self.recorded: dict[str, Any] = {}

    def answer(self, task: Any, *, n_total: int) -> None:
        """Answer ``task`` on the data and commit the raw answers, whatever stops the run (but a failed commit).

        Raises:
            RunInterrupted: on Ctrl-C, once the finished batches are committed.
        """
        try:
            for frame in self.run.kind.answer(self.backend, task, self.data):
                self.pending.append(self._with_batch_sizes(frame))
                self.n_pending += len(frame)
                if self.n_pending >= self.chunk_size:
                    self.commit()
            self.commit()
        except ResultsWriteError:
            raise  # the commit itself failed: writing more would fail the same way
        except Exception:
            self.commit()  # finished batches are good whatever stopped the run (a bad image, a backend's fault)
            raise
        except KeyboardInterrupt:
            self.commit()
            raise self._interrupted(n_total) from None

    def _with_batch_sizes(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with the size of the batch that computed each sample (null when the backend does not say)."""
        if not isinstance(self.backend, BatchSizedBackend):
            return frame
        sizes = self.backend.batch_sizes(frame["key"].to_list())
        return frame.with_columns(pl.Series(BATCH_SIZE_COLUMN, sizes, dtype=pl.Int64))

    def commit(self) -> None:
        # Taken off the queue before writing: if the write is cut short, these samples are simply
        # computed again by the next run, never committed twice.
        frames, self.pending, self.n_pending = self.pending, [], 0
        skipped = list(self.data.skipped[self.n_skipped_committed :])
        self.n_skipped_committed += len(skipped)
        if skipped:
            frames.append(
                pl.DataFrame(
                    {
                        "key": [s.key for s in skipped],
                        "shard": [s.shard for s in skipped],
                        "skipped": [s.reason for s in skipped],
                    },
                    schema={"key": pl.String, "shard": pl.String, "skipped": pl.String},
                )
            )
        if frames:
            self.store.commit(pl.concat(frames, how="diagonal_relaxed"))
        # After the chunk: what a resumed run starts from (a reduced batch size) must not outrun the work.
        if isinstance(self.backend, ResumableBackend) and (info := dict(self.backend.run_info())) != self.recorded:
            self.store.record_run_info(info)
            self.recorded = info

    def _interrupted(self, n_total: int) -> RunInterrupted:
        n_done = len(self.store.done_keys(skipped=True))
        what = f"{n_done} of {n_total} samples of {self.run.model.spec.text} on {self.run.variant_name}"
        if self.store.path is None:
            return RunInterrupted(
                f"interrupted: {what} were evaluated and are not kept (no output directory); give one to make a "
                "run resumable"
            )
        return RunInterrupted(
            f"interrupted: {what} are committed in {self.store.path}; re-run the same command to continue from there"
        )
