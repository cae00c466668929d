"""The ``mill`` command: ``mill eval``, ``mill collect``, ``mill compare``, ``mill ls``, ``mill report``,
``mill rescore``, ``mill verify``.

Flags accept ``--output_dir`` and ``--output-dir`` alike; ``--output_dir``, ``--cache_dir`` and ``--limit``
may also come before the subcommand (:mod:`mill.cli.shared_options`). User mistakes (:class:`MillError`) are
printed as one message and exit with status 2; anything else is a bug and keeps its traceback. A
:class:`MillWarning` (a damaged chunk set aside) is printed as one ``warning:`` line.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import polars as pl
from rich.console import Console
from rich.markup import escape

from mill.cli import distributed
from mill.cli.console import content_table, progress_console, table_console
from mill.cli.display import PlainProgress, RichProgress
from mill.cli.log_output import printed_once
from mill.cli.shared_options import forward_to_subcommand
from mill.cli.suite_tables import SuiteTable, suite_reported_tables, suite_tables, suites_to_show
from mill.cli.tables import (
    ComparisonTable,
    MetricTable,
    ReportedTable,
    UsageTable,
    comparison_tables,
    json_records,
    legend,
    metric_tables,
    reported_tables,
    select_rows,
    usage_table,
)
from mill.core.comparison import DEFAULT_RESAMPLES, compare_runs, stored_runs
from mill.core.engine import PlannedRun, RunInterrupted, default_output_dir
from mill.core.errors import MillError, MillWarning, ResultsError
from mill.core.evaluation import FROM_ENVIRONMENT, evaluate
from mill.core.model_spec import split_top_level
from mill.core.plugins import installed_backends
from mill.core.progress import Progress, SilentProgress
from mill.core.registry import SpecRegistry
from mill.core.rescore import rescore_outputs
from mill.core.results import AggregateRow, read_aggregate
from mill.core.results_dir import ResultsDir
from mill.core.suite import discover_suites, expand_benchmarks, missing_members
from mill.data import open_spec_data

F = TypeVar("F", bound=Callable[..., Any])
Table = MetricTable | ReportedTable | SuiteTable | ComparisonTable | UsageTable
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _flag(name: str, dest: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """An option spelled both ``--snake_case`` and ``--kebab-case``, stored as ``dest`` (or ``name``)."""
    dashed = name.replace("_", "-")
    names = [f"--{name}"] + ([f"--{dashed}"] if dashed != name else [])
    return click.option(*names, dest or name, **kwargs)


def _output_dir_option() -> Callable[[F], F]:
    return _flag(
        "output_dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Results directory [default: $MILL_OUTPUT_DIR or ./mill_results].",
    )


def _cache_dir_option() -> Callable[[F], F]:
    return _flag(
        "cache_dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Cache for classifiers, shard indexes and downloads [default: $MILL_CACHE_DIR or ~/.cache/mill].",
    )


def _limit_option() -> Callable[[F], F]:
    return _flag(
        "limit",
        type=click.IntRange(min=1),
        default=None,
        help="Evaluate a deterministic subset of N samples spread over all shards (a smoke run).",
    )


def _spec_option(help_text: str) -> Callable[[F], F]:
    """``--spec FILE``, repeatable: extra spec files, besides the built-in ones and $MILL_SPEC_PATH's."""
    return _flag(
        "spec",
        "spec_files",
        type=click.Path(path_type=Path, exists=True, dir_okay=False),
        multiple=True,
        help=help_text,
    )


def _show_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_text())
        ctx.exit()


def version_text() -> str:
    """``mill VERSION (mill-cli VERSION, mill-core VERSION, ...)``: every installed Mill distribution."""
    from importlib.metadata import distributions, version

    found = {d.metadata["Name"]: d.version for d in distributions() if d.metadata["Name"].startswith("mill-")}
    listed = ", ".join(f"{name} {found[name]}" for name in sorted(found))
    return f"mill {version('mill-cli')} ({listed})"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version of Mill and of each installed Mill distribution, then exit.",
)
@_output_dir_option()
@_cache_dir_option()
@_limit_option()
@click.pass_context
def cli(ctx: click.Context, output_dir: Path | None, cache_dir: Path | None, limit: int | None) -> None:
    """Mill: evaluate vision models on benchmark specs.

    --output_dir, --cache_dir and --limit may come before the subcommand as well as after it
    (mill --output_dir ./results eval ...); given in both places, the subcommand's wins.
    """
    forward_to_subcommand(ctx, {"output_dir": output_dir, "cache_dir": cache_dir, "limit": limit})


@cli.command("eval")
@click.argument("model")
@click.argument("benchmark")
@_output_dir_option()
@_cache_dir_option()
@_flag("seed", type=int, default=None, help="Seed for MCQ options and bootstrap [default: the spec's seed].")
@_limit_option()
@_flag(
    "data_dir",
    default=None,
    help="Dataset source: DIR (one benchmark) or name=DIR,name2=DIR2. DIR may be a local folder, an "
    "http(s) root or brace pattern, or hf://datasets/... [default: $MILL_DATA_DIR/<benchmark>, "
    "else the spec's remote source].",
)
@_spec_option("Extra spec file (repeatable); directories in $MILL_SPEC_PATH are read too.")
@_flag(
    "batch_size",
    type=click.IntRange(min=1),
    default=None,
    help="Batch size, unless the model spec sets batch_size.",
)
@_flag("device", default=None, help="Device (cuda, cuda:1, cpu), unless the model spec sets device.")
@_flag(
    "num_workers",
    type=click.IntRange(min=0),
    default=None,
    help="Data loader worker processes, unless the model spec sets num_workers.",
)
@_flag(
    "allow_incomplete",
    is_flag=True,
    default=False,
    help="Proceed when the dataset holds fewer samples than the spec expects (rows are marked).",
)
@_flag(
    "on_bad_sample",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    help="An undecodable image stops the run (fail), or is left out of every metric and counted as n_skipped (skip).",
)
@_flag(
    "overwrite",
    is_flag=True,
    default=False,
    help="Recompute from scratch instead of resuming the samples an interrupted identical run committed.",
)
@_flag("quiet", is_flag=True, default=False, help="No progress output.")
def eval_command(
    model: str,
    benchmark: str,
    output_dir: Path | None,
    cache_dir: Path | None,
    seed: int | None,
    limit: int | None,
    data_dir: str | None,
    spec_files: Sequence[Path],
    batch_size: int | None,
    device: str | None,
    num_workers: int | None,
    allow_incomplete: bool,
    on_bad_sample: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Evaluate MODEL on BENCHMARK.

    MODEL is backend[key=value,...] (e.g. "clip[path=ViT-B-32,pretrained=laion2b_s34b_b79k]"), a
    hub id or model folder (evaluated with hf), or a TOML model file; BENCHMARK is a benchmark
    name, a variant name, a suite (each of its benchmarks) or a spec file. Both may be comma-separated lists.
    """
    console, notes = table_console(), progress_console()
    launch = distributed.world()
    # Under torchrun/srun every rank evaluates its part; rank 0 alone reports and writes results.
    quiet = quiet or not launch.is_main

    def announce(run: PlannedRun) -> None:
        notes.print(f"[bold]{escape(run.model.spec.text)}[/] on [bold]{run.spec.name}[/] (variant {run.variant_name})")

    with distributed.process_group(distributed.launch_device_type(device), launch) as collectives:
        result = evaluate(
            model,
            benchmark,
            output_dir=FROM_ENVIRONMENT if output_dir is None else output_dir,
            cache_dir=FROM_ENVIRONMENT if cache_dir is None else cache_dir,
            seed=seed,
            limit=limit,
            data_dir=data_dir,
            spec=spec_files,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            allow_incomplete=allow_incomplete,
            on_bad_sample="skip" if on_bad_sample == "skip" else "fail",
            overwrite=overwrite,
            quiet=quiet,
            progress=_progress(quiet, notes),
            collectives=collectives,
            on_run_start=announce,
            open_data=open_spec_data,
            command_line=command_line(),
        )
    if not quiet and result.output_dir is not None:
        _print_rows(console, result.rows)
        console.print(f"results: {ResultsDir(result.output_dir).aggregate_file}")


def _progress(quiet: bool, notes: Console) -> Progress:
    """How ``mill eval`` shows progress: nothing, live bars on a terminal, or plain lines in a log."""
    if quiet:
        return SilentProgress()
    return RichProgress(notes) if notes.is_terminal else PlainProgress(notes)


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _print_rows(console: Console, rows: Sequence[AggregateRow]) -> None:
    table = content_table(
        "Results",
        ("model", "task", "metric", "performance", "stderr", "n_samples"),
        right=("performance", "stderr", "n_samples"),
    )
    for row in rows:
        stderr = "" if row.stderr is None else f"{row.stderr:.4f}"
        table.add_row(row.model, row.task, row.metric, f"{row.performance:.4f}", stderr, str(row.n_samples))
    console.print(table)


@cli.command("collect")
@_output_dir_option()
@_flag("metric", default=None, help="Show only this metric (e.g. acc).")
@_flag("models", default=None, help="Comma list of models (as in the model column).")
@_flag("benchmarks", default=None, help="Comma list of benchmarks or tasks.")
@_flag("format", "output_format", type=click.Choice(["table", "csv", "markdown", "json"]), default="table")
@_flag("all", "include_all", is_flag=True, default=False, help="Include --limit runs.")
@_flag(
    "reported",
    is_flag=True,
    default=False,
    help="Compare with the specs' reported baselines: one Model | Mill | Reported | Source | Δ table per task.",
)
@_spec_option("Extra spec file (repeatable), whose reported baselines --reported shows.")
def collect_command(
    output_dir: Path | None,
    metric: str | None,
    models: str | None,
    benchmarks: str | None,
    output_format: str,
    include_all: bool,
    reported: bool,
    spec_files: Sequence[Path],
) -> None:
    """Pivot aggregate.csv into model × task tables, one per metric (with --reported: beside published numbers)."""
    out = output_dir or default_output_dir()
    registry = SpecRegistry.discover(spec_files)
    suites = discover_suites()
    named = split_top_level(benchmarks or "")
    # A suite named in --benchmarks stands for its members; its mean is computed here, never stored.
    members = expand_benchmarks(named, suites, registry)
    rows = select_rows(
        read_aggregate(out),
        metric=metric,
        models=split_top_level(models or ""),
        benchmarks=members,
        include_all=include_all,
    )
    shown = suites_to_show(rows, suites, named, metric=metric)
    tables: Sequence[Table]
    if reported:
        wanted = set(members)
        specs = [
            spec for spec in registry.specs.values() if not wanted or spec.name in wanted or wanted & set(spec.variants)
        ]
        tables = [
            *reported_tables(rows, specs, metric=metric, models=split_top_level(models or "")),
            *suite_reported_tables(rows, shown, registry.specs, models=split_top_level(models or "")),
        ]
    else:
        usage = usage_table(rows, lambda output_file: _recorded_usage(out, output_file))
        tables = [*metric_tables(rows), *suite_tables(rows, shown, registry.specs), *([usage] if usage else [])]
    if not tables:
        aggregate = ResultsDir(out).aggregate_file
        click.echo(f"no results in {aggregate} match; run `mill eval` first (or pass --all)", err=True)
        sys.exit(1)
    render = {"table": _render_rich, "csv": _render_csv, "markdown": _render_markdown, "json": _render_json}
    render[output_format](tables)
    if output_format in ("table", "markdown"):
        click.echo(f"\n{legend()}")


def _recorded_usage(output_dir: Path, output_file: str) -> dict[str, Any] | None:
    """The token usage (and cost) a run's manifest records, for a served model's run; None for any other run
    or a manifest that cannot be read (``mill verify`` is where an unreadable manifest is reported)."""
    if not output_file:
        return None
    results = ResultsDir(output_dir)
    record = results.read_record(results.files_of(output_file)).record
    usage = None if record is None else record.provenance.run_info.get("usage")
    return usage if isinstance(usage, dict) else None


def _render_rich(tables: Sequence[Table]) -> None:
    console = table_console()
    for metric_table in tables:
        table = content_table(escape(metric_table.title), metric_table.frame.columns)
        for row in metric_table.frame.iter_rows():
            # Escaped: a name with settings in brackets is text, not rich markup.
            table.add_row(*("—" if cell is None else escape(str(cell)) for cell in row))
        console.print(table)


def _render_csv(tables: Sequence[Table]) -> None:
    frames = [t.frame.with_columns(pl.lit(v).alias(k) for k, v in t.key_columns.items()) for t in tables]
    click.echo(pl.concat(frames, how="diagonal").fill_null("").write_csv(), nl=False)


def _render_markdown(tables: Sequence[Table]) -> None:
    for metric_table in tables:
        columns = metric_table.frame.columns
        click.echo(f"### {metric_table.title}\n")
        click.echo("| " + " | ".join(columns) + " |")
        click.echo("|" + "|".join("---" for _ in columns) + "|")
        for row in metric_table.frame.iter_rows():
            click.echo("| " + " | ".join("—" if cell is None else str(cell) for cell in row) + " |")
        click.echo("")


def _render_json(tables: Sequence[Table]) -> None:
    click.echo(json.dumps({t.title: json_records(t.frame) for t in tables}, indent=2, ensure_ascii=False))


@cli.command("compare")
@click.argument("runs", nargs=-1, required=True)
@_output_dir_option()
@_flag("benchmarks", default=None, help="Comma list of benchmarks or variants whose runs the model names pick.")
@_flag("format", "output_format", type=click.Choice(["table", "csv", "markdown", "json"]), default="table")
@_flag("all", "include_all", is_flag=True, default=False, help="Let a model name pick a --limit run.")
@_flag("seed", type=int, default=0, help="Seed of the paired bootstrap.")
@_flag(
    "resamples",
    type=click.IntRange(min=100),
    default=DEFAULT_RESAMPLES,
    help="Paired bootstrap resamples behind each 95% interval.",
)
def compare_command(
    runs: Sequence[str],
    output_dir: Path | None,
    benchmarks: str | None,
    output_format: str,
    include_all: bool,
    seed: int,
    resamples: int,
) -> None:
    """Compare stored runs of one benchmark over the samples they share: each run after the first against the
    first. RUNS are models as `mill collect` names them (narrowed with --benchmarks) or run ids.

    For each metric, the difference (run − baseline) with a paired bootstrap 95% interval; McNemar's exact test
    of accuracy; the 10 classes whose accuracy differs most."""
    out = output_dir or default_output_dir()
    names = [name for run in runs for name in split_top_level(run)]
    compared = stored_runs(out, names, benchmarks=split_top_level(benchmarks or ""), include_all=include_all)
    tables = comparison_tables(compare_runs(compared, seed=seed, n_resamples=resamples))
    if output_format == "json":
        # Keyed by what each table holds, so that a script finds the rows without knowing the titles.
        document: dict[str, list[dict[str, Any]]] = {}
        for table in tables:
            keys = {name: value for name, value in table.key_columns.items() if name != "table"}
            rows = table.frame.with_columns(pl.lit(value).alias(name) for name, value in keys.items()).to_dicts()
            document.setdefault(table.key_columns["table"], []).extend(rows)
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    if output_format == "csv":
        # Numbers stay numbers, and a cell a table lacks stays empty.
        frames = [t.frame.with_columns(pl.lit(v).alias(k) for k, v in t.key_columns.items()) for t in tables]
        click.echo(pl.concat(frames, how="diagonal").write_csv(), nl=False)
        return
    render = {"table": _render_rich, "markdown": _render_markdown}
    render[output_format]([_readable(t) for t in tables])
    if output_format in ("table", "markdown"):
        click.echo(
            f"\ndifference = run − baseline over the shared samples; interval: {resamples} paired bootstrap "
            f"resamples (seed {seed}); p_value: McNemar's exact test on the samples only one run got right"
        )


def _readable(table: ComparisonTable) -> ComparisonTable:
    """``table`` with its numbers as a person reads them: four places, differences signed, p-values to four
    significant digits."""

    def shown(column: str, dtype: pl.DataType) -> pl.Expr:
        if not dtype.is_float():
            return pl.col(column).cast(pl.String)
        if column == "p_value":
            return pl.col(column).map_elements("{:.4g}".format, return_dtype=pl.String)
        if column in ("difference", "ci_low", "ci_high"):
            # Rounded first so that a difference below the shown precision reads +0.0000, not -0.0000.
            return pl.col(column).round(4).map_elements(lambda value: f"{value + 0.0:+.4f}", return_dtype=pl.String)
        return pl.col(column).map_elements("{:.4f}".format, return_dtype=pl.String)

    frame = table.frame.select(shown(column, dtype) for column, dtype in table.frame.schema.items())
    return ComparisonTable(table.title, frame, table.key_columns)


@cli.command("ls")
@_spec_option("Extra spec file (repeatable).")
def ls_command(spec_files: Sequence[Path]) -> None:
    """List benchmarks with their variants, and the installed backends."""
    console = table_console()
    registry = SpecRegistry.discover(spec_files)
    benchmarks = content_table("Benchmarks", ("benchmark", "variant", "kind", "metric", "samples", "spec"))
    for spec in registry.specs.values():
        for name, variant in spec.variants.items():
            benchmarks.add_row(
                spec.name,
                name,
                variant.kind,
                variant.metric,
                str(spec.dataset.n_samples),
                str(spec.path),
            )
    console.print(benchmarks)
    suites = content_table("Suites", ("suite", "benchmarks", "description", "file"))
    for suite in discover_suites().values():
        # A member no spec defines is shown, not fatal: `mill eval SUITE` refuses it, naming each one.
        missing = missing_members(suite, registry)
        members = [f"{m} (no spec defines it)" if m in missing else m for m in suite.benchmarks]
        members += [f"{m} (not evaluable, see the file)" for m in suite.unavailable]
        suites.add_row(suite.name, escape(", ".join(members)), suite.description, str(suite.path))
    console.print(suites)
    backends = content_table("Backends", ("backend", "distribution"))
    for name, ep in sorted(installed_backends().items()):
        backends.add_row(name, ep.dist.name if ep.dist else "?")
    console.print(backends)


@cli.command("report")
@_output_dir_option()
@_flag("models", default=None, help="Comma list of models (as in the model column) [default: all].")
@_flag("benchmarks", default=None, help="Comma list of benchmarks or tasks [default: all].")
@_flag("baseline", default=None, help="Model the others are compared with per class [default: the first model].")
@_flag("out", type=click.Path(path_type=Path, dir_okay=False), default=None, help="[default: OUTPUT_DIR/report.html]")
def report_command(
    output_dir: Path | None, models: str | None, benchmarks: str | None, baseline: str | None, out: Path | None
) -> None:
    """Write one self-contained HTML page of the stored runs: accuracy per class, confusions, misclassified
    images, MCQ position bias, models against a baseline (needs mill-cli[report])."""
    # Imported here: the report's plotting library stays out of every other command's start-up.
    from mill.cli.report.page import write_report

    path = write_report(
        output_dir or default_output_dir(),
        models=split_top_level(models or ""),
        benchmarks=split_top_level(benchmarks or ""),
        baseline=baseline,
        out=out,
    )
    click.echo(f"report: {path}")


@cli.command("rescore")
@_output_dir_option()
@_flag("models", default=None, help="Comma list of models (as in the model column) [default: all].")
@_flag("benchmarks", default=None, help="Comma list of benchmarks, variants or suites [default: all].")
@_spec_option("Extra spec file (repeatable), for runs whose manifest predates recorded variants.")
@_flag("dry_run", is_flag=True, default=False, help="Only report what would change; write nothing.")
def rescore_command(
    output_dir: Path | None, models: str | None, benchmarks: str | None, spec_files: Sequence[Path], dry_run: bool
) -> None:
    """Grade the stored multiple-choice runs again with this Mill's answer parser, without loading a model:
    the per-sample files, manifests and aggregate rows of runs parsed by older rules are updated in place."""
    out = output_dir or default_output_dir()
    registry = SpecRegistry.discover(spec_files)
    done = rescore_outputs(
        out,
        registry,
        models=split_top_level(models or ""),
        benchmarks=expand_benchmarks(split_top_level(benchmarks or ""), discover_suites(), registry),
        dry_run=dry_run,
    )
    if not done:
        click.echo(f"no stored run in {ResultsDir(out).outputs} has answers to grade again", err=True)
        return
    table = content_table(
        "Re-scored runs",
        ("model", "task", "samples", "changed", "scorer_version", "status", "file"),
        right=("samples", "changed"),
    )
    for run in done:
        table.add_row(
            run.model,
            run.variant,
            str(run.n_samples),
            str(run.changed),
            f"{run.from_version} → {run.to_version}" if run.from_version != run.to_version else str(run.to_version),
            run.status,
            run.output_file,
        )
    table_console().print(table)
    changed = sum(run.changed for run in done if run.status in ("rescored", "would rescore"))
    if dry_run:
        click.echo(f"dry run: {changed} answers would change; nothing was written")
    else:
        rescored = sum(run.status == "rescored" for run in done)
        click.echo(
            f"{rescored} of {len(done)} runs rescored, {changed} answers changed; results: "
            f"{ResultsDir(out).aggregate_file}"
        )


@cli.command("verify")
@_output_dir_option()
@_flag(
    "rebuild",
    is_flag=True,
    default=False,
    help="Regenerate aggregate.csv from the run manifests (the previous file is kept as aggregate.csv.TIME.bak).",
)
def verify_command(output_dir: Path | None, rebuild: bool) -> None:
    """Check every aggregate row against its per-sample file and manifest: hashes recorded when they were
    written, metrics recomputed from the per-sample file. Exits with status 2 on any mismatch."""
    from mill.core.verify import Status, verify
    from mill.core.verify import rebuild as rebuild_results

    out = output_dir or default_output_dir()
    notes = progress_console()
    if rebuild:
        rebuilt = rebuild_results(out)
        for manifest, reason in rebuilt.left_out:
            notes.print(f"left out: {escape(str(manifest))}: {escape(reason)}", highlight=False)
        kept = f" (the previous file is kept as {rebuilt.previous})" if rebuilt.previous else ""
        notes.print(f"rebuilt {rebuilt.path}: {rebuilt.n_rows} rows{kept}", highlight=False)
    checks = verify(out)
    table = content_table("Verification", ("status", "model", "task", "metric", "output_file", "detail"))
    for check in checks:
        table.add_row(check.status.value, check.model, check.task, check.metric, check.output_file, check.detail)
    table_console().print(table)
    counts = {status: sum(check.status is status for check in checks) for status in Status}
    summary = ", ".join(f"{n} {status.value}" for status, n in counts.items())
    if counts[Status.MISMATCHED]:
        raise ResultsError(
            f"{ResultsDir(out).aggregate_file}: {summary}; a mismatched row's files are not what was written: "
            "re-run its evaluation, or `mill verify --rebuild` if aggregate.csv itself is wrong"
        )
    notes.print(f"{ResultsDir(out).aggregate_file}: {summary}", highlight=False)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``mill`` script."""
    if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with warnings.catch_warnings():
        warnings.simplefilter("always", MillWarning)
        default_show = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if issubclass(category, MillWarning):
                click.echo(f"warning: {message}", err=True)
            else:
                default_show(message, category, *args, **kwargs)

        warnings.showwarning = show
        with printed_once():
            _run(argv)


def _run(argv: Sequence[str] | None) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="mill", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C into Abort; a run cut mid-way says what it kept and how to resume.
        cause = exc.__context__
        click.echo(str(cause) if isinstance(cause, RunInterrupted) else "interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MillError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        click.echo("interrupted: results already written are kept; re-run the same command to continue", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """Clusters pre-empt jobs with SIGTERM: stop as on Ctrl-C, committing finished batches first."""
    del signum, frame
    raise KeyboardInterrupt
