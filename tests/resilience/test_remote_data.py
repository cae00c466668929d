"""The http(s) source for real: a dataset root with test/nshards.txt served over loopback by Python's
http.server, including a server that dies in the middle of a shard, once or for good, and a missing shard."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from mill.cli.main import EXIT_USER_ERROR
from mill.data import write_synthetic_shards


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries after 10, 20, 40... ms instead of 1, 2, 4... s; a silent server is given up on after 2 s."""
    monkeypatch.setenv("MILL_HTTP_BACKOFF", "0.01")
    monkeypatch.setenv("MILL_HTTP_TIMEOUT", "2")


class FirstTimeOnly(set[str]):
    """The ``cut_short`` paths of a server that dies once per path: each is cut the first time it is asked for."""

    def __contains__(self, path: object) -> bool:
        hit = super().__contains__(path)
        self.discard(path)
        return hit


@pytest.fixture(scope="module")
def clip_benchmark_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset in the clip_benchmark export's layout: test/nshards.txt, test/{0,1,2}.tar."""
    root = tmp_path_factory.mktemp("served")
    write_synthetic_shards(root, n_classes=20, per_class=3, n_shards=3, layout="clip_benchmark")
    assert (root / "test" / "nshards.txt").read_text().strip() == "3"
    return root


def test_server_dying_mid_shard_names_it_and_a_rerun_completes(
    clip_benchmark_root: Path, serve: Any, eval_argv: Any, run_mill: Any, tmp_path: Path, sizes: Any
) -> None:
    cut_short = {"/test/1.tar"}
    base = serve(clip_benchmark_root, cut_short=cut_short)
    argv = eval_argv(tmp_path / "out", "--data_dir", base)
    failed = run_mill(*argv)
    assert failed.code == EXIT_USER_ERROR, failed.err
    assert f"cannot download {base}/test/1.tar: the server closed the connection" in failed.err
    assert "Traceback" not in failed.err

    cut_short.clear()  # the server is back
    outcome = run_mill(*argv)
    assert outcome.code == 0, outcome.err
    (manifest_file,) = (tmp_path / "out" / "outputs").rglob("*.json")
    manifest = json.loads(manifest_file.read_text())
    assert manifest["data_source"] == base
    assert [s["name"] for s in manifest["shards"]] == ["test/0.tar", "test/1.tar", "test/2.tar"]
    assert [s["size"] for s in manifest["shards"]] == [
        (clip_benchmark_root / "test" / f"{i}.tar").stat().st_size for i in range(3)
    ]
    assert manifest["n_samples"] == sizes.n_samples


def test_a_shard_cut_once_is_retried_and_the_run_completes(
    clip_benchmark_root: Path, serve: Any, eval_argv: Any, run_mill: Any, tmp_path: Path, sizes: Any
) -> None:
    base = serve(clip_benchmark_root, cut_short=FirstTimeOnly({"/test/0.tar", "/test/2.tar"}))
    outcome = run_mill(*eval_argv(tmp_path / "out", "--data_dir", base))
    assert outcome.code == 0, outcome.err
    (manifest_file,) = (tmp_path / "out" / "outputs").rglob("*.json")
    manifest = json.loads(manifest_file.read_text())
    assert [s["size"] for s in manifest["shards"]] == [
        (clip_benchmark_root / "test" / f"{i}.tar").stat().st_size for i in range(3)
    ]
    assert manifest["n_samples"] == sizes.n_samples


def test_a_missing_shard_is_one_error_line_naming_its_url(
    clip_benchmark_root: Path, serve: Any, eval_argv: Any, run_mill: Any, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    shutil.copytree(clip_benchmark_root, served)
    (served / "test" / "2.tar").unlink()
    base = serve(served)
    failed = run_mill(*eval_argv(tmp_path / "out", "--data_dir", base))
    assert failed.code == EXIT_USER_ERROR, failed.err
    error_lines = [line for line in failed.err.splitlines() if line.startswith("error:")]
    assert error_lines == [
        f"error: cannot download {base}/test/2.tar: not found (HTTP 404); check the URL, the split and the shard count"
    ]
    assert "Traceback" not in failed.err


def test_a_run_whose_served_shard_changed_starts_afresh_saying_why(
    clip_benchmark_root: Path, serve: Any, eval_argv: Any, run_mill: Any, tmp_path: Path, sizes: Any
) -> None:
    served = tmp_path / "served"
    shutil.copytree(clip_benchmark_root, served)
    base = serve(served)
    argv = eval_argv(tmp_path / "out", "--data_dir", base)
    assert run_mill(*argv).code == 0
    again = run_mill(*argv)  # the server's copies are unchanged: everything is reused
    assert again.code == 0 and "changed on the server" not in again.err, again.err
    before = _manifest(tmp_path / "out")
    assert before["n_reused"] == sizes.n_samples

    # The server's shard 1 is replaced by the same samples drawn with another seed (another ETag).
    other = tmp_path / "other"
    write_synthetic_shards(other, n_classes=20, per_class=3, n_shards=3, layout="clip_benchmark", seed=1)
    shutil.copy(other / "test" / "1.tar", served / "test" / "1.tar")
    changed = run_mill(*argv)
    assert changed.code == 0, changed.err
    assert re.search(
        r'warning: shard test/1\.tar changed on the server since it was downloaded \(etag:"\S+", now etag:"\S+"\): '
        r"downloading it again; a run on the old copy starts afresh instead of resuming",
        changed.err,
    ), changed.err
    manifest = _manifest(tmp_path / "out")
    assert manifest["n_reused"] == 0 and manifest["n_samples"] == sizes.n_samples
    assert [s["sha256"] == b["sha256"] for s, b in zip(manifest["shards"], before["shards"], strict=True)] == [
        True,
        False,
        True,
    ]
    # The record keeps the server's version of each copy read: only the changed shard's moved.
    assert all(str(shard["version"]).startswith("etag:") for shard in manifest["shards"])
    assert [s["version"] == b["version"] for s, b in zip(manifest["shards"], before["shards"], strict=True)] == [
        True,
        False,
        True,
    ]


def _manifest(out: Path) -> dict[str, Any]:
    (manifest_file,) = (out / "outputs").rglob("*.json")
    manifest: dict[str, Any] = json.loads(manifest_file.read_text())
    return manifest
