"""Every benchmark's data opened before the first run: a suite with datasets missing fails at once, naming each
missing one and where its shards come from, instead of after the members that were there have run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mill.core.errors import DataError
from mill.core.sample import DataOpener, Dataset, ReadOptions
from mill.core.spec import Spec

if TYPE_CHECKING:
    from mill.core.planning import PlannedRun, RunOptions


class OpenedDatasets:
    """A :class:`~mill.core.sample.DataOpener` serving the datasets :func:`open_every_dataset` opened (each
    benchmark once, however many models run on it); anything else goes to the opener behind it."""

    def __init__(self, opened: dict[tuple[str, str | None, ReadOptions], Dataset], opener: DataOpener) -> None:
        self._opened = opened
        self._opener = opener

    def __call__(self, spec: Spec, data_dir: str | None, options: ReadOptions) -> Dataset:
        found = self._opened.get((spec.content_hash, data_dir, options))
        return found if found is not None else self._opener(spec, data_dir, options)


def open_every_dataset(planned: Sequence[PlannedRun], options: RunOptions, opener: DataOpener) -> OpenedDatasets:
    """Open the data of every benchmark in ``planned``, as :func:`mill.core.engine.execute` would.

    Raises:
        DataError: one line per benchmark whose data could not be opened, each with the data layer's message
            (which names where the shards come from and how to put them in place); nothing has run. With a
            single benchmark, the data layer's error itself.
    """
    opened: dict[tuple[str, str | None, ReadOptions], Dataset] = {}
    problems: dict[str, str] = {}
    benchmarks = len({run.spec.name for run in planned})
    read_options = options.read_options()
    for run in planned:
        spec = run.spec
        data_dir = options.data_dirs.get(spec.name, options.default_data_dir)
        key = (spec.content_hash, data_dir, read_options)
        if key in opened or spec.name in problems:
            continue
        try:
            opened[key] = opener(spec, data_dir, read_options)
        except DataError as error:
            if benchmarks == 1:
                raise  # the data layer's own message says everything
            problems[spec.name] = str(error).replace("\n", "\n    ")
    if problems:
        listed = "\n".join(f"  {name}: {problem}" for name, problem in problems.items())
        raise DataError(f"{len(problems)} of {benchmarks} benchmarks have no data here; nothing was run:\n{listed}")
    return OpenedDatasets(opened, opener)
