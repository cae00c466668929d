"""The evaluation engine: plan every model × benchmark pair up front, then run each one with chunked commits,
score it once, and store its per-sample file, manifest and aggregate rows.

A run commits its backend's raw answers every ``chunk_size`` samples (see :mod:`mill.core.chunks`), so a
crash, a pre-emption or Ctrl-C costs at most one chunk: the same run started again computes only what is
missing. Smaller chunks lose less work when a run is cut and cost a little more I/O.

The engine imports no ML framework. What needs one is handed in by the caller: the data opener (mill-data),
the loaded backend (through its plugin), and the collectives of a distributed launch (torch.distributed).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import polars as pl
from attrs import evolve, field, frozen

from mill.core.atomic import write_json_atomic
from mill.core.backend import (
    Backend,
    BackendPlugin,
    Capabilities,
    JournallingBackend,
    ResumableBackend,
    RunContext,
)
from mill.core.checksum import with_manifest_digest
from mill.core.chunks import RUNS_DIR, ChunkStore, MemoryChunkStore, committed_samples, journal_path
from mill.core.convert import CONVERTER
from mill.core.errors import (
    BackendArgumentError,
    CapabilityError,
    DamagedResultsError,
    DataError,
    ResultsError,
    ResultsWriteError,
)
from mill.core.metrics import MetricValue
from mill.core.model_spec import ModelSpec, parse_model_spec
from mill.core.plugins import LoadedPlugin, ResolvedModel, load_plugin, resolve_model
from mill.core.registry import SpecRegistry
from mill.core.results import (
    AggregateRow,
    RunFacts,
    ensure_output_dir,
    per_sample_path,
    run_rows,
    run_stem,
    settings_digest,
    upsert_aggregate,
    write_per_sample,
)
from mill.core.run_identity import RunIdentity
from mill.core.sample import DataOpener, Dataset, OnBadSample, ReadOptions
from mill.core.spec import Spec
from mill.core.specfile import spec_as_opened
from mill.core.task_kind import Scored, TaskKind, Variant, get_kind, installed_kinds, raw_schema, scorer_version

#: Samples per committed chunk unless ``MILL_CHUNK_SIZE`` says otherwise.
DEFAULT_CHUNK_SIZE = 1024
CHUNK_SIZE_ENV = "MILL_CHUNK_SIZE"
#: Mill's own distributions, whose versions enter every run's identity (those installed).
MILL_DISTRIBUTIONS = ("mill-core", "mill-data", "mill-cli")

T = TypeVar("T")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run after its finished batches were committed; the message says how to resume."""


@frozen
class PlannedRun:
    """One model × benchmark pair, validated: the variant to run and its kind are settled."""

    model: ResolvedModel
    plugin: LoadedPlugin
    spec: Spec
    variant_name: str
    variant: Variant
    kind: TaskKind
    #: Whether this is the variant the model gets by default (the first it can serve): only that one's
    #: headline metric becomes the benchmark's rollup row, so another rendering (a letter-likelihood
    #: variant next to a generative one) never stands in for it.
    rolls_up: bool = True


@frozen
class RunResult:
    """What one finished run produced: its aggregate rows, per-sample frame (the per-sample file's columns),
    metrics and manifest. ``per_sample_file`` is None when nothing was written (``output_dir=None``)."""

    run: PlannedRun
    rows: Sequence[AggregateRow]
    samples: pl.DataFrame
    metrics: Mapping[str, MetricValue]
    manifest: Mapping[str, Any]
    per_sample_file: Path | None


@frozen
class RunOptions:
    """Settings that apply to every run of one evaluation. ``output_dir`` None keeps nothing on disk:
    no results, no committed chunks, no lock (a training loop's evaluation)."""

    output_dir: Path | None
    cache_dir: Path | None
    seed: int | None = None
    limit: int | None = None
    data_dirs: Mapping[str, str] = field(factory=dict)
    default_data_dir: str | None = None
    allow_incomplete: bool = False
    command_line: str = ""
    on_bad_sample: OnBadSample = "fail"
    overwrite: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def read_options(self) -> ReadOptions:
        return ReadOptions(
            limit=self.limit,
            allow_incomplete=self.allow_incomplete,
            cache_dir=self.cache_dir,
            on_bad_sample=self.on_bad_sample,
        )


class Collectives(Protocol):
    """What a data-parallel launch lends the engine: this process's rank, and the two collectives it uses."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    def barrier(self) -> None: ...

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's ``obj`` in rank order on rank 0; None on the other ranks."""
        ...


@frozen
class SingleProcess:
    """The collectives of a run that is not part of a launch: one rank, nothing to wait for."""

    rank: int = 0
    world_size: int = 1

    def barrier(self) -> None:
        pass

    def gather(self, obj: T) -> list[T] | None:
        return [obj]


def pick_variant(spec: Spec, requested: str | None, capabilities: Capabilities, model_text: str) -> str:
    """The requested variant, or the first the model can serve in declaration order.

    Raises:
        CapabilityError: saying what each variant needs and what the model serves.
    """
    candidates = [requested] if requested else list(spec.variants)
    for name in candidates:
        if capabilities.serves(spec.variants[name].kind):
            return name
    needs = "; ".join(f"{name} needs {v.kind}" for name, v in spec.variants.items() if name in candidates)
    served = ", ".join(sorted(capabilities.kinds)) or "nothing"
    inputs = ", ".join(sorted(capabilities.modalities))
    problem = f"model {model_text!r} serves {served} (inputs: {inputs}), but {needs}"
    # A variant of the same benchmark that the model can serve (a hosted model asked for letter likelihood).
    instead = [name for name, v in spec.variants.items() if capabilities.serves(v.kind)]
    alternative = f"; it can be evaluated on {' or '.join(instead)} instead" if instead else ""
    raise CapabilityError(
        f"{problem}{alternative}. Use a CLIP model (clip[...]) for zero_shot and retrieval variants, a supervised "
        "classifier (timm, torchvision, hf_classifier) for classification variants and a vision-language model (hf, "
        "vllm, or openai for a served one) for multiple-choice variants (generative_mcq, likelihood_mcq)."
    )


def check_label_space(spec: Spec, capabilities: Capabilities, model_text: str) -> None:
    """Refuse a classifier whose head scores another number of classes than ``spec``'s classifiers must.

    Raises:
        CapabilityError: naming both counts.
    """
    n_outputs = capabilities.n_outputs
    if n_outputs is None or n_outputs == spec.n_outputs:
        return
    raise CapabilityError(
        f"model {model_text!r} scores {n_outputs} classes, but {spec.name} is scored over {spec.n_outputs} "
        f"(its classes{' and their parent list' if spec.parent_count is not None else ''}); a classifier "
        "trained on another label space cannot be evaluated on it: use a model with a matching head"
    )


ModelRef = str | BackendPlugin | Backend
"""What names a model: a model-spec string (or TOML model file), a plugin object (such as an in-memory
model's, which builds its backend when the run starts), or an already loaded backend."""


@frozen
class _Preloaded:
    """A plugin for a backend object loaded by the caller: it serves the kinds whose protocols it implements."""

    backend: Backend

    def capabilities(self, args: Mapping[str, Any]) -> Capabilities:
        del args
        kinds = {name for name, kind in installed_kinds().items() if isinstance(self.backend, kind.backend_protocol)}
        return Capabilities(kinds=frozenset(kinds))

    def load(self, args: Mapping[str, Any], context: RunContext) -> Backend:
        del args, context
        return self.backend


def resolve_model_ref(model: ModelRef) -> tuple[ResolvedModel, LoadedPlugin]:
    """The backend that serves ``model`` and the arguments it gets.

    Raises:
        UnknownBackendError, ModelSpecError: for a model-spec string that names no installed backend.
    """
    if isinstance(model, str):
        resolved = resolve_model(parse_model_spec(model))
        return resolved, load_plugin(resolved.backend)
    plugin: BackendPlugin = model if isinstance(model, BackendPlugin) else _Preloaded(model)
    name = str(getattr(model, "name", type(model).__name__))
    distribution = getattr(model, "distribution", None)
    resolved = ResolvedModel(name, {}, ModelSpec(head=name, text=name))
    return resolved, LoadedPlugin(name, plugin, distribution if isinstance(distribution, str) else None)


def plan_runs(models: Sequence[ModelRef], benchmarks: Sequence[str], registry: SpecRegistry) -> list[PlannedRun]:
    """Validate every pair before anything runs; the first invalid pair raises."""
    selections = [registry.select(benchmark) for benchmark in benchmarks]
    planned = []
    for model_ref in models:
        model, plugin = resolve_model_ref(model_ref)
        capabilities = plugin.plugin.capabilities(model.args)
        for selection in selections:
            name = pick_variant(selection.spec, selection.variant, capabilities, model.spec.text)
            check_label_space(selection.spec, capabilities, model.spec.text)
            variant = selection.spec.variants[name]
            default = pick_variant(selection.spec, None, capabilities, model.spec.text)
            kind = get_kind(variant.kind)
            planned.append(PlannedRun(model, plugin, selection.spec, name, variant, kind, rolls_up=name == default))
    return planned


def rank_keys(keys: Sequence[str], rank: int, world_size: int) -> list[str]:
    """The keys rank ``rank`` of ``world_size`` evaluates: every ``world_size``-th of the sorted keys.

    Pure and independent of the order of ``keys``, so every rank computes the same split; the ranks'
    parts are disjoint, cover ``keys``, and differ in size by at most one. Striding (rather than
    contiguous blocks) spreads the class-ordered shards' classes, and their cost, evenly over the ranks.

    Raises:
        ValueError: ``rank`` is not in ``[0, world_size)``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return sorted(keys)[rank::world_size]


def versions(names: Sequence[str]) -> dict[str, str]:
    """The installed version of each distribution in ``names``; those not installed are left out."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def load_backend(run: PlannedRun, context: RunContext) -> Backend:
    """Load ``run``'s model and check it implements what its kind asks of a backend.

    Raises:
        BackendArgumentError: naming the plugin whose loaded backend fails the kind's protocol.
    """
    backend: Backend = run.plugin.plugin.load(run.model.args, context)
    protocol = run.kind.backend_protocol
    if not isinstance(backend, protocol):
        raise BackendArgumentError(
            f"backend {run.plugin.name!r} (from {run.plugin.distribution or 'an unknown distribution'}) declares "
            f"that it serves {run.kind.name}, but its loaded model does not implement {protocol.__name__}; "
            "see docs/backends.md for the methods each task kind needs"
        )
    return cast(Backend, backend)  # isinstance against a protocol object narrows to Any


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
    spec, variant = run.spec, run.variant
    # Before anything slow: a typo in --output_dir must not cost a model load.
    if options.output_dir is not None:
        ensure_output_dir(options.output_dir)
    seed = spec.seed if options.seed is None else options.seed
    data = open_data(spec, options.data_dirs.get(spec.name, options.default_data_dir), options.read_options())
    # Class names or templates read from the data export join the spec (and its hash: the run identity) here.
    run = evolve(run, spec=spec_as_opened(spec, data))
    spec = run.spec
    if options.limit is not None:
        context.progress.start(f"subset: {len(data)} of the samples, spread over all shards (--limit)", None)
        context.progress.finish()
    context.progress.start(f"loading {run.model.spec.text}", None)
    backend = load_backend(run, context)
    context.progress.finish()
    info = backend.info
    settings = {**info.settings, **run.kind.settings(variant)}
    # The identity is taken after loading: only the loaded model knows its weights' revision (a
    # checkpoint's hash, a hub commit) and its libraries; re-deriving them before the load would
    # duplicate every backend's resolution. A resumed run pays one model load, not the samples.
    identity = RunIdentity.of(
        info,
        settings=settings,
        versions=versions([*MILL_DISTRIBUTIONS, *filter(None, [run.plugin.distribution])]),
        benchmark=spec.name,
        spec_hash=spec.content_hash,
        variant=run.variant_name,
        seed=seed,
        limit=options.limit,
        shards=[(s.name, s.size, s.sha256) for s in data.shards],
    )
    task = run.kind.build_task(spec, run.variant_name, variant, seed)
    is_main = world.rank == 0
    if not is_main:
        world.barrier()  # rank 0 prepares the run's directory first
    with (
        _naming_committed_samples(run, options, identity, len(data)),
        _open_store(options, identity, raw_schema(run.kind), world.rank) as store,
    ):
        if is_main:
            world.barrier()
        done = store.done_keys(skipped=options.on_bad_sample == "skip")
        mine = set(rank_keys(data.keys, world.rank, world.world_size))
        todo = [key for key in data.keys if key not in done and key in mine]
        if done:
            context.progress.start(f"resuming: {len(done)} of {len(data)} samples already committed")
            context.progress.finish()
        if isinstance(backend, ResumableBackend) and (previous := store.recorded_run_info()):
            backend.resume(previous)
        if isinstance(backend, JournallingBackend):
            backend.keep_journal(None if store.path is None else journal_path(store.path, world.rank))
        if todo:
            _commit_answers(run, backend, task, data.subset(todo), store, options.chunk_size, n_total=len(data))
        # Every rank hands its part to rank 0, which scores the union: the same rows, sorted by key,
        # as a single process would have (and no shared filesystem is assumed between nodes).
        own = store.read().filter(pl.col("key").is_in(sorted(mine)))
        parts = world.gather((own, len(todo)))
        if parts is None:
            return None
        raw = pl.concat([frame for frame, _ in parts]).sort("key")
        n_computed = sum(count for _, count in parts)
        return _finish(run, options, backend, task, data, raw, seed, settings, store, n_reused=len(data) - n_computed)


Store = ChunkStore | MemoryChunkStore


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
        run_dir = options.output_dir / RUNS_DIR / identity.digest()
        raise ResultsError(
            f"{exc}; {committed_samples(run_dir)} of {n_total} samples of {run.model.spec.text} on "
            f"{run.variant_name} are committed in {run_dir}; free space there (or choose another "
            "--output_dir) and re-run the same command to continue from there"
        ) from None


def _commit_answers(
    run: PlannedRun,
    backend: Backend,
    task: Any,
    data: Dataset,
    store: Store,
    chunk_size: int,
    *,
    n_total: int,
) -> None:
    """Answer ``task`` on ``data`` and commit the raw answers to ``store`` every ``chunk_size`` samples."""
    pending: list[pl.DataFrame] = []
    n_pending = 0
    n_skipped_committed = 0
    recorded: dict[str, Any] = {}

    def commit() -> None:
        nonlocal pending, n_pending, n_skipped_committed, recorded
        # Taken off the queue before writing: if the write is cut short, these samples are simply
        # computed again by the next run, never committed twice.
        frames, pending, n_pending = pending, [], 0
        skipped = list(data.skipped[n_skipped_committed:])
        n_skipped_committed += len(skipped)
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
            store.commit(pl.concat(frames, how="diagonal_relaxed"))
        # After the chunk: what a resumed run starts from (a reduced batch size) must not outrun the work.
        if isinstance(backend, ResumableBackend) and (info := dict(backend.run_info())) != recorded:
            store.record_run_info(info)
            recorded = info

    try:
        for frame in run.kind.answer(backend, task, data):
            pending.append(frame)
            n_pending += len(frame)
            if n_pending >= chunk_size:
                commit()
        commit()
    except ResultsWriteError:
        raise  # the commit itself failed: writing more would fail the same way
    except Exception:
        commit()  # finished batches are good whatever stopped the run (a bad image, a backend's fault)
        raise
    except KeyboardInterrupt:
        commit()
        n_done = len(store.done_keys(skipped=True))
        if store.path is None:
            raise RunInterrupted(
                f"interrupted: {n_done} of {n_total} samples of {run.model.spec.text} on {run.variant_name} were "
                "evaluated and are not kept (no output directory); give one to make a run resumable"
            ) from None
        raise RunInterrupted(
            f"interrupted: {n_done} of {n_total} samples of {run.model.spec.text} on {run.variant_name} are "
            f"committed in {store.path}; re-run the same command to continue from there"
        ) from None


def _finish(
    run: PlannedRun,
    options: RunOptions,
    backend: Backend,
    task: Any,
    data: Dataset,
    raw: pl.DataFrame,
    seed: int,
    settings: Mapping[str, str],
    store: Store,
    *,
    n_reused: int,
) -> RunResult:
    """Score the union of a run's committed chunks once and write its per-sample file, manifest and rows."""
    spec, info = run.spec, backend.info
    missing = set(data.keys) - set(raw["key"].to_list())
    if missing:
        raise RuntimeError(f"{len(missing)} samples were neither evaluated nor skipped, e.g. {sorted(missing)[:3]}")
    skipped = raw.filter(pl.col("skipped").is_not_null()).select("key", "shard", "skipped")
    if len(skipped) == len(raw):
        raise DataError(
            f"every one of the {len(raw)} samples from {data.source} was skipped as unreadable "
            f"(first: {skipped['skipped'][0]}); check the data"
        )
    scored = run.kind.score(task, run.variant, raw.filter(pl.col("skipped").is_null()).drop("skipped"), seed)
    digest = settings_digest(settings)
    stem = run_stem(
        run.variant_name,
        seed=seed,
        default_seed=spec.seed,
        limit=options.limit,
        settings=digest,
        default=info.default_settings,
    )
    out = options.output_dir
    parquet = None if out is None else per_sample_path(out, info.identity, stem)
    finished = dt.datetime.now(dt.timezone.utc)
    manifest = _manifest(run, options, backend, data, scored, skipped, seed, digest, store, n_reused, finished)
    if parquet is not None:
        per_sample_sha256 = write_per_sample(parquet, scored.frame)
        manifest = with_manifest_digest({**manifest, "per_sample_sha256": per_sample_sha256})
        manifest_file = parquet.with_suffix(".json")
        try:
            write_json_atomic(manifest_file, manifest)
        except OSError as exc:
            raise ResultsWriteError(manifest_file, exc) from None
    facts = RunFacts(
        model=info.identity,
        benchmark=spec.name,
        task_type=run.kind.name,
        n_samples=len(scored.frame),
        seed=seed,
        limit=options.limit,
        settings=digest,
        default_settings=info.default_settings,
        run_id=store.run_id,
        incomplete=bool(data.incomplete),
        n_skipped=len(skipped),
        output_file="" if parquet is None or out is None else str(parquet.relative_to(out)),
        finished_at=finished.isoformat(timespec="seconds"),
        scorer_version=scorer_version(run.kind),
    )
    headline = (run.variant.metric, spec.headline_metric) if run.rolls_up else None
    rows = run_rows(facts, run.variant_name, scored.metrics, headline)
    if out is not None:
        try:
            upsert_aggregate(out, rows)
        except DamagedResultsError as exc:
            raise DamagedResultsError(
                f"this run's results are written to {parquet} and its manifest, but not added to aggregate.csv: {exc}"
            ) from None
    return RunResult(run, rows, scored.frame, scored.metrics, manifest, parquet)


def _manifest(
    run: PlannedRun,
    options: RunOptions,
    backend: Backend,
    data: Dataset,
    scored: Scored,
    skipped: pl.DataFrame,
    seed: int,
    settings: str,
    store: Store,
    n_reused: int,
    finished: dt.datetime,
) -> dict[str, Any]:
    """The JSON manifest written beside a run's per-sample file: everything that produced its numbers."""
    spec, info = run.spec, backend.info
    return {
        "run_id": store.run_id,
        "command": options.command_line,
        "model_spec": run.model.spec.text,
        "backend": run.model.backend,
        "model": info.identity,
        "task_type": run.kind.name,
        "default_settings": info.default_settings,
        "resolved_args": dict(info.resolved_args),
        "model_revision": info.revision,
        "settings": settings,
        "benchmark": spec.name,
        "variant": run.variant_name,
        # The variant as scored (metric name, unparsed policy, ...): `mill rescore` grades with it again.
        "variant_config": CONVERTER.unstructure(run.variant),
        # What aggregate.csv's rows are rebuilt from (mill verify --rebuild): the variant's metric and
        # the benchmark metric its rollup row carries it under.
        "headline": {"metric": run.variant.metric, "benchmark_metric": spec.headline_metric},
        "spec_file": str(spec.path),
        "spec_hash": spec.content_hash,
        "seed": seed,
        "limit": options.limit,
        "data_source": data.source,
        "shards": [{"name": s.name, "size": s.size, "sha256": s.sha256} for s in data.shards],
        "incomplete": bool(data.incomplete),
        "n_samples": len(scored.frame),
        "n_skipped": len(skipped),
        "on_bad_sample": options.on_bad_sample,
        "skipped": skipped.rename({"skipped": "reason"}).to_dicts(),
        "run_dir": None
        if store.path is None or options.output_dir is None
        else str(store.path.relative_to(options.output_dir)),
        "n_reused": n_reused,
        "versions": {
            "python": platform.python_version(),
            **versions([*MILL_DISTRIBUTIONS, "torch", "polars"]),
            **dict(info.library_versions),
            "cuda": info.cuda_version,
        },
        "device_type": info.device_type,
        "run_info": dict(backend.run_info()),
        "started_at": store.started_at,
        "finished_at": finished.isoformat(),
        "metrics": {name: {"value": m.value, "stderr": m.stderr} for name, m in scored.metrics.items()},
        # Out of the run's identity: a parser change re-grades stored answers (`mill rescore`), not the run.
        "scorer_version": scorer_version(run.kind),
    }


def chunk_size_from_env(env: Mapping[str, str] = os.environ) -> int:
    """``$MILL_CHUNK_SIZE`` samples per committed chunk, else :data:`DEFAULT_CHUNK_SIZE`.

    Raises:
        ResultsError: the variable is set to something other than a positive integer.
    """
    text = env.get(CHUNK_SIZE_ENV, "").strip()
    if not text:
        return DEFAULT_CHUNK_SIZE
    if not text.isdigit() or int(text) == 0:
        raise ResultsError(f"{CHUNK_SIZE_ENV}={text!r}: expected a positive number of samples per chunk")
    return int(text)


def default_output_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("MILL_OUTPUT_DIR", "mill_results"))


def default_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("MILL_CACHE_DIR", str(Path.home() / ".cache" / "mill")))
