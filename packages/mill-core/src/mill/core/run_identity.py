"""The identity of a run: every input that can change one of its numbers.

Work committed by an interrupted run is reused only by a run with the same identity, so anything
that can change a per-sample result or a metric belongs here: the model and its weights, the
backend arguments that change outputs, the spec's content, the variant, seed and limit, the exact
shards read, and the versions of Mill and of the libraries that compute the numbers. Arguments
that only change speed (batch size, worker count, which GPU) are left out, so that a run that ran
out of memory can resume with a smaller batch. So is ``--on_bad_sample``: it changes no sample's
result, only whether an unreadable sample stops the run (see :meth:`ChunkStore.done_keys`), so a run
stopped by a bad image resumes with ``--on_bad_sample skip``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import asdict, field, frozen

from mill.core.backend import ModelInfo

#: Run-level arguments shared by every backend (they come from RunContext flags) that decide how fast
#: samples are processed, not what comes out; a resumed run may change them.
SPEED_ONLY_ARGS = frozenset({"batch_size", "num_workers", "device"})


def _sorted_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value[key] for key in sorted(value)}


@frozen
class RunIdentity:
    """Everything a run's numbers depend on, as plain JSON-able values.

    ``settings`` are the output-changing settings (the model's, plus the variant's, such as
    ``max_new_tokens``); ``model_args`` every resolved backend argument except
    :data:`SPEED_ONLY_ARGS`; ``shards`` (name, size in bytes, content sha256 or None) in reading order.
    """

    model: str
    revision: str | None
    settings: Mapping[str, str] = field(converter=_sorted_dict)
    model_args: Mapping[str, Any] = field(converter=_sorted_dict)
    device_type: str
    versions: Mapping[str, str] = field(converter=_sorted_dict)
    benchmark: str
    spec_hash: str
    variant: str
    seed: int
    limit: int | None
    shards: tuple[tuple[str, int, str | None], ...]

    @classmethod
    def of(
        cls,
        info: ModelInfo,
        *,
        settings: Mapping[str, str],
        versions: Mapping[str, str],
        benchmark: str,
        spec_hash: str,
        variant: str,
        seed: int,
        limit: int | None,
        shards: Sequence[tuple[str, int, str | None]],
    ) -> RunIdentity:
        """The identity of running the loaded model ``info`` with these inputs.

        ``versions`` holds Mill's own distributions; the model's library versions are added to it.
        """
        return cls(
            model=info.identity,
            revision=info.revision,
            settings=settings,
            model_args={k: v for k, v in info.resolved_args.items() if k not in SPEED_ONLY_ARGS},
            device_type=info.device_type,
            versions={**versions, **info.library_versions},
            benchmark=benchmark,
            spec_hash=spec_hash,
            variant=variant,
            seed=seed,
            limit=limit,
            shards=tuple((name, size, sha256) for name, size, sha256 in shards),
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form; arguments that are not JSON values (paths, enums) become strings."""
        document: dict[str, Any] = json.loads(self.canonical())
        return document

    def canonical(self) -> str:
        """The identity as canonical JSON: equal identities give equal text."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), default=str)

    def digest(self) -> str:
        """A 32-hex-digit digest of :meth:`canonical`, used to name the run's directory."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:32]
