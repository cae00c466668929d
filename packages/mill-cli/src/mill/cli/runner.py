"""Planning and running evaluations: every model × benchmark pair is validated up front
(backend installed, variant servable, spec valid), then each is run and its results stored.

A run commits its raw per-sample results every ``MILL_CHUNK_SIZE`` samples (default
:data:`DEFAULT_CHUNK_SIZE`), so that a crash, a pre-emption or Ctrl-C costs at most one chunk: the
same command run again computes only what is missing. Smaller chunks lose less work when a run is
cut and cost a little more I/O.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import polars as pl
from attrs import frozen

from mill.cli import distributed
from mill.core.backend import BackendPlugin, Capabilities, RunContext
from mill.core.chunks import (
    RAW_MCQ_SCHEMA,
    RAW_ZERO_SHOT_SCHEMA,
    ChunkStore,
    mcq_batch,
    raw_rows,
    skipped_row,
    zero_shot_batch,
)
from mill.core.errors import CapabilityError, DataError, ResultsError
from mill.core.mcq import make_question_fn
from mill.core.model_spec import parse_model_spec, split_top_level
from mill.core.plugins import ResolvedModel, load_plugin, resolve_model
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
    write_json_atomic,
    write_per_sample,
)
from mill.core.run_identity import RunIdentity
from mill.core.scoring import Scored, score_mcq, score_zero_shot
from mill.core.spec import McqVariant, Spec, Variant
from mill.core.task import McqTask, VariantKind, ZeroShotTask
from mill.data import ShardDataset, choose_source, open_dataset
from mill.data.dataset import OnBadSample

#: Samples per committed chunk unless ``MILL_CHUNK_SIZE`` says otherwise.
DEFAULT_CHUNK_SIZE = 1024
CHUNK_SIZE_ENV = "MILL_CHUNK_SIZE"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run after its finished batches were committed; the message says how to resume."""


@frozen
class PlannedRun:
    """One model × benchmark pair, validated: the variant to run is settled."""

    model: ResolvedModel
    plugin: BackendPlugin
    spec: Spec
    variant_name: str
    variant: Variant


@frozen
class RunOptions:
    """Flags that apply to every run of one ``mill eval`` command."""

    output_dir: Path
    cache_dir: Path
    seed: int | None
    limit: int | None
    data_dirs: Mapping[str, str]
    default_data_dir: str | None
    allow_incomplete: bool
    command_line: str
    on_bad_sample: OnBadSample = "fail"
    overwrite: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE


def pick_variant(spec: Spec, requested: str | None, capabilities: Capabilities, model_text: str) -> str:
    """The requested variant, or the first the model can serve in declaration order.

    Raises:
        CapabilityError: saying what each variant needs and what the model serves.
    """
    candidates = [requested] if requested else list(spec.variants)
    for name in candidates:
        if capabilities.serves(spec.variants[name].kind):
            return name
    needs = "; ".join(f"{name} needs {v.kind.value}" for name, v in spec.variants.items() if name in candidates)
    served = ", ".join(sorted(k.value for k in capabilities.kinds)) or "nothing"
    raise CapabilityError(
        f"model {model_text!r} serves {served} (inputs: {', '.join(sorted(capabilities.modalities))}), "
        f"but {needs}. Use a CLIP model (clip[...]) for zero_shot variants and a vision-language model "
        "(hf or vllm) for generative_mcq variants."
    )


def plan_runs(models: Sequence[str], benchmarks: Sequence[str], registry: SpecRegistry) -> list[PlannedRun]:
    """Validate every pair before anything runs; the first invalid pair raises."""
    selections = [registry.select(benchmark) for benchmark in benchmarks]
    planned = []
    for model_text in models:
        model = resolve_model(parse_model_spec(model_text))
        plugin = load_plugin(model.backend)
        capabilities = plugin.capabilities(model.args)
        for selection in selections:
            name = pick_variant(selection.spec, selection.variant, capabilities, model.spec.text)
            planned.append(PlannedRun(model, plugin, selection.spec, name, selection.spec.variants[name]))
    return planned


def parse_data_dirs(text: str | None) -> tuple[str | None, dict[str, str]]:
    """``DIR`` (one benchmark) or ``imagenet=DIR,other=DIR2`` (several)."""
    if not text:
        return None, {}
    if "=" not in text or "://" in text.split("=", 1)[0]:
        return text, {}
    pairs = {}
    for item in split_top_level(text):
        name, _, directory = item.partition("=")
        pairs[name.strip()] = directory.strip()
    return None, pairs


def _versions(names: Sequence[str]) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _cuda_version() -> str | None:
    try:
        import torch
    except ImportError:  # pragma: no cover - mill-data depends on torch
        return None
    return torch.version.cuda


def execute(run: PlannedRun, options: RunOptions, context: RunContext) -> list[AggregateRow]:
    """Run one planned pair end to end and store its results; returns the aggregate rows written.

    Per-sample results are committed in chunks as they come (see :mod:`mill.core.chunks`); samples
    committed by an earlier, interrupted run with the same identity are not computed again.

    Raises:
        RunInterrupted: on Ctrl-C, after committing every finished batch.
    """
    spec, variant = run.spec, run.variant
    # Before anything slow: a typo in --output_dir must not cost a model load.
    ensure_output_dir(options.output_dir)
    seed = spec.seed if options.seed is None else options.seed
    data_dir = options.data_dirs.get(spec.name, options.default_data_dir)
    source = choose_source(data_dir, spec.name, spec.dataset.source)
    data = open_dataset(
        source,
        split=spec.dataset.split,
        image_member=spec.dataset.image_member,
        label_member=spec.dataset.label_member,
        n_classes=len(spec.classnames),
        expected_count=spec.dataset.n_samples,
        limit=options.limit,
        allow_incomplete=options.allow_incomplete,
        cache_dir=options.cache_dir,
        benchmark=spec.name,
        on_bad_sample=options.on_bad_sample,
        label_map=spec.label_map,
    )
    if options.limit is not None:
        context.progress.start(f"subset: {len(data)} of the samples, spread over all shards (--limit)", None)
        context.progress.finish()
    context.progress.start(f"loading {run.model.spec.text}", None)
    backend = run.plugin.load(run.model.args, context)
    context.progress.finish()
    info = backend.info
    settings = dict(info.settings)
    if isinstance(variant, McqVariant):
        settings["max_new_tokens"] = str(variant.max_new_tokens)
    # The identity is taken after loading: only the loaded model knows its weights' revision (a
    # checkpoint's hash, a hub commit) and its libraries; re-deriving them before the load would
    # duplicate every backend's resolution. A resumed run pays one model load, not the samples.
    identity = RunIdentity.of(
        info,
        settings=settings,
        versions=_versions(["mill-core", "mill-data", "mill-cli", run.plugin.distribution]),
        benchmark=spec.name,
        spec_hash=spec.content_hash,
        variant=run.variant_name,
        seed=seed,
        limit=options.limit,
        shards=[(s.name, s.size) for s in data.shards],
    )
    schema = RAW_ZERO_SHOT_SCHEMA if variant.kind is VariantKind.ZERO_SHOT else RAW_MCQ_SCHEMA
    launch = distributed.world()
    if not launch.is_main:
        distributed.barrier()  # rank 0 prepares the run's directory first
    with ChunkStore.open(
        options.output_dir,
        identity,
        schema=schema,
        overwrite=options.overwrite and launch.is_main,
        worker=launch.rank,
    ) as store:
        if launch.is_main:
            distributed.barrier()
        done = store.done_keys(skipped=options.on_bad_sample == "skip")
        mine = set(distributed.rank_keys(data.keys, launch.rank, launch.world_size))
        todo = [key for key in data.keys if key not in done and key in mine]
        if done:
            context.progress.start(f"resuming: {len(done)} of {len(data)} samples already committed")
            context.progress.finish()
        if todo:
            _commit_results(backend, run, data.subset(todo), store, seed, options.chunk_size, n_total=len(data))
        # Every rank hands its part to rank 0, which scores the union: the same rows, sorted by key,
        # as a single process would have (and no shared filesystem is assumed between nodes).
        own = store.read().filter(pl.col("key").is_in(sorted(mine)))
        parts = distributed.gather_objects((own, len(todo)))
        if parts is None:
            return []
        raw = pl.concat([frame for frame, _ in parts]).sort("key")
        n_computed = sum(count for _, count in parts)
        return _finish(run, options, backend, data, source, raw, seed, settings, store, n_reused=len(data) - n_computed)


def _commit_results(
    backend: Any,
    run: PlannedRun,
    data: ShardDataset,
    store: ChunkStore,
    seed: int,
    chunk_size: int,
    *,
    n_total: int,
) -> None:
    """Evaluate ``data`` and commit its raw results to ``store`` every ``chunk_size`` samples."""
    pending: list[dict[str, Any]] = []
    n_skipped_committed = 0

    def commit() -> None:
        nonlocal pending, n_skipped_committed
        # Taken off the queue before writing: if the write is cut short, these samples are simply
        # computed again by the next run, never committed twice.
        rows, pending = pending, []
        skipped = data.skipped[n_skipped_committed:]
        n_skipped_committed += len(skipped)
        rows.extend(skipped_row(s.key, s.shard, s.reason) for s in skipped)
        if rows:
            store.commit(rows)

    try:
        for batch in _results(backend, run, data, seed):
            pending.extend(raw_rows(batch))
            if len(pending) >= chunk_size:
                commit()
        commit()
    except Exception:
        commit()  # finished batches are good whatever stopped the run (a bad image, a full disk)
        raise
    except KeyboardInterrupt:
        commit()
        n_done = len(store.done_keys(skipped=True))
        raise RunInterrupted(
            f"interrupted: {n_done} of {n_total} samples of {run.model.spec.text} on {run.variant_name} are "
            f"committed in {store.path}; re-run the same command to continue from there"
        ) from None


def _finish(
    run: PlannedRun,
    options: RunOptions,
    backend: Any,
    data: ShardDataset,
    source: str,
    raw: pl.DataFrame,
    seed: int,
    settings: Mapping[str, str],
    store: ChunkStore,
    *,
    n_reused: int,
) -> list[AggregateRow]:
    """Score the union of a run's committed chunks once and write its per-sample file, manifest and rows."""
    spec, variant, info = run.spec, run.variant, backend.info
    missing = set(data.keys) - set(raw["key"].to_list())
    if missing:
        raise RuntimeError(f"{len(missing)} samples were neither evaluated nor skipped, e.g. {sorted(missing)[:3]}")
    skipped = raw.filter(pl.col("skipped").is_not_null()).select("key", "shard", "skipped")
    if len(skipped) == len(raw):
        raise DataError(
            f"every one of the {len(raw)} samples from {source} was skipped as unreadable "
            f"(first: {skipped['skipped'][0]}); check the data"
        )
    scored = _score(run, raw, seed)
    digest = settings_digest(settings)
    stem = run_stem(
        run.variant_name,
        seed=seed,
        default_seed=spec.seed,
        limit=options.limit,
        settings=digest,
        default=info.default_settings,
    )
    parquet = per_sample_path(options.output_dir, info.identity, stem)
    write_per_sample(parquet, scored.records, scored.schema)
    finished = dt.datetime.now(dt.timezone.utc)
    incomplete = bool(data.incomplete)
    write_json_atomic(
        parquet.with_suffix(".json"),
        {
            "run_id": store.run_id,
            "command": options.command_line,
            "model_spec": run.model.spec.text,
            "backend": run.model.backend,
            "model": info.identity,
            "resolved_args": dict(info.resolved_args),
            "model_revision": info.revision,
            "settings": digest,
            "benchmark": spec.name,
            "variant": run.variant_name,
            "spec_file": str(spec.path),
            "spec_hash": spec.content_hash,
            "seed": seed,
            "limit": options.limit,
            "data_source": source,
            "shards": [{"name": s.name, "size": s.size} for s in data.shards],
            "incomplete": incomplete,
            "n_samples": len(scored.records),
            "n_skipped": len(skipped),
            "on_bad_sample": options.on_bad_sample,
            "skipped": skipped.rename({"skipped": "reason"}).to_dicts(),
            "run_dir": str(store.path.relative_to(options.output_dir)),
            "n_reused": n_reused,
            "versions": {
                "python": platform.python_version(),
                **_versions(["mill-core", "mill-data", "mill-cli", "torch", "polars"]),
                **dict(info.library_versions),
                "cuda": _cuda_version(),
            },
            "device_type": info.device_type,
            "run_info": dict(backend.run_info()),
            "started_at": store.started_at,
            "finished_at": finished.isoformat(),
            "metrics": {name: {"value": m.value, "stderr": m.stderr} for name, m in scored.metrics.items()},
        },
    )
    facts = RunFacts(
        model=info.identity,
        benchmark=spec.name,
        task_type=variant.kind.value,
        n_samples=len(scored.records),
        seed=seed,
        limit=options.limit,
        settings=digest,
        default_settings=info.default_settings,
        run_id=store.run_id,
        incomplete=incomplete,
        n_skipped=len(skipped),
        output_file=str(parquet.relative_to(options.output_dir)),
        finished_at=finished.isoformat(timespec="seconds"),
    )
    rows = run_rows(facts, run.variant_name, scored.metrics, (variant.metric, spec.headline_metric))
    upsert_aggregate(options.output_dir, rows)
    return rows


def _task(run: PlannedRun, seed: int) -> ZeroShotTask | McqTask:
    spec, variant = run.spec, run.variant
    if isinstance(variant, McqVariant):
        return McqTask(
            spec.name,
            run.variant_name,
            spec.classnames,
            variant.max_new_tokens,
            make_question_fn(seed, run.variant_name, spec.classnames, variant.n_options, variant.prompt),
        )
    return ZeroShotTask(spec.name, run.variant_name, spec.classnames, spec.templates, variant.top_k)


def _results(backend: Any, run: PlannedRun, data: ShardDataset, seed: int) -> Iterator[Any]:
    """The backend's batch results for ``data`` under ``run``'s variant."""
    task = _task(run, seed)
    if isinstance(task, ZeroShotTask):
        if not hasattr(backend, "run_zero_shot"):
            raise CapabilityError(f"backend {run.model.backend!r} declared zero_shot but cannot run it")
        results: Iterator[Any] = backend.run_zero_shot(task, data)
        return results
    if not hasattr(backend, "run_mcq"):
        raise CapabilityError(f"backend {run.model.backend!r} declared generative_mcq but cannot run it")
    results = backend.run_mcq(task, data)
    return results


def _score(run: PlannedRun, raw: pl.DataFrame, seed: int) -> Scored:
    """Per-sample records and metrics over every evaluated sample of the run."""
    task = _task(run, seed)
    if isinstance(task, ZeroShotTask):
        return score_zero_shot([zero_shot_batch(raw)], task.classnames, run.variant.metric, seed)
    assert isinstance(run.variant, McqVariant)
    return score_mcq([mcq_batch(raw)], task, run.variant, seed)


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


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


__all__ = ["PlannedRun", "RunInterrupted", "RunOptions", "execute", "plan_runs"]
