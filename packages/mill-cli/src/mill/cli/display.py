"""How the CLI shows progress: rich bars on a terminal, plain lines otherwise, nothing with --quiet."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second, blank until rich has measured a speed."""

    def render(self, task: Task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:.1f}/s")


class RichProgress:
    """Implements :class:`mill.core.progress.Progress` with a rich bar per phase (count, rate, ETA)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def start(self, phase: str, total: int | None = None) -> None:
        self.finish()
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(escape(phase), total=total)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar = None
        self._task = None


class PlainProgress:
    """Progress as plain lines for logs (stdout not a terminal): a line per phase and at most one
    progress line every ``interval`` seconds, with count, rate and ETA."""

    def __init__(self, console: Console, interval: float = 30.0) -> None:
        self._console = console
        self._interval = interval
        self._phase = ""
        self._total: int | None = None
        self._done = 0
        self._started = 0.0
        self._last = 0.0

    def start(self, phase: str, total: int | None = None) -> None:
        self._phase, self._total, self._done = phase, total, 0
        self._started = self._last = time.monotonic()
        self._console.print(f"{phase}" + (f" ({total} items)" if total else ""), highlight=False, markup=False)

    def advance(self, n: int = 1) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._console.print(self._line(now), highlight=False, markup=False)

    def finish(self) -> None:
        if self._phase and self._total:
            self._console.print(self._line(time.monotonic()), highlight=False, markup=False)
        self._phase = ""

    def _line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        line = f"  {self._phase}: {self._done}" + (f"/{self._total}" if self._total else "")
        line += f" ({rate:.1f}/s"
        if self._total and rate > 0:
            line += f", ETA {max(self._total - self._done, 0) / rate:.0f}s"
        return line + ")"
