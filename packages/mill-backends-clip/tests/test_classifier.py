from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest
import torch
from attrs import evolve

from mill.backends.clip.backend import ClipBackend
from mill.backends.clip.classifier import _serialise, prompts_for
from mill.core.errors import NonFiniteError, SpecError
from mill.core.kinds.zero_shot import ZeroShotTask


def _no_text_encoding(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError("a classifier cache hit must not encode any text")


def test_second_run_hits_the_cache_without_encoding_text(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, tmp_path: Path
) -> None:
    first = load_tiny()
    built = first.classifier_for(task)
    assert first.run_info()["classifier_cache_hit"] is False
    assert first.run_info()["classifier_cache_key"] == first.classifier_key(task)
    assert (tmp_path / "cache" / "classifiers" / f"{first.classifier_key(task)}.pt").is_file()

    second = load_tiny()
    second.model.encode_text = _no_text_encoding
    loaded = second.classifier_for(task)
    assert second.run_info()["classifier_cache_hit"] is True
    assert torch.equal(loaded, built)


def test_key_names_everything_the_classifier_depends_on(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask
) -> None:
    backend = load_tiny()
    key = backend.classifier_key(task)
    assert key == load_tiny().classifier_key(task)
    assert backend.classifier_key(evolve(task, templates=(*task.templates, "art of a {c}."))) != key
    assert backend.classifier_key(evolve(task, classnames=("a", *task.classnames[1:]))) != key
    assert backend.classifier_key(evolve(task, classnames=task.classnames[::-1])) != key
    assert load_tiny(precision="amp_bf16").classifier_key(task) != key
    # Variant and benchmark names do not change the weights, so variants share a classifier.
    assert backend.classifier_key(evolve(task, variant="other", top_k=1)) == key


def _cache_file(backend: ClipBackend, task: ZeroShotTask) -> Path:
    return backend.context.cache_dir / "classifiers" / f"{backend.classifier_key(task)}.pt"


def _flip_one_value(path: Path) -> None:
    """Change one float of the stored tensor in place, keeping the file readable (a bit flipped on disk)."""
    entry = torch.load(path, weights_only=True)
    entry["classifier"][0, 0] += 0.5
    torch.save(entry, path)


def _wrong_shape(path: Path) -> None:
    entry = torch.load(path, weights_only=True)
    entry["classifier"] = entry["classifier"][:, :3].contiguous()
    torch.save(entry, path)


@pytest.mark.parametrize(
    ("damage", "warning"),
    [
        (lambda path: path.write_bytes(b"truncated"), "unreadable"),
        (lambda path: path.write_bytes(path.read_bytes()[:-100]), "unreadable"),
        (_flip_one_value, "checksum"),
        (_wrong_shape, "not a \\[dim, 30\\] tensor"),
        (lambda path: torch.save(torch.load(path, weights_only=True)["classifier"], path), "another version"),
    ],
    ids=["garbage", "truncated", "bit-flip", "wrong-shape", "old-format"],
)
def test_damaged_cache_entry_is_rebuilt_with_a_warning(
    load_tiny: Callable[..., ClipBackend],
    task: ZeroShotTask,
    damage: Callable[[Path], None],
    warning: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = load_tiny()
    built = backend.classifier_for(task)
    path = _cache_file(backend, task)
    damage(path)
    again = load_tiny()
    rebuilt = again.classifier_for(task)
    assert again.run_info()["classifier_cache_hit"] is False
    assert torch.equal(rebuilt, built)
    assert any(re.search(warning, r.getMessage()) and str(path) in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]
    # Rewritten whole: the next load is a hit, without a warning.
    caplog.clear()
    third = load_tiny()
    assert torch.equal(third.classifier_for(task), built)
    assert third.run_info()["classifier_cache_hit"] is True
    assert not caplog.records


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_cache_write_that_fails_warns_and_goes_on_uncached(
    load_tiny: Callable[..., ClipBackend],
    task: ZeroShotTask,
    code: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reference = load_tiny(cache_dir=tmp_path / "reference").classifier_for(task)
    real_write = Path.write_bytes

    def failing_write(self: Path, data: Any) -> int:
        if self.name.endswith(".tmp") and ".pt." in self.name:
            raise OSError(code, os.strerror(code), str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing_write)
    backend = load_tiny()
    classifier = backend.classifier_for(task)
    assert torch.equal(classifier, reference)
    assert backend.run_info()["classifier_cache_hit"] is False
    path = _cache_file(backend, task)
    assert not path.exists()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no partial file left
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot write cache file" in m and os.strerror(code) in m for m in messages), messages


def test_a_cache_directory_that_cannot_be_locked_warns_and_goes_on(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A file where the cache directory should be: neither the lock nor the entry can be created.
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    backend = load_tiny(cache_dir=blocked)
    classifier = backend.classifier_for(task)
    assert classifier.shape == (backend.model.text_projection.shape[1], len(task.classnames))
    assert any("cannot lock cache file" in r.getMessage() for r in caplog.records)


def test_a_non_finite_classifier_stops_the_run_naming_the_classes_and_is_not_cached(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask
) -> None:
    backend = load_tiny(text_batch_size=1000)  # every prompt in one text batch, class-major
    real = backend.model.encode_text
    # Every prompt of goldfish and great white shark (classes 1 and 2) overflows, as in float16.
    rows = torch.tensor([c * len(task.templates) + t for c in (1, 2) for t in range(len(task.templates))])
    backend.model.encode_text = lambda tokens: real(tokens).index_fill(0, rows, float("inf"))
    with pytest.raises(NonFiniteError, match=r"2 of 30 classes: 'goldfish', 'great white shark'; .*precision=fp32"):
        backend.classifier_for(task)
    assert not _cache_file(backend, task).exists()


def test_a_cached_classifier_with_non_finite_values_is_rebuilt(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, caplog: pytest.LogCaptureFixture
) -> None:
    backend = load_tiny()
    built = backend.classifier_for(task)
    path = _cache_file(backend, task)
    nan = built.clone()
    nan[0, 4] = float("nan")
    path.write_bytes(_serialise(nan))  # checksum and all: only the values are wrong
    assert torch.equal(load_tiny().classifier_for(task), built)
    assert any("non-finite" in r.getMessage() for r in caplog.records)


def test_text_batching_does_not_change_the_classifier(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, tmp_path: Path
) -> None:
    whole = load_tiny(cache_dir=tmp_path / "a").classifier_for(task)
    chunked = load_tiny(cache_dir=tmp_path / "b", text_batch_size=7).classifier_for(task)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    norms = whole.norm(dim=0)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_prompts_are_class_major_and_need_a_placeholder() -> None:
    assert prompts_for(("cat", "dog"), ("a {c}.", "the {c}!")) == ["a cat.", "the cat!", "a dog.", "the dog!"]
    with pytest.raises(SpecError, match="no \\{c\\} placeholder"):
        prompts_for(("cat",), ("a photo.",))
