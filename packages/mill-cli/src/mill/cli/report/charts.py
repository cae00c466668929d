"""The report's charts: matplotlib figures rendered to inline SVG (text kept as text, no external
references), drawn with the object-oriented API so that no pyplot state or GUI backend is involved.

matplotlib is imported here only, and this module only by ``mill report``: ``mill eval`` never pays for it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import polars as pl

from mill.core.errors import MillError


class ReportDependencyError(MillError):
    """``mill report`` needs its extra (matplotlib), which is not installed."""


def _figure(width: float, height: float) -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportDependencyError(
            "mill report draws its charts with matplotlib, which is not installed: pip install 'mill-cli[report]'"
        ) from None
    # Text as <text> (small, selectable) and ids without randomness (the same results give the same file).
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "mill-report", "font.size": 9})
    return Figure(figsize=(width, height), layout="constrained")


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return re.sub(r"^.*?(<svg\b)", r"\1", text, count=1, flags=re.DOTALL)


def per_class_distribution(per_class: pl.DataFrame) -> str:
    """Every class's accuracy, sorted, with its standard error as a band: the whole distribution."""
    figure = _figure(7.0, 2.6)
    axes = figure.add_subplot()
    ordered = per_class.sort("accuracy", "gold")
    x = list(range(ordered.height))
    accuracy = ordered.get_column("accuracy").to_list()
    stderr = ordered.get_column("stderr").to_list()
    axes.fill_between(
        x,
        [a - s for a, s in zip(accuracy, stderr, strict=True)],
        [a + s for a, s in zip(accuracy, stderr, strict=True)],
        alpha=0.25,
        lw=0,
    )
    axes.plot(x, accuracy, marker="o" if len(x) <= 60 else None, ms=3, lw=1.2)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel(f"classes, worst to best ({len(x)})")
    axes.set_ylabel("accuracy per class")
    axes.grid(alpha=0.3)
    return _svg(figure)


def accuracy_by_position(by_position: pl.DataFrame) -> str:
    """Accuracy by the gold option's letter, with binomial standard errors."""
    figure = _figure(4.2, 2.6)
    axes = figure.add_subplot()
    letters = by_position.get_column("gold_letter").to_list()
    axes.bar(
        letters,
        by_position.get_column("accuracy").to_list(),
        yerr=by_position.get_column("stderr").to_list(),
        capsize=3,
        color="#4878a8",
    )
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("gold option's letter")
    axes.set_ylabel("accuracy")
    axes.grid(axis="y", alpha=0.3)
    return _svg(figure)


def letter_distribution(chosen: pl.DataFrame) -> str:
    """How often each letter was chosen, beside how often it was the gold one."""
    figure = _figure(4.6, 2.6)
    axes = figure.add_subplot()
    letters = chosen.get_column("letter").to_list()
    x = list(range(len(letters)))
    axes.bar([i - 0.2 for i in x], chosen.get_column("chosen_share").to_list(), width=0.4, label="chosen")
    axes.bar([i + 0.2 for i in x], chosen.get_column("gold_share").to_list(), width=0.4, label="gold")
    axes.set_xticks(x, letters)
    axes.set_ylabel("share of samples")
    axes.legend(frameon=False)
    axes.grid(axis="y", alpha=0.3)
    return _svg(figure)


def against_baseline(compared: pl.DataFrame, baseline: str, models: Sequence[str]) -> str:
    """Each model's per-class accuracy (y) against the baseline's (x); points above the diagonal are
    classes the model does better on."""
    figure = _figure(4.6, 4.0)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--")
    for model in models:
        mine = compared.filter(pl.col("model") == model)
        axes.scatter(
            mine.get_column("baseline_accuracy").to_list(),
            mine.get_column("accuracy").to_list(),
            s=12,
            alpha=0.7,
            label=_short(model),
        )
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel(f"per-class accuracy of {_short(baseline)} (baseline)")
    axes.set_ylabel("per-class accuracy")
    axes.legend(frameon=False, fontsize=7)
    axes.grid(alpha=0.3)
    return _svg(figure)


def _short(model: str, width: int = 40) -> str:
    return model if len(model) <= width else "…" + model[-(width - 1) :]
