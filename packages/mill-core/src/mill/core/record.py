"""The record of one finished run: what was evaluated, how, on what, what came out, and the hashes of its files.

The engine builds a :class:`RunRecord` once, when a run is scored; the results directory
(:mod:`mill.core.results_dir`) writes it as the JSON manifest beside the per-sample file, and ``mill verify``,
``rescore``, ``collect`` and ``report`` read it back as this type, never by dict key. On disk it is one flat JSON
object (the keys Mill 0.1.0 wrote, so its manifests still read): :data:`RECORD_CONVERTER` flattens the groups
below into it and gathers them back. ``manifest_sha256`` is the hash of that object without itself
(:func:`mill.core.checksum.manifest_digest`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, get_type_hints

import attrs
import cattrs
from attrs import field, frozen

from mill.core.batch_size import SAMPLES_BY_BATCH_SIZE_KEY
from mill.core.checksum import MANIFEST_HASH_KEY, manifest_digest
from mill.core.convert import make_converter, structure
from mill.core.metrics import MetricValue
from mill.core.rows import AggregateRow, RunFacts, run_rows


@frozen
class Headline:
    """The variant's headline ``metric``, and the benchmark metric its rollup row carries it under."""

    metric: str
    benchmark_metric: str


@frozen
class Shard:
    """A shard read by the run: name, size in bytes, content sha256 (None where the source has none), and for a
    remote shard the server's version of the copy read (ETag, Last-Modified or hub commit)."""

    name: str
    size: int
    sha256: str | None
    version: str | None = None


@frozen
class Skipped:
    """A sample skipped as unreadable (``--on_bad_sample skip``)."""

    key: str
    shard: str
    reason: str


@frozen
class RescoreNote:
    """One ``mill rescore`` of the run: when, from which grading rules to which, how many answers changed, and
    the file the previous per-sample results were kept in."""

    at: str
    from_scorer_version: int
    to_scorer_version: int
    changed: int
    previous_file: str


# Every key but the metrics' parts has a default: manifests written before a key was recorded (and the
# hand-written ones of tests) read as records; what a check needs is asked for by RunRecord.verifiable.


@frozen
class Subject:
    """What was evaluated: the model (as asked for and as identified) on which benchmark variant."""

    model: str = ""
    benchmark: str = ""
    variant: str = ""
    model_spec: str = ""
    backend: str = ""
    model_revision: str | None = None
    task_type: str | None = None  # None: written before Mill recorded it (such a run is unverifiable)
    spec_file: str | None = None
    spec_hash: str | None = None


@frozen
class Settings:
    """How it was evaluated: the settings that change outputs, the variant as scored, seed and limit."""

    seed: int | None = None
    settings: str = ""
    limit: int | None = None
    default_settings: bool | None = None
    resolved_args: Mapping[str, Any] = field(factory=dict)
    variant_config: Mapping[str, Any] | None = None
    headline: Headline | None = None
    #: Whether the headline gives the benchmark's rollup row (the variant the model gets by default);
    #: None in a record of Mill 0.1.0, which did not say.
    rolls_up: bool | None = None
    on_bad_sample: str = "fail"


@frozen
class Provenance:
    """Where the numbers came from: command, data, versions, device, the backend's run info, timing."""

    run_id: str = ""
    finished_at: str | None = None
    command: str = ""
    data_source: str = ""
    shards: tuple[Shard, ...] = ()
    versions: Mapping[str, str | None] = field(factory=dict)
    device_type: str | None = None
    run_info: Mapping[str, Any] = field(factory=dict)
    run_dir: str | None = None
    n_reused: int = 0
    started_at: str | None = None
    rescored: tuple[RescoreNote, ...] = ()

    @property
    def samples_by_batch_size(self) -> dict[int, int]:
        """How many samples were computed in batches of each size, as the backend's ``run_info`` records it
        (empty for a backend that does not say). Under reduced precision a sample's result may depend on its
        batch's size (docs/outputs.md), so a run resumed at another size holds several, as expected."""
        counts = self.run_info.get(SAMPLES_BY_BATCH_SIZE_KEY)
        if not isinstance(counts, Mapping):
            return {}
        return {int(size): n for size, n in counts.items() if str(size).isdigit() and isinstance(n, int)}


@frozen
class Outcome:
    """What came out: the metrics with their bootstrap stderr, sample counts, and the grading rules' version
    (None for a kind without versioned rules)."""

    metrics: Mapping[str, MetricValue] = field(factory=dict)
    n_samples: int | None = None
    n_skipped: int = 0
    incomplete: bool = False
    skipped: tuple[Skipped, ...] = ()
    scorer_version: int | None = None


@frozen
class Files:
    """The sha256 of the per-sample file and of the record itself (None: written before Mill recorded hashes)."""

    per_sample_sha256: str | None = None
    manifest_sha256: str | None = None


@frozen
class RunRecord:
    """Everything one run produced and was produced from (docs/outputs.md lists each key)."""

    subject: Subject
    settings: Settings
    provenance: Provenance
    outcome: Outcome
    files: Files = Files()

    @property
    def verifiable(self) -> bool:
        """Whether it records what a check needs: hashes, the kind, the headline (Mill 0.1.0's manifests do)."""
        return None not in (
            self.settings.seed,
            self.provenance.finished_at,
            self.outcome.n_samples,
            self.subject.task_type,
            self.settings.default_settings,
            self.settings.headline,
            self.files.per_sample_sha256,
            self.files.manifest_sha256,
        )

    def facts(self, output_file: str) -> RunFacts:
        """What every aggregate row of the run shares; ``output_file`` is its per-sample file, relative to the
        results directory. Requires :attr:`verifiable`."""
        finished = dt.datetime.fromisoformat(str(self.provenance.finished_at)).isoformat(timespec="seconds")
        return RunFacts(
            model=self.subject.model,
            benchmark=self.subject.benchmark,
            task_type=str(self.subject.task_type),
            n_samples=int(self.outcome.n_samples or 0),
            seed=int(self.settings.seed or 0),
            limit=self.settings.limit,
            settings=self.settings.settings,
            default_settings=bool(self.settings.default_settings),
            run_id=self.provenance.run_id,
            incomplete=self.outcome.incomplete,
            n_skipped=self.outcome.n_skipped,
            output_file=output_file,
            finished_at=finished,
            scorer_version=self.outcome.scorer_version,
        )

    def rows(self, output_file: str, *, rolls_up: bool | None = None) -> list[AggregateRow]:
        """The aggregate rows of the run, as the engine writes them. ``rolls_up`` decides whether the headline
        gives a rollup row where the record does not say (Mill 0.1.0's); where neither does, it does."""
        headline = self.settings.headline
        assert headline is not None, "rows of a record that is not verifiable"
        decided = self.settings.rolls_up if self.settings.rolls_up is not None else rolls_up
        pair = None if decided is False else (headline.metric, headline.benchmark_metric)
        return run_rows(self.facts(output_file), self.subject.variant, self.outcome.metrics, pair)

    def with_digests(self, per_sample_sha256: str) -> RunRecord:
        """This record naming ``per_sample_sha256``, with its own hash recomputed (after any change)."""
        files = Files(per_sample_sha256=per_sample_sha256, manifest_sha256=None)
        unsealed = attrs.evolve(self, files=files)
        digest = manifest_digest(to_json(unsealed))
        return attrs.evolve(unsealed, files=attrs.evolve(files, manifest_sha256=digest))


def _converter() -> cattrs.Converter:
    """The project's strict converter, with :class:`RunRecord` flattened into one JSON object and back."""
    converter = make_converter()
    hints = get_type_hints(RunRecord)
    groups = [(group.name, hints[group.name]) for group in attrs.fields(RunRecord)]

    def unstructure(record: RunRecord) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for name, _ in groups:
            flat.update(converter.unstructure(getattr(record, name)))
        return flat

    def structure_record(flat: Any, _: type) -> RunRecord:
        if not isinstance(flat, Mapping):
            raise TypeError(f"expected a JSON object, got {type(flat).__name__}")
        parts = {}
        for name, group in groups:
            keys = {f.name for f in attrs.fields(group)}  # keys of a later Mill are not this one's to judge
            parts[name] = converter.structure({k: v for k, v in flat.items() if k in keys}, group)
        return RunRecord(**parts)

    converter.register_unstructure_hook(RunRecord, unstructure)
    converter.register_structure_hook(RunRecord, structure_record)
    return converter


RECORD_CONVERTER = _converter()


def to_json(record: RunRecord) -> dict[str, Any]:
    """The record as the flat JSON object a manifest holds."""
    flat: dict[str, Any] = RECORD_CONVERTER.unstructure(record)
    return flat


def from_json(document: Any) -> RunRecord:
    """A manifest's JSON object as a record.

    Raises:
        ValueError: one ``key: problem`` line per key that is missing or of the wrong type.
    """
    return structure(document, RunRecord, converter=RECORD_CONVERTER)


def intact(document: Mapping[str, Any]) -> bool:
    """Whether a manifest's JSON object matches the hash it records of itself."""
    return document.get(MANIFEST_HASH_KEY) == manifest_digest(document)
