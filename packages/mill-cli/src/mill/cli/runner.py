"""Planning and running evaluations: every model × benchmark pair is validated up front
(backend installed, variant servable, spec valid), then each is run and its results stored.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import uuid
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from attrs import frozen

from mill.core.backend import BackendPlugin, Capabilities, McqBackend, RunContext, ZeroShotBackend
from mill.core.errors import CapabilityError, DataError
from mill.core.mcq import make_question_fn
from mill.core.model_spec import parse_model_spec, split_top_level
from mill.core.plugins import ResolvedModel, load_plugin, resolve_model
from mill.core.registry import SpecRegistry
from mill.core.results import (
    AggregateRow,
    RunFacts,
    per_sample_path,
    run_rows,
    run_stem,
    settings_digest,
    upsert_aggregate,
    write_json_atomic,
    write_per_sample,
)
from mill.core.scoring import Scored, score_mcq, score_zero_shot
from mill.core.spec import McqVariant, Spec, Variant
from mill.core.task import McqTask, VariantKind, ZeroShotTask
from mill.data import choose_source, open_dataset


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


def split_list(text: str) -> list[str]:
    """A comma list of model specs or benchmarks (commas inside brackets belong to a model spec)."""
    return split_top_level(text)


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
    """Run one planned pair end to end and store its results; returns the aggregate rows written."""
    spec, variant = run.spec, run.variant
    seed = spec.seed if options.seed is None else options.seed
    data_dir = options.data_dirs.get(spec.name, options.default_data_dir)
    source = choose_source(data_dir, spec.name, spec.dataset.source)
    started = dt.datetime.now(dt.timezone.utc)
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
    )
    if options.limit is not None:
        context.progress.start(f"subset: {len(data)} of the samples, spread over all shards (--limit)", None)
        context.progress.finish()
    context.progress.start(f"loading {run.model.spec.text}", None)
    backend = run.plugin.load(run.model.args, context)
    context.progress.finish()
    info = backend.info
    settings = dict(info.settings)
    scored = _evaluate(backend, run, data, seed)
    if isinstance(variant, McqVariant):
        settings["max_new_tokens"] = str(variant.max_new_tokens)
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
    run_id = uuid.uuid4().hex[:12]
    incomplete = bool(getattr(data, "incomplete", False))
    write_json_atomic(
        parquet.with_suffix(".json"),
        {
            "run_id": run_id,
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
            "versions": {
                "python": platform.python_version(),
                **_versions(["mill-core", "mill-data", "mill-cli", "torch", "polars"]),
                **dict(info.library_versions),
                "cuda": _cuda_version(),
            },
            "device_type": info.device_type,
            "run_info": dict(backend.run_info()),
            "started_at": started.isoformat(),
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
        run_id=run_id,
        incomplete=incomplete,
        n_skipped=0,
        output_file=str(parquet.relative_to(options.output_dir)),
        finished_at=finished.isoformat(timespec="seconds"),
    )
    rows = run_rows(facts, run.variant_name, scored.metrics, (variant.metric, spec.headline_metric))
    upsert_aggregate(options.output_dir, rows)
    return rows


def _evaluate(backend: Any, run: PlannedRun, data: Any, seed: int) -> Scored:
    spec, variant = run.spec, run.variant
    if variant.kind is VariantKind.ZERO_SHOT:
        if not isinstance(backend, ZeroShotBackend) and not hasattr(backend, "run_zero_shot"):
            raise CapabilityError(f"backend {run.model.backend!r} declared zero_shot but cannot run it")
        task = ZeroShotTask(spec.name, run.variant_name, spec.classnames, spec.templates, variant.top_k)  # type: ignore[union-attr]
        return score_zero_shot(backend.run_zero_shot(task, data), spec.classnames, variant.metric, seed)
    assert isinstance(variant, McqVariant)
    if not isinstance(backend, McqBackend) and not hasattr(backend, "run_mcq"):
        raise CapabilityError(f"backend {run.model.backend!r} declared generative_mcq but cannot run it")
    mcq_task = McqTask(
        spec.name,
        run.variant_name,
        spec.classnames,
        variant.max_new_tokens,
        make_question_fn(seed, run.variant_name, spec.classnames, variant.n_options, variant.prompt),
    )
    return score_mcq(backend.run_mcq(mcq_task, data), mcq_task, variant, seed)


def default_output_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("MILL_OUTPUT_DIR", "mill_results"))


def default_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("MILL_CACHE_DIR", str(Path.home() / ".cache" / "mill")))


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


__all__ = ["DataError", "PlannedRun", "RunOptions", "execute", "plan_runs"]
