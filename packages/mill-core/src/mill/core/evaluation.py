"""``evaluate()``: Mill's Python entry point, which ``mill eval`` is a thin shell over.

    from mill.core import evaluate
    result = evaluate("clip[path=ViT-B-32,pretrained=laion2b_s34b_b79k]", "imagenet", limit=500)
    result.metrics["acc"].value, result.samples  # a polars frame with the per-sample file's columns

Every ``mill eval`` flag is a keyword of the same name and meaning. ``output_dir=None`` keeps nothing on
disk (a training loop scoring its model every few epochs); ``model`` may also be an in-memory model's
backend (``mill.backends.clip.from_model``, ``mill.backends.llm.from_model``).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from attrs import frozen

from mill.core.arguments import COUNTS, MAX_COUNT, SAMPLE_COUNTS, SEEDS, IntRange
from mill.core.backend import RunContext
from mill.core.engine import (
    Collectives,
    ModelRef,
    PlannedRun,
    RunOptions,
    RunResult,
    chunk_size_from_env,
    default_cache_dir,
    default_output_dir,
    execute,
    plan_runs,
)
from mill.core.errors import MillError, SettingError
from mill.core.metrics import MetricValue
from mill.core.model_loads import share_model_loads
from mill.core.model_spec import split_top_level
from mill.core.opened_datasets import open_every_dataset
from mill.core.progress import Progress, SilentProgress
from mill.core.record import RunRecord
from mill.core.registry import SpecRegistry
from mill.core.results import AggregateRow
from mill.core.sample import DataOpener
from mill.core.suite import discover_suites, expand_benchmarks

#: The entry-point group through which the data layer (mill-data) hands the engine its opener.
DATA_ENTRY_POINT_GROUP = "mill.data"


class _Default(enum.Enum):
    FROM_ENVIRONMENT = "from the environment"


#: ``output_dir``/``cache_dir`` as ``mill eval`` resolves them when the flag is not given:
#: ``$MILL_OUTPUT_DIR`` or ``./mill_results``; ``$MILL_CACHE_DIR`` or ``~/.cache/mill``.
FROM_ENVIRONMENT = _Default.FROM_ENVIRONMENT

#: Keywords of :func:`evaluate` that are not ``mill eval`` flags: what a program hands in that a
#: command line cannot (progress display, collectives of a launch, a hook per run, the data layer).
PROGRAM_ONLY_KEYWORDS = frozenset({"progress", "collectives", "on_run_start", "open_data", "command_line"})


class NotOneRunError(MillError):
    """A single-run accessor (``metrics``, ``samples``, ``manifest``) was used on an evaluation of several runs."""


@frozen
class EvalResult:
    """What :func:`evaluate` produced: one :class:`~mill.core.engine.RunResult` per model × benchmark pair.

    ``metrics``, ``samples`` and ``manifest`` are those of the only run; with several runs use ``runs``.
    ``output_dir`` is the results directory the runs were written to (None: nothing was kept on disk).
    """

    runs: Sequence[RunResult]
    output_dir: Path | None = None

    def _only(self) -> RunResult:
        if len(self.runs) != 1:
            raise NotOneRunError(f"this evaluation holds {len(self.runs)} runs; pick one from .runs")
        return self.runs[0]

    @property
    def metrics(self) -> Mapping[str, MetricValue]:
        """Metric name → value with its bootstrap stderr."""
        return self._only().metrics

    @property
    def samples(self) -> Any:
        """The per-sample results (a polars DataFrame with the per-sample file's columns, sorted by key)."""
        return self._only().samples

    @property
    def manifest(self) -> Mapping[str, Any]:
        """Everything that produced the numbers (model revision, versions, data shards, settings) as the JSON
        manifest holds it; :attr:`record` is the same, typed."""
        return self._only().manifest

    @property
    def record(self) -> RunRecord:
        """The run's record: what was evaluated, how, on what, and what came out."""
        return self._only().record

    @property
    def rows(self) -> list[AggregateRow]:
        """Every aggregate row of every run (as ``aggregate.csv`` holds them)."""
        return [row for run in self.runs for row in run.rows]


def evaluate(
    model: ModelRef | Sequence[ModelRef] | Path,
    benchmark: str | Path | Sequence[str],
    *,
    output_dir: str | Path | _Default | None = FROM_ENVIRONMENT,
    cache_dir: str | Path | _Default | None = FROM_ENVIRONMENT,
    seed: int | None = None,
    limit: int | None = None,
    data_dir: str | Path | Mapping[str, str] | None = None,
    spec: Iterable[str | Path] = (),
    batch_size: int | None = None,
    device: str | None = None,
    num_workers: int | None = None,
    allow_incomplete: bool = False,
    on_bad_sample: Literal["fail", "skip"] = "fail",
    overwrite: bool = False,
    quiet: bool = True,
    progress: Progress | None = None,
    collectives: Collectives | None = None,
    on_run_start: Callable[[PlannedRun], None] | None = None,
    open_data: DataOpener | None = None,
    command_line: str | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``benchmark`` and return the results (stored too, unless ``output_dir`` is None).

    ``model``: a model-spec string (``clip[path=...,pretrained=...]``, a hub id, a folder, a TOML model
    file, or a comma list of these), a backend object, or a list. ``benchmark``: a benchmark, variant,
    suite or spec file name, or a comma list. The other keywords are ``mill eval``'s flags (``spec`` is
    ``--spec``, repeatable); ``quiet`` without ``progress`` shows nothing. Everything is validated before
    anything runs.

    Raises:
        MillError: a user mistake or fault, with a message naming what and where.
        RunInterrupted: on Ctrl-C, with the count of committed samples.
    """
    _check_ranges(seed=seed, limit=limit, batch_size=batch_size, num_workers=num_workers)
    planned = _plan(model, benchmark, spec)
    cache = _directory(cache_dir, default_cache_dir)
    options = _run_options(
        planned,
        output_dir=_directory(output_dir, default_output_dir),  # resolved once: EvalResult says where it wrote
        cache_dir=cache,
        seed=seed,
        limit=limit,
        data_dir=data_dir,
        allow_incomplete=allow_incomplete,
        command_line=command_line if command_line is not None else _call_text(planned, benchmark),
        on_bad_sample=on_bad_sample,
        overwrite=overwrite,
    )
    shown = progress or SilentProgress()
    context = RunContext(
        cache, device=device, batch_size=batch_size, num_workers=num_workers, progress=shown, quiet=quiet
    )
    opener = open_every_dataset(planned, options, open_data or installed_data_opener())
    announce = None if quiet else on_run_start
    return EvalResult(_run_each(planned, options, context, opener, collectives, announce), options.output_dir)


def _plan(
    model: ModelRef | Sequence[ModelRef] | Path, benchmark: str | Path | Sequence[str], spec: Iterable[str | Path]
) -> list[PlannedRun]:
    """Every model × benchmark pair, validated (suites expanded, ``spec`` files read besides the installed); the
    runs of one model share its load."""
    registry = SpecRegistry.discover([Path(file) for file in spec])
    benchmarks = expand_benchmarks(_names(benchmark), discover_suites(), registry)
    return share_model_loads(plan_runs(_models(model), benchmarks, registry))


def _run_options(
    planned: Sequence[PlannedRun], *, data_dir: str | Path | Mapping[str, str] | None, **settings: Any
) -> RunOptions:
    """The settings every run of the evaluation shares, ``data_dir`` split per benchmark.

    Raises:
        MillError: one data directory given for several benchmarks.
    """
    default_data_dir, data_dirs = _data_dirs(data_dir)
    if default_data_dir and len({run.spec.name for run in planned}) > 1:
        raise MillError("with several benchmarks, name each source: data_dir imagenet=DIR,other=DIR2")
    return RunOptions(
        data_dirs=data_dirs, default_data_dir=default_data_dir, chunk_size=chunk_size_from_env(), **settings
    )


def _run_each(
    planned: Sequence[PlannedRun],
    options: RunOptions,
    context: RunContext,
    opener: DataOpener,
    collectives: Collectives | None,
    on_run_start: Callable[[PlannedRun], None] | None,
) -> list[RunResult]:
    """Run every planned pair in turn; the results of this process (all of them on rank 0, none elsewhere)."""
    results = []
    for run in planned:
        if on_run_start is not None:
            on_run_start(run)
        try:
            result = execute(run, options, context, open_data=opener, collectives=collectives)
        finally:
            context.progress.finish()
        if result is not None:
            results.append(result)
    return results


_RANGES = {
    "seed": SEEDS,
    "limit": SAMPLE_COUNTS,
    "batch_size": COUNTS,
    "num_workers": IntRange(0, MAX_COUNT + 1, str(MAX_COUNT + 1)),
}


def _check_ranges(**settings: int | None) -> None:
    """Before anything runs: a seed of 2^63 used to run inference, then fail to be stored."""
    for name, value in settings.items():
        problem = None if value is None else _RANGES[name].problem(value)
        if problem:
            raise SettingError(f"{name} (--{name}): {problem}")


def installed_data_opener() -> DataOpener:
    """The data layer's opener, found through the ``mill.data`` entry-point group (mill-data provides it).

    Raises:
        MillError: no installed distribution provides one.
    """
    for entry in entry_points(group=DATA_ENTRY_POINT_GROUP):
        opener: DataOpener = entry.load()
        return opener
    raise MillError("reading benchmark data needs mill-data: pip install ./packages/mill-data (from a Mill checkout)")


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


def _data_dirs(data_dir: str | Path | Mapping[str, str] | None) -> tuple[str | None, dict[str, str]]:
    if isinstance(data_dir, Mapping):
        return None, {name: str(directory) for name, directory in data_dir.items()}
    return parse_data_dirs(None if data_dir is None else str(data_dir))


def _directory(value: str | Path | _Default | None, default: Callable[[], Path]) -> Path | None:
    if value is FROM_ENVIRONMENT:
        return default()
    return None if value is None else Path(os.fspath(value))


def _names(benchmark: str | Path | Sequence[str]) -> list[str]:
    if isinstance(benchmark, str | Path):
        return split_top_level(str(benchmark))
    return [name for item in benchmark for name in split_top_level(item)]


def _call_text(planned: Sequence[PlannedRun], benchmark: str | Path | Sequence[str]) -> str:
    """How the manifest records a call from Python: the models by name (an in-memory model's repr would
    spell out every layer), the benchmarks as given."""
    names = ",".join(dict.fromkeys(run.model.spec.text for run in planned))
    return f"evaluate({names!r}, {benchmark!r})"


def _models(model: ModelRef | Sequence[ModelRef] | Path) -> list[ModelRef]:
    if isinstance(model, Path):
        return [str(model)]
    if isinstance(model, str):
        return list(split_top_level(model))
    if isinstance(model, Sequence):
        return [ref for item in model for ref in _models(item)]
    return [model]
