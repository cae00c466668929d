from __future__ import annotations

import os
import re
import shutil
import socket
import warnings
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest

from mill.core.errors import DataError, MillWarning
from mill.data import choose_source
from mill.data import download as download_module
from mill.data import source as source_module
from mill.data.source import local_shards, parse_hf_source, resolve_shards
from mill.testing.loopback import base_url, start_server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- local -----------------------------------------------------------------------------------------------


def test_local_dir_with_split_folder(wds_dir: Path) -> None:
    shards = local_shards(wds_dir, split="test")
    assert [s.name for s in shards] == ["test/0.tar", "test/1.tar", "test/2.tar"]
    assert all(s.size == s.path.stat().st_size > 0 for s in shards)


def test_local_dir_holding_tars_directly(wds_dir: Path) -> None:
    shards = local_shards(wds_dir / "test", split="test")
    assert [s.name for s in shards] == ["0.tar", "1.tar", "2.tar"]


def test_local_shards_in_natural_order(tmp_path: Path) -> None:
    for i in (10, 2, 0, 1):
        (tmp_path / f"{i}.tar").write_bytes(b"")
    assert [s.name for s in local_shards(tmp_path, split="test")] == ["0.tar", "1.tar", "2.tar", "10.tar"]


def test_missing_local_dir_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'} does not exist"):
        resolve_shards(str(tmp_path / "nope"), split="test", cache_dir=tmp_path)


def test_empty_local_dir_names_it(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path} holds no shards") as caught:
        resolve_shards(str(tmp_path), split="test", cache_dir=tmp_path / "cache")
    assert "test/*.tar" in str(caught.value)


# --- choose_source ---------------------------------------------------------------------------------------


def test_choose_source_precedence(tmp_path: Path) -> None:
    remote = "hf://datasets/haideraltahan/wds_imagenet1k"
    env = {"MILL_DATA_DIR": str(tmp_path)}
    assert choose_source(None, "imagenet1k", remote, env={}) == remote
    assert choose_source(None, "imagenet1k", remote, env=env) == remote  # no such folder yet
    (tmp_path / "imagenet1k").mkdir()
    assert choose_source(None, "imagenet1k", remote, env=env) == str(tmp_path / "imagenet1k")
    assert choose_source("/explicit", "imagenet1k", remote, env=env) == "/explicit"


# --- http ------------------------------------------------------------------------------------------------


def test_http_root_with_nshards(clip_dir: Path, serve: Any, tmp_path: Path) -> None:
    base = serve(clip_dir)
    shards = resolve_shards(base, split="test", cache_dir=tmp_path / "cache")
    assert [s.name for s in shards] == ["test/0.tar", "test/1.tar", "test/2.tar"]
    for shard in shards:
        assert shard.path.is_relative_to(tmp_path / "cache" / "shards")
        assert shard.path.read_bytes() == (clip_dir / shard.name).read_bytes()


def test_http_brace_pattern(wds_dir: Path, serve: Any, tmp_path: Path) -> None:
    base = serve(wds_dir)
    shards = resolve_shards(f"{base}/test/{{0..2}}.tar", split="test", cache_dir=tmp_path / "cache")
    assert [s.name for s in shards] == ["0.tar", "1.tar", "2.tar"]
    assert shards[2].path.read_bytes() == (wds_dir / "test" / "2.tar").read_bytes()


def test_http_rerun_reuses_cached_shards_offline(clip_dir: Path, serve: Any, tmp_path: Path) -> None:
    served = tmp_path / "served"
    shutil.copytree(clip_dir, served)
    base = serve(served)
    first = resolve_shards(base, split="test", cache_dir=tmp_path / "cache")
    shutil.rmtree(served)  # the server now answers 404 for everything
    again = resolve_shards(base, split="test", cache_dir=tmp_path / "cache")
    assert again == first


def test_http_missing_shard_names_url(wds_dir: Path, serve: Any, tmp_path: Path) -> None:
    base = serve(wds_dir)
    with pytest.raises(DataError, match=rf"cannot download {base}/test/3\.tar"):
        resolve_shards(f"{base}/test/{{0..3}}.tar", split="test", cache_dir=tmp_path / "cache")
    # The shards that did download are kept for the next run; nothing partial is left.
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert cached == [".0.tar.version", ".1.tar.version", ".2.tar.version", "0.tar", "1.tar", "2.tar"]


def test_server_dying_mid_shard_names_it_and_a_rerun_completes(clip_dir: Path, serve: Any, tmp_path: Path) -> None:
    cut_short = {"/test/1.tar"}
    base = serve(clip_dir, cut_short=cut_short)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"/test/1\.tar: the server closed the connection after \d+ of \d+ bytes"):
        resolve_shards(base, split="test", cache_dir=cache)
    # Nothing of the cut shard is cached as if whole; the shard before it is kept.
    assert sorted(p.name for p in cache.rglob("*.tar")) == ["0.tar"]
    cut_short.clear()
    shards = resolve_shards(base, split="test", cache_dir=cache)
    assert [(s.name, s.size) for s in shards] == [
        (f"test/{i}.tar", (clip_dir / "test" / f"{i}.tar").stat().st_size) for i in range(3)
    ]


def test_a_shard_changed_on_the_server_is_downloaded_again(clip_dir: Path, serve: Any, tmp_path: Path) -> None:
    served = tmp_path / "served"
    shutil.copytree(clip_dir, served)
    base = serve(served)
    cache = tmp_path / "cache"
    first = resolve_shards(base, split="test", cache_dir=cache)
    assert all(s.version is not None and s.version.startswith('etag:"') for s in first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unchanged: no warning, and the cached copies are kept
        assert resolve_shards(base, split="test", cache_dir=cache) == first
    # The server's copy of shard 1 is replaced (another file, another ETag).
    changed = served / "test" / "1.tar"
    changed.write_bytes((served / "test" / "2.tar").read_bytes())
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    with pytest.warns(MillWarning) as caught:
        second = resolve_shards(base, split="test", cache_dir=cache)
    (warning,) = caught
    assert re.fullmatch(
        r'shard test/1\.tar changed on the server since it was downloaded \(etag:"[0-9a-f-]+", now etag:"[0-9a-f-]+"\):'
        r" downloading it again; a run on the old copy starts afresh instead of resuming",
        str(warning.message),
    )
    assert second[1].path.read_bytes() == changed.read_bytes() and second[1].version != first[1].version
    assert [s.version for s in second[::2]] == [s.version for s in first[::2]]


def test_cached_shards_are_used_as_they_are_when_the_server_is_gone(
    clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(clip_dir)
    base = base_url(server)
    cache = tmp_path / "cache"
    try:
        first = resolve_shards(base, split="test", cache_dir=cache)
    finally:
        server.shutdown()
        server.server_close()
    asked: list[str] = []
    real = download_module.remote_version

    def remote_version(url: str, **kwargs: Any) -> str | None:
        asked.append(url)
        return real(url, **kwargs)

    monkeypatch.setattr(source_module, "remote_version", remote_version)
    assert resolve_shards(base, split="test", cache_dir=cache) == first
    assert asked == [f"{base}/test/0.tar"]  # the first refusal ends the asking


def test_unreachable_http_names_url_and_local_folder(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/imagenet"
    with pytest.raises(DataError) as caught:
        resolve_shards(url, split="test", cache_dir=tmp_path / "cache", benchmark="imagenet1k")
    message = str(caught.value)
    assert f"{url}/test/nshards.txt" in message
    assert "$MILL_DATA_DIR/imagenet1k/test/*.tar" in message
    assert "--data_dir" in message


# --- Hugging Face Hub ------------------------------------------------------------------------------------
# The real hub is unreachable from the test machines, so its client is replaced by fakes serving wds_dir.


def _fake_hub(monkeypatch: pytest.MonkeyPatch, root: Path, calls: list[str]) -> None:
    class FakeApi:
        def list_repo_files(self, repo_id: str, *, repo_type: str) -> list[str]:
            assert (repo_id, repo_type) == ("owner/name", "dataset")
            return ["README.md", *(p.relative_to(root).as_posix() for p in root.rglob("*.tar"))]

    def fake_download(repo_id: str, filename: str, *, repo_type: str, local_dir: str) -> str:
        calls.append(filename)
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / filename, target)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)


def test_hf_listing_and_fetch(wds_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    _fake_hub(monkeypatch, wds_dir, calls)
    shards = resolve_shards("hf://datasets/owner/name", split="test", cache_dir=tmp_path)
    assert [s.name for s in shards] == ["test/0.tar", "test/1.tar", "test/2.tar"]
    assert shards[1].path.read_bytes() == (wds_dir / "test" / "1.tar").read_bytes()
    assert calls == ["test/0.tar", "test/1.tar", "test/2.tar"]
    resolve_shards("hf://datasets/owner/name/test/1.tar", split="test", cache_dir=tmp_path)
    assert len(calls) == 3  # already downloaded


def test_hf_shards_name_the_commit_they_were_downloaded_at(
    wds_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    _fake_hub(monkeypatch, wds_dir, calls)
    commit = "c" * 40
    fake_download = huggingface_hub.hf_hub_download

    def download_recording_the_commit(repo_id: str, filename: str, *, repo_type: str, local_dir: str) -> str:
        # What the hub client keeps beside a local_dir download: commit, etag, timestamp.
        metadata = Path(local_dir, ".cache", "huggingface", "download", f"{filename}.metadata")
        metadata.parent.mkdir(parents=True, exist_ok=True)
        metadata.write_text(f"{commit}\netag-of-{filename}\n1.0\n")
        return str(fake_download(repo_id, filename, repo_type=repo_type, local_dir=local_dir))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download_recording_the_commit)
    shards = resolve_shards("hf://datasets/owner/name", split="test", cache_dir=tmp_path)
    assert [s.version for s in shards] == [f"hf:{commit}"] * 3


def test_hf_offline_says_how_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class OfflineApi:
        def list_repo_files(self, repo_id: str, *, repo_type: str) -> list[str]:
            raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "HfApi", OfflineApi)
    with pytest.raises(DataError) as caught:
        resolve_shards(
            "hf://datasets/haideraltahan/wds_imagenet1k", split="test", cache_dir=tmp_path, benchmark="imagenet1k"
        )
    message = str(caught.value)
    assert "$MILL_DATA_DIR/imagenet1k/test/*.tar" in message
    assert (
        "hf download haideraltahan/wds_imagenet1k --repo-type dataset --include 'test/*' "
        "--local-dir $MILL_DATA_DIR/imagenet1k"
    ) in message


def test_parse_hf_source() -> None:
    assert parse_hf_source("hf://datasets/a/b") == ("a/b", None)
    assert parse_hf_source("hf://datasets/a/b/test/*.tar") == ("a/b", "test/*.tar")
    with pytest.raises(DataError, match="hf://datasets/"):
        parse_hf_source("hf://models/a")
