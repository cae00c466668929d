"""Shared fixtures for mill-data tests: synthetic shards and hand-made tars written on the fly. (The local
http server, ``serve``, comes from the ``mill_testing`` plugin.)"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen
from PIL import Image

from mill.core.sample import ReadOptions
from mill.core.spec import DatasetSpec
from mill.data import ShardDataset, download, open_dataset, write_synthetic_shards

N_CLASSES = 10
PER_CLASS = 5
N_SHARDS = 3
TOTAL = N_CLASSES * PER_CLASS


@frozen
class Shape:
    """The size of the wds_dir / clip_dir datasets, for tests that check counts."""

    n_classes: int = N_CLASSES
    per_class: int = PER_CLASS
    total: int = TOTAL


@pytest.fixture(scope="session")
def shape() -> Shape:
    return Shape()


@pytest.fixture(scope="session")
def wds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only wds_imagenet1k-layout dataset: test/{0,1,2}.tar, 50 samples, members <key>.0.webp/.cls.

    Tests that damage shards must copy it first."""
    root = tmp_path_factory.mktemp("wds")
    write_synthetic_shards(root, n_classes=N_CLASSES, per_class=PER_CLASS, n_shards=N_SHARDS)
    return root


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clip_benchmark-layout dataset: test/nshards.txt and members <key>.webp/.cls."""
    root = tmp_path_factory.mktemp("clipbench")
    write_synthetic_shards(root, n_classes=N_CLASSES, per_class=PER_CLASS, n_shards=N_SHARDS, layout="clip_benchmark")
    return root


@pytest.fixture(autouse=True)
def fast_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads in these tests give up on a silent server after 2 s and retry after 10, 20, 40... ms."""
    monkeypatch.setenv("MILL_HTTP_TIMEOUT", "2")
    monkeypatch.setenv("MILL_HTTP_BACKOFF", "0.01")
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")  # no credentials unless a test writes some
    # The hub client is replaced by fakes in these tests: whether this machine could reach the real Hub is
    # beside the point (test_download checks that question with a resolver that fails).
    monkeypatch.setattr(download, "hub_route_problem", lambda: None)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def open_wds(cache_dir: Path) -> Any:
    """``open_wds(source, **overrides)``: open_dataset with the synthetic data's spec values filled in."""

    def opener(source: Path | str, **overrides: Any) -> ShardDataset:
        dataset = {"split": "test", "image_member": "0.webp", "label_member": "cls", "n_samples": TOTAL}
        options: dict[str, Any] = {"cache_dir": cache_dir}
        n_classes = overrides.pop("n_classes", N_CLASSES)
        if "expected_count" in overrides:
            # None: a test whose shards fail before their count matters.
            dataset["n_samples"] = overrides.pop("expected_count") or 0
        for name in ("split", "image_member", "label_member"):
            dataset.update({name: overrides.pop(name)} if name in overrides else {})
        options.update(overrides)
        spec = DatasetSpec(source=str(source), **dataset)
        return open_dataset(spec, n_classes=n_classes, options=ReadOptions(**options))

    return opener


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def write_tar() -> Any:
    """``write_tar(path, [(member_name, bytes), ...])``: a hand-made shard for malformed-data tests."""
    return _write_tar


@pytest.fixture
def webp_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(out, format="WEBP")
    return out.getvalue()
