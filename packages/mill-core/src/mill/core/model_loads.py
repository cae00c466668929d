"""One model load for all the runs of one evaluation: a suite's members, or a comma list of benchmarks.

The engine asks a run's plugin for its backend at the start of every run (:func:`mill.core.planning.load_backend`).
:func:`share_model_loads` hands the runs of one model a plugin that loads the model for the first of them and,
for the others, asks the loaded backend for a fresh one over the same weights (:class:`ReusableBackend`), so
that nothing of one run (its batch size fall-backs, its classifier's cache facts) reaches the next run's
manifest. A backend that cannot do that is loaded again for each run, as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from attrs import evolve

from mill.core.backend import Backend, BackendArgs, BackendPlugin, Capabilities, RunContext
from mill.core.plugins import LoadedPlugin

if TYPE_CHECKING:
    from mill.core.planning import PlannedRun


@runtime_checkable
class ReusableBackend(Backend, Protocol):
    """A backend whose loaded model can serve another run."""

    def for_next_run(self) -> Backend:
        """A backend over the same loaded weights and arguments, with none of this one's per-run state."""
        ...


class SharedLoad:
    """A plugin that loads its model once for ``uses`` runs, then lets go of it (so a second model of the same
    evaluation does not share the device with the first)."""

    def __init__(self, plugin: BackendPlugin, uses: int) -> None:
        self._plugin = plugin
        self._uses_left = uses
        self._held: ReusableBackend | None = None
        #: How many times the model was actually loaded (tests and benchmarks read it).
        self.loads = 0

    @property
    def holds_model(self) -> bool:
        """Whether the next :meth:`load` reuses the loaded weights instead of loading them."""
        return self._held is not None

    def capabilities(self, args: BackendArgs) -> Capabilities:
        return self._plugin.capabilities(args)

    def load(self, args: BackendArgs, context: RunContext) -> Backend:
        self._uses_left -= 1
        backend: Backend
        if self._held is not None:
            backend = self._held.for_next_run()
        else:
            backend = self._plugin.load(args, context)
            self.loads += 1
        self._held = backend if isinstance(backend, ReusableBackend) and self._uses_left > 0 else None
        return backend


def share_model_loads(planned: Sequence[PlannedRun]) -> list[PlannedRun]:
    """``planned`` with the runs of each model (those :func:`mill.core.planning.plan_runs` resolved together)
    sharing one :class:`SharedLoad` of its plugin."""
    uses = Counter(id(run.model) for run in planned)
    shared: dict[int, LoadedPlugin] = {}
    runs = []
    for run in planned:
        key = id(run.model)
        if key not in shared:
            plugin = SharedLoad(run.plugin.plugin, uses[key])
            shared[key] = LoadedPlugin(run.plugin.name, plugin, run.plugin.distribution)
        runs.append(evolve(run, plugin=shared[key]))
    return runs
