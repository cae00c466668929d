"""The http(s) source for real: a dataset root with test/nshards.txt served over loopback by Python's
http.server, including a server that dies in the middle of a shard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mill.cli.main import EXIT_USER_ERROR
from mill.data import write_synthetic_shards


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
