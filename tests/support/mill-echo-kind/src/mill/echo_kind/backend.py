"""The ``label_echo`` backend: serves ``label_parity`` by echoing each sample's label modulo the task's modulus.

``wrong_below=N`` answers wrongly for every sample whose label is below N, so a test knows the accuracy
a run must report. Imports nothing heavy: this module is the ``mill.backends`` entry point itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from attrs import asdict, frozen

from mill.core.backend import BackendArgs, Capabilities, ModelInfo, RunContext
from mill.core.convert import structure
from mill.core.errors import BackendArgumentError
from mill.core.sample import SampleSource
from mill.echo_kind import kind
from mill.echo_kind.kind import ParityBatchResult, ParityTask

#: The backend's entry-point name and the identity of its one "model".
NAME = "label_echo"
DEFAULT_BATCH_SIZE = 4


@frozen
class EchoArgs:
    """The model spec's arguments: ``label_echo[wrong_below=3,batch_size=8]``."""

    wrong_below: int = 0
    batch_size: int | None = None

    @classmethod
    def from_mapping(cls, args: BackendArgs) -> EchoArgs:
        try:
            return structure(dict(args), cls)
        except ValueError as exc:
            raise BackendArgumentError(f"{NAME} backend: {exc}") from None


class EchoBackend:
    """Answers every sample from its label (:mod:`mill.echo_kind.backend`)."""

    def __init__(self, args: EchoArgs, context: RunContext) -> None:
        self.args = args
        self.batch_size = args.batch_size or context.batch_size or DEFAULT_BATCH_SIZE
        self.n_batches = 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            identity=NAME,
            settings={"wrong_below": str(self.args.wrong_below)},
            resolved_args={**asdict(self.args), "batch_size": self.batch_size},
            default_settings=self.args.wrong_below == 0,
        )

    def run_info(self) -> Mapping[str, Any]:
        return {"n_batches": self.n_batches}

    def run_parity(self, task: ParityTask, data: SampleSource) -> Iterator[ParityBatchResult]:
        for batch in data.batches(batch_size=self.batch_size):
            self.n_batches += 1
            answers = [(label + (label < self.args.wrong_below)) % task.modulus for label in batch.labels]
            yield ParityBatchResult(batch.keys, batch.shards, batch.labels, answers)


@frozen
class EchoPlugin:
    """The ``label_echo`` entry point of the ``mill.backends`` group."""

    def capabilities(self, args: BackendArgs) -> Capabilities:
        EchoArgs.from_mapping(args)
        return Capabilities(kinds=frozenset({kind.NAME}))

    def load(self, args: BackendArgs, context: RunContext) -> EchoBackend:
        return EchoBackend(EchoArgs.from_mapping(args), context)


plugin = EchoPlugin()
