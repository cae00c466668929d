"""``mill report``: one self-contained HTML page of a results directory's runs.

Everything is inline (CSS, SVG charts, thumbnails as ``data:`` URIs) and the page has no script, so it
opens the same from a laptop, a cluster's file browser or an e-mail attachment, and fetches nothing.
The statistics come from :mod:`mill.core.analysis` and the kinds (:mod:`mill.core.kinds.generative_mcq`); this
module only lays them out.
"""

from __future__ import annotations

import base64
import io
import tarfile
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

import polars as pl

from mill.cli.report import charts
from mill.cli.report.runs import ReportRun, gather_runs
from mill.core import analysis
from mill.core.atomic import write_bytes_atomic
from mill.core.comparison import ComparedRun, ComparisonError, compare
from mill.core.errors import MillError
from mill.core.kinds import generative_mcq
from mill.core.metrics import MetricValue
from mill.core.results_dir import ResultsDir
from mill.data.lookup import local_shard, read_images

#: Misclassified images shown per zero-shot run, and their thumbnail size in pixels.
GRID_SIZE = 24
THUMBNAIL_PX = 128
#: Classes listed as worst and as best, confused pairs and unparsed replies shown.
N_CLASSES_LISTED = 10
N_PAIRS = 10
N_UNPARSED = 8


class ReportError(MillError):
    """The report cannot be made as asked (an unknown ``--baseline``, an unwritable ``--out``)."""


def write_report(
    output_dir: Path,
    *,
    models: Sequence[str] = (),
    benchmarks: Sequence[str] = (),
    baseline: str | None = None,
    out: Path | None = None,
) -> Path:
    """Write the report of the runs in ``output_dir`` to ``out`` (default ``output_dir/report.html``).

    Raises:
        ResultsError: no run matches, or stored files are unreadable.
        ReportError: ``baseline`` ran on none of the benchmarks shown; ``out`` cannot be written.
        ReportDependencyError: matplotlib is not installed.
    """
    runs = gather_runs(output_dir, models=models, benchmarks=benchmarks)
    if baseline is not None and baseline not in {run.model for run in runs}:
        raise ReportError(
            f"--baseline {baseline}: no run of that model among those reported; choose one of "
            + ", ".join(sorted({run.model for run in runs}))
        )
    html = render_page(runs, baseline=baseline, title=f"Mill report: {output_dir}")
    target = out or ResultsDir(output_dir).report_file
    try:
        # Atomic: a report killed mid-write leaves the previous page, not a truncated one; and the rename
        # replaces a symbolic link planted at the target (a shared directory) instead of writing through it.
        write_bytes_atomic(target, [html.encode("utf-8")])
    except OSError as exc:
        raise ReportError(f"cannot write the report to {target} ({exc.strerror}); choose another --out") from None
    return target


def render_page(runs: Sequence[ReportRun], *, baseline: str | None, title: str) -> str:
    """The whole HTML document for ``runs``."""
    body: list[str] = [f"<h1>{escape(title)}</h1>", _contents(runs)]
    by_benchmark: dict[str, list[ReportRun]] = {}
    for run in runs:
        by_benchmark.setdefault(run.benchmark, []).append(run)
    for benchmark, group in by_benchmark.items():
        body.append(f'<h2 id="{_anchor(benchmark)}">Benchmark {escape(benchmark)}</h2>')
        if len({run.model for run in group}) > 1:
            body.append(_comparison(group, baseline))
        body.extend(_run_section(run) for run in group)
    return _DOCUMENT.format(title=escape(title), style=_STYLE, body="\n".join(body))


def _contents(runs: Sequence[ReportRun]) -> str:
    rows = "".join(
        f'<tr><td><a href="#{_anchor(run.run_id)}">{escape(run.model)}</a></td><td>{escape(run.task)}</td>'
        f"<td>{escape(run.task_type)}</td><td>{run.frame.height}</td>{_headline_cell(run)}</tr>"
        for run in runs
    )
    return (
        "<table><thead><tr><th>model</th><th>task</th><th>kind</th><th>samples</th><th>headline ± stderr</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _headline_cell(run: ReportRun) -> str:
    metrics = run.metrics
    name = next(iter(metrics), None)
    if name is None:
        return "<td>—</td>"
    return f"<td>{escape(name)} {_value(metrics[name])}</td>"


def _value(metric: MetricValue) -> str:
    value, stderr = metric.value, metric.stderr
    text = "—" if value is None else f"{value:.4f}"
    return text + ("" if stderr is None else f" ± {stderr:.4f}")


def _pm(accuracy: float, stderr: float) -> str:
    return f"{accuracy:.3f} ± {stderr:.3f}"


# --- One run ---------------------------------------------------------------------------------------


def _run_section(run: ReportRun) -> str:
    parts = [
        f'<section class="run" id="{_anchor(run.run_id)}">',
        f"<h3>{escape(run.model)} · {escape(run.task)}</h3>",
        _metrics_table(run),
        _provenance(run),
    ]
    if "top5" in run.frame.columns:
        parts.append(_zero_shot(run))
    elif "parsed_letter" in run.frame.columns:
        parts.append(_mcq(run))
    parts.append("</section>")
    return "\n".join(parts)


def _metrics_table(run: ReportRun) -> str:
    rows = "".join(f"<tr><td>{escape(name)}</td><td>{_value(m)}</td></tr>" for name, m in run.metrics.items())
    return (
        '<table class="metrics"><thead><tr><th>metric</th><th>value ± bootstrap stderr</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _provenance(run: ReportRun) -> str:
    subject, settings, provenance = run.record.subject, run.record.settings, run.record.provenance
    versions = ", ".join(f"{k} {v}" for k, v in provenance.versions.items())
    facts = [
        ("model", run.model),
        ("model revision", subject.model_revision),
        ("settings", settings.settings),
        ("seed / limit", f"{settings.seed} / {settings.limit or 'full run'}"),
        ("spec", f"{subject.spec_file} (sha256 {str(subject.spec_hash)[:12]})"),
        ("data", provenance.data_source),
        ("versions", versions),
        ("command", provenance.command),
        ("run", f"{run.run_id}, finished {provenance.finished_at}"),
    ]
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts if v is not None)
    return f'<details class="provenance"><summary>Provenance</summary><dl>{items}</dl></details>'


def _source_line(run: ReportRun) -> str:
    """The short provenance every figure carries: which run, which weights, which Mill, which command."""
    record = run.record
    revision = str(record.subject.model_revision or "unknown revision")
    version = record.provenance.versions.get("mill-core", "?")
    return (
        f"{run.model} (revision {revision[:19]}), run {run.run_id}, Mill {version}: "
        f"<code>{escape(record.provenance.command)}</code>"
    )


def _figure(title: str, content: str, sources: Iterable[ReportRun], kind: str = "chart") -> str:
    lines = "<br>".join(_source_line(run) for run in sources)
    return (
        f'<figure class="{kind}"><figcaption><b>{escape(title)}</b></figcaption>{content}'
        f'<p class="source">{lines}</p></figure>'
    )


def _table(frame: pl.DataFrame, headers: Sequence[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(v))}</td>" for v in row) + "</tr>" for row in frame.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "—" if value is None else str(value)


# --- Zero-shot ---------------------------------------------------------------------------------------


def _zero_shot(run: ReportRun) -> str:
    per_class = analysis.per_class_accuracy(run.frame, run.classnames)
    listed = per_class.select(
        "label", "n", pl.format("{} ± {}", pl.col("accuracy").round(3), pl.col("stderr").round(3)).alias("acc")
    )
    worst = _table(listed.head(N_CLASSES_LISTED), ["class", "samples", "accuracy ± stderr"])
    best = _table(listed.reverse().head(N_CLASSES_LISTED), ["class", "samples", "accuracy ± stderr"])
    pairs = analysis.confused_pairs(run.frame, N_PAIRS)
    parts = [
        _figure(
            "Accuracy per class, worst to best (band: ± binomial stderr)",
            charts.per_class_distribution(per_class),
            [run],
        ),
        '<div class="columns">',
        _figure(f"Worst {N_CLASSES_LISTED} classes", worst, [run], kind="listing"),
        _figure(f"Best {N_CLASSES_LISTED} classes", best, [run], kind="listing"),
        "</div>",
        _figure(
            "Most confused pairs (gold → predicted)",
            _table(pairs, ["gold", "predicted", "count", "share of gold class"])
            if pairs.height
            else "<p>No mistakes.</p>",
            [run],
            kind="listing",
        ),
        _figure("Misclassified images", _grid(run), [run], kind="grid"),
    ]
    return "\n".join(parts)


def _grid(run: ReportRun) -> str:
    wrong = analysis.misclassified(run.frame, GRID_SIZE).with_columns(
        analysis.top_labels(pl.col("top5"), run.classnames).alias("top_labels")
    )
    if wrong.is_empty():
        return "<p>No misclassified samples.</p>"
    source = run.record.provenance.data_source
    images: dict[str, bytes] = {}
    missing: list[str] = []
    for shard in wrong.get_column("shard").unique().sort().to_list():
        path = local_shard(source, shard)
        if path is None:
            missing.append(shard)
            continue
        keys = wrong.filter(pl.col("shard") == shard).get_column("key").to_list()
        try:
            images.update(read_images(path, keys))
        except (OSError, tarfile.TarError):
            missing.append(shard)
    cells = []
    for row in wrong.iter_rows(named=True):
        thumbnail = _thumbnail(images[row["key"]]) if row["key"] in images else None
        picture = (
            f'<img src="{thumbnail}" alt="{escape(row["key"])}" width="{THUMBNAIL_PX}">'
            if thumbnail
            else '<div class="noimage">image not available locally</div>'
        )
        top = "".join(f"<li>{escape(label)}</li>" for label in row["top_labels"])
        cells.append(
            f'<div class="cell">{picture}<p><b>gold</b> {escape(row["gold_label"])}<br>'
            f'<b>predicted</b> {escape(row["prediction_label"])}</p><ol class="top5">{top}</ol>'
            f'<p class="key">{escape(row["shard"])} · {escape(row["key"])}</p></div>'
        )
    note = ""
    if missing:
        note = (
            f'<p class="note">The shards {escape(", ".join(missing))} of {escape(source)} are not on this machine, '
            "so their images are not shown: the report reads thumbnails from local shards only and never "
            "downloads them.</p>"
        )
    return note + f'<div class="cells">{"".join(cells)}</div>'


def _thumbnail(data: bytes) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            small = image.convert("RGB")
            small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            small.save(buffer, format="PNG", optimize=True)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --- Multiple choice ---------------------------------------------------------------------------------


def _mcq(run: ReportRun) -> str:
    summary = generative_mcq.mcq_summary(run.frame).row(0, named=True)
    unparsed = generative_mcq.unparsed_responses(run.frame, N_UNPARSED)
    lines = (
        f"<p>Accuracy {_pm(summary['accuracy'], summary['stderr'])} (binomial) over {summary['n']} questions; "
        f"{summary['n_unparsed']} replies named no option (unparsed rate {summary['unparsed_rate']:.3f}).</p>"
    )
    sample = _table(unparsed, ["key", "gold", "response"]) if unparsed.height else "<p>Every reply named an option.</p>"
    return "\n".join(
        [
            lines,
            '<div class="columns">',
            _figure(
                "Accuracy by the gold option's position (± binomial stderr)",
                charts.accuracy_by_position(generative_mcq.accuracy_by_gold_position(run.frame)),
                [run],
            ),
            _figure(
                "Letters chosen, beside gold letters",
                charts.letter_distribution(generative_mcq.chosen_letters(run.frame)),
                [run],
            ),
            "</div>",
            _figure(f"Unparsed replies (up to {N_UNPARSED})", sample, [run], kind="listing"),
        ]
    )


# --- Several models on one benchmark ----------------------------------------------------------------------


def _comparison(group: Sequence[ReportRun], baseline: str | None) -> str:
    models = list(dict.fromkeys(run.model for run in group))
    reference = baseline if baseline in models else models[0]
    first: dict[str, ReportRun] = {}
    for run in group:  # a model with several variants here: its first one
        first.setdefault(run.model, run)
    per_class = {model: analysis.per_class_accuracy(run.frame, run.classnames) for model, run in first.items()}
    compared = analysis.against_baseline(per_class, reference)
    others = [model for model in models if model != reference]
    paired = pl.DataFrame(
        [(model, *_paired_accuracy(first[reference], first[model])) for model in others],
        schema=["model", "shared", "accuracy Δ (paired 95% CI)", "McNemar p"],
        orient="row",
    )
    summary = (
        compared.group_by("model", maintain_order=True)
        .agg(
            pl.len().alias("classes"),
            (pl.col("delta") > 0).sum().alias("better"),
            (pl.col("delta") < 0).sum().alias("worse"),
            pl.col("label").first().alias("largest loss"),
            pl.col("delta").first().alias("its Δ"),
        )
        .join(paired, on="model", how="left")
    )
    chart = charts.against_baseline(compared, reference, others)
    return "\n".join(
        [
            f"<p>Per-class accuracy of each model against the baseline <b>{escape(reference)}</b>"
            + ("" if baseline else " (the first model; choose another with --baseline)")
            + ".</p>",
            '<div class="columns">',
            _figure("Per-class accuracy against the baseline", chart, group),
            _figure(
                "Against the baseline, per model",
                _table(summary.select(list(_AGAINST_BASELINE)), list(_AGAINST_BASELINE.values())),
                group,
                kind="listing",
            ),
            "</div>",
        ]
    )


#: The columns of the table of models against the baseline, and their headers.
_AGAINST_BASELINE = {
    "model": "model",
    "shared": "shared samples",
    "accuracy Δ (paired 95% CI)": "accuracy Δ (paired 95% CI)",
    "McNemar p": "McNemar p",
    "classes": "classes",
    "better": "better",
    "worse": "worse",
    "largest loss": "largest loss",
    "its Δ": "its Δ",
}


def _paired_accuracy(baseline: ReportRun, run: ReportRun) -> tuple[str, str, str]:
    """The accuracy difference of ``run`` against ``baseline`` over the samples both scored, as cells: the shared
    sample count, the difference with its paired bootstrap 95% interval, McNemar's exact p-value; or why the two
    cannot be compared."""

    def compared(report: ReportRun) -> ComparedRun:
        return ComparedRun(
            name=report.model,
            benchmark=report.benchmark,
            variant=report.task,
            spec_hash=report.record.subject.spec_hash,
            samples=report.frame,
            run_id=report.run_id,
        )

    try:
        comparison = compare(compared(baseline), compared(run))
    except ComparisonError as exc:
        return "—", f"not comparable: {exc}", "—"
    accuracy = comparison.metric("accuracy")
    low, value, high = (round(accuracy[name], 4) + 0.0 for name in ("ci_low", "difference", "ci_high"))
    interval = f"{value:+.4f} [{low:+.4f}, {high:+.4f}]"
    return str(comparison.n_shared), interval, f"{comparison.mcnemar.p_value:.3g}"


def _anchor(text: str) -> str:
    return "r-" + "".join(c if c.isalnum() else "-" for c in text)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.4rem; } h2 { border-bottom: 1px solid #ccc; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
figure { margin: 1rem 0; padding: 0.5rem; border: 1px solid #eee; }
figure svg { max-width: 100%; height: auto; }
.columns { display: flex; flex-wrap: wrap; gap: 1rem; } .columns figure { flex: 1 1 420px; }
.source { font-size: 0.7rem; color: #666; margin: 0.3rem 0 0; } code { font-size: 0.7rem; }
.provenance dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.1rem 1rem; font-size: 0.8rem; }
.provenance dd { margin: 0; word-break: break-all; }
.cells { display: flex; flex-wrap: wrap; gap: 0.5rem; }
.cell { width: 150px; font-size: 0.75rem; border: 1px solid #eee; padding: 0.3rem; }
.cell p { margin: 0.2rem 0; } .top5 { margin: 0; padding-left: 1.2rem; color: #555; } .key { color: #888; }
.noimage { width: 128px; height: 128px; background: #f4f4f4; color: #888; display: flex; align-items: center; }
.note { background: #fff7e0; padding: 0.4rem; border: 1px solid #f0d890; }
"""

_DOCUMENT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""
