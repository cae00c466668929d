"""Which batch size computed each sample (issue 21): under bf16 autocast a sample's result may depend on its batch's
size, so the out-of-memory fall-back and a run resumed at the smaller size are recorded per sample, in the
``batch_size`` column of the committed chunks and the per-sample file, and counted in the run's record; ``mill
verify`` accepts several sizes in one run and reports a record whose counts disagree with the column.

The fall-back is injected on CPU by replacing the tiny CLIP's image tower: it runs out of memory on more images
than it is allowed at a time.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch

from mill.backends.clip.backend import ClipBackend
from mill.core.checksum import MANIFEST_HASH_KEY, manifest_digest
from mill.core.chunks import RUNS_DIR
from mill.core.verify import Status, verify

# The model's batch size (conftest.small_batch_clip) and the size it falls back to.
REQUESTED, FALLEN_BACK = 4, 2
N_SAMPLES = 60


class _Tower:
    """Stands in for ``ClipBackend.image_features``: computes up to ``REQUESTED`` images at a time for its first
    ``fit_calls`` calls, then runs out of memory on more than ``FALLEN_BACK``; Ctrl-C at call ``interrupt_at``."""

    def __init__(self, fit_calls: int, interrupt_at: int | None = None) -> None:
        self.real = ClipBackend.image_features
        self.fit_calls, self.interrupt_at = fit_calls, interrupt_at
        self.computed: list[int] = []

    def __call__(self, backend: ClipBackend, images: torch.Tensor) -> torch.Tensor:
        if len(self.computed) == self.interrupt_at:
            raise KeyboardInterrupt
        if len(self.computed) >= self.fit_calls and len(images) > FALLEN_BACK:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.computed.append(len(images))
        return self.real(backend, images)


def _run(run_mill: Any, argv: list[str], tower: _Tower | None, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        if tower is not None:
            patch.setattr(ClipBackend, "image_features", lambda backend, images: tower(backend, images))
        return run_mill(*argv)


def _stored(out: Path) -> tuple[pl.DataFrame, dict[str, Any], Path]:
    """The run's per-sample file, its manifest (parsed) and the manifest's path."""
    (per_sample,) = (out / "outputs").rglob("*.parquet")
    manifest_file = per_sample.with_suffix(".json")
    return pl.read_parquet(per_sample), json.loads(manifest_file.read_text()), manifest_file


def _sizes(frame: pl.DataFrame) -> dict[str, int]:
    return dict(zip(frame["key"].to_list(), frame["batch_size"].to_list(), strict=True))


def test_each_sample_names_the_batch_size_that_computed_it_after_a_fall_back(
    tmp_path: Path, eval_argv: Any, run_mill: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    tower = _Tower(fit_calls=3)
    outcome = _run(run_mill, eval_argv(out), tower, monkeypatch)
    assert outcome.code == 0, outcome.err
    assert tower.computed == [REQUESTED] * 3 + [FALLEN_BACK] * ((N_SAMPLES - 3 * REQUESTED) // FALLEN_BACK)
    frame, manifest, _ = _stored(out)
    # Every sample names the size of the slice that computed it: 12 at 4, the 48 after the fall-back at 2.
    computed = Counter({size: size * n for size, n in Counter(tower.computed).items()})
    assert Counter(frame["batch_size"].to_list()) == computed == {REQUESTED: 12, FALLEN_BACK: 48}
    assert manifest["run_info"]["samples_by_batch_size"] == {str(REQUESTED): 12, str(FALLEN_BACK): 48}
    assert manifest["run_info"]["out_of_memory_fallbacks"] == [{"from": REQUESTED, "to": FALLEN_BACK}]
    # Two sizes in one run are expected, not a mismatch.
    assert {check.status for check in verify(out)} == {Status.VERIFIED}


def test_a_run_resumed_after_the_fall_back_keeps_each_earlier_samples_size(
    tmp_path: Path, eval_argv: Any, run_mill: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    interrupted = _run(run_mill, eval_argv(out), _Tower(fit_calls=3, interrupt_at=10), monkeypatch)
    assert interrupted.code != 0 and "interrupted" in interrupted.err
    (run_dir,) = (out / RUNS_DIR).iterdir()
    committed = _sizes(pl.read_parquet(list(run_dir.glob("chunk-*.parquet"))))
    assert set(committed.values()) == {REQUESTED, FALLEN_BACK}, committed  # both sizes were committed

    resumed_tower = _Tower(fit_calls=0)  # it would run out of memory above 2: the resumed run starts at 2
    resumed = _run(run_mill, eval_argv(out), resumed_tower, monkeypatch)
    assert resumed.code == 0, resumed.err
    assert set(resumed_tower.computed) == {FALLEN_BACK}
    frame, manifest, manifest_file = _stored(out)
    assert manifest["n_reused"] == len(committed)
    sizes = _sizes(frame)
    assert {key: sizes[key] for key in committed} == committed  # the earlier process's sizes, as it computed them
    assert {sizes[key] for key in sizes.keys() - committed.keys()} == {FALLEN_BACK}
    counts = Counter(sizes.values())
    assert manifest["run_info"]["samples_by_batch_size"] == {str(size): n for size, n in counts.items()}
    assert {check.status for check in verify(out)} == {Status.VERIFIED}
    assert run_mill("verify", "--output_dir", str(out)).code == 0

    # A record whose counts disagree with the column (sealed again, so only the counts are wrong) is reported.
    manifest["run_info"]["samples_by_batch_size"] = {str(REQUESTED): N_SAMPLES}
    manifest[MANIFEST_HASH_KEY] = manifest_digest(manifest)
    manifest_file.write_text(json.dumps(manifest))
    checks = verify(out)
    assert {check.status for check in checks} == {Status.MISMATCHED}
    assert f"counts samples per batch size as {N_SAMPLES} at {REQUESTED}, the batch_size column" in checks[0].detail
    assert run_mill("verify", "--output_dir", str(out)).code == 2
