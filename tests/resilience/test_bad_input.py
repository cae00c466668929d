"""Every bad input ends ``mill eval`` with a non-zero status and one message naming the culprit and the
fix, and loses nothing already committed (aggregate.csv is left byte for byte as it was)."""

from __future__ import annotations

import json
import os
import re
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from mill.backends.clip.plugin import ClipPlugin
from mill.cli.main import EXIT_USER_ERROR
from mill.core.chunks import RUNS_DIR
from mill.core.results import read_aggregate


@pytest.fixture
def results(tmp_path: Path, foreign_row: Callable[[Path], None]) -> Path:
    """An output directory already holding another model's result."""
    out = tmp_path / "results"
    foreign_row(out)
    return out


@pytest.fixture
def fails(run_mill: Any, results: Path) -> Callable[..., str]:
    """``fails(*argv)``: run ``mill``, check it failed as a user error and kept ``results`` intact;
    return what it printed on stderr."""

    def check(*argv: str) -> str:
        before = (results / "aggregate.csv").read_bytes()
        outcome = run_mill(*argv)
        assert outcome.code == EXIT_USER_ERROR, (outcome.code, outcome.err)
        assert outcome.err.startswith("error: ") and "Traceback" not in outcome.err, outcome.err
        assert (results / "aggregate.csv").read_bytes() == before
        return str(outcome.err)

    return check


# --- the spec -------------------------------------------------------------------------------------------

NAMES_LINE = "names = [" + ", ".join(f'"class {i}"' for i in range(20)) + "]"
SPEC_CASES = {
    "toml_syntax": (("seed = 42", "seed = 42 42"), ["tinybench.toml", "TOML syntax error", "line 3"]),
    "unknown_key": (("seed = 42", 'seed = 42\ncolour = "red"'), ["tinybench.toml", "colour"]),
    "wrong_type": (("seed = 42", 'seed = "42x"'), ["tinybench.toml", "seed", "'42x'"]),
    "missing_class_file": ((NAMES_LINE, 'file = "classes.txt"'), ["tinybench.toml", "classes", "classes.txt"]),
    "missing_template_file": (
        ('list = ["a photo of a {c}.", "{c}"]', 'file = "templates.txt"'),
        ["tinybench.toml", "templates", "templates.txt"],
    ),
    "class_count": (("count = 20", "count = 21"), ["tinybench.toml", "count = 21", "20 names"]),
    "duplicate_classes": (
        ("count = 20", 'count = 20\noverrides = { 1 = "class 0" }'),
        ["tinybench.toml", "duplicate class name 'class 0'", "allow_duplicates"],
    ),
    # A variant name becomes a file name: a path in it would write outside --output_dir.
    "variant_name_is_a_path": (
        ("[variants.tinybench_mcq]", '[variants."../../../x/pwned"]'),
        ["tinybench.toml", 'variants."../../../x/pwned"', "not a valid name"],
    ),
    "no_templates": (('list = ["a photo of a {c}.", "{c}"]', "list = []"), ["tinybench.toml", "templates.list"]),
    "absolute_variant_name": (
        ("[variants.tinybench]", '[variants."/tmp/x/pwned"]'),
        ["tinybench.toml", 'variants."/tmp/x/pwned"', "not a valid name"],
    ),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_bad_spec_names_file_and_key(
    case: str, tmp_path: Path, tiny_spec: Path, eval_argv: Any, fails: Callable[..., str], results: Path
) -> None:
    (old, new), expected = SPEC_CASES[case]
    text = tiny_spec.read_text()
    assert old in text
    bad = tmp_path / "tinybench.toml"
    bad.write_text(text.replace(old, new))
    err = fails(*eval_argv(results, spec=bad))
    for fragment in expected:
        assert fragment in err, err


@pytest.mark.parametrize(
    ("benchmark", "suggestion"),
    [("tinybenhc", "Did you mean tinybench"), ("tinybench_mqc", "Did you mean tinybench_mcq")],
)
def test_unknown_benchmark_or_variant_suggests_close_names(
    benchmark: str, suggestion: str, eval_argv: Any, fails: Callable[..., str], results: Path
) -> None:
    argv = eval_argv(results)
    argv[argv.index("tinybench")] = benchmark
    assert suggestion in fails(*argv)


def test_unknown_backend_suggests_close_names(
    small_batch_clip: str, eval_argv: Any, fails: Callable[..., str], results: Path
) -> None:
    err = fails(*eval_argv(results, model=small_batch_clip.replace("clip[", "clpi[", 1)))
    assert "'clpi'" in err and "Did you mean clip" in err


def test_model_serving_no_variant_says_what_would(eval_argv: Any, fails: Callable[..., str], results: Path) -> None:
    argv = eval_argv(results)
    argv[argv.index("tinybench")] = "tinybench_mcq"
    err = fails(*argv)
    assert "tinybench_mcq needs generative_mcq" in err and "(hf, vllm, or openai for a served one)" in err


def test_missing_model_path(tmp_path: Path, eval_argv: Any, fails: Callable[..., str], results: Path) -> None:
    missing = tmp_path / "nowhere" / "model.json"
    err = fails(*eval_argv(results, model=f"clip[path={missing},pretrained={missing.with_suffix('.pt')}]"))
    assert str(missing) in err


# --- the data -------------------------------------------------------------------------------------------


def test_missing_data_dir(tmp_path: Path, eval_argv: Any, fails: Callable[..., str], results: Path) -> None:
    err = fails(*eval_argv(results, "--data_dir", str(tmp_path / "absent")))
    assert f"data directory {tmp_path / 'absent'} does not exist" in err and "--data_dir" in err


def test_empty_data_dir(tmp_path: Path, eval_argv: Any, fails: Callable[..., str], results: Path) -> None:
    (tmp_path / "empty" / "test").mkdir(parents=True)
    err = fails(*eval_argv(results, "--data_dir", str(tmp_path / "empty")))
    assert "holds no shards" in err and "test/*.tar" in err


def test_truncated_shard_is_named(
    damaged_shards: Path, eval_argv: Any, fails: Callable[..., str], results: Path
) -> None:
    shard = damaged_shards / "test" / "1.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    err = fails(*eval_argv(results, "--data_dir", str(damaged_shards)))
    assert "test/1.tar" in err and "truncated" in err and "re-download" in err


def test_corrupt_shard_is_named(damaged_shards: Path, eval_argv: Any, fails: Callable[..., str], results: Path) -> None:
    (damaged_shards / "test" / "2.tar").write_bytes(os.urandom(20_000))
    err = fails(*eval_argv(results, "--data_dir", str(damaged_shards)))
    assert "test/2.tar" in err and "corrupt" in err


def test_label_outside_the_spec_classes(
    tmp_path: Path, tiny_shards: Path, write_spec: Any, eval_argv: Any, fails: Callable[..., str], results: Path
) -> None:
    spec = write_spec(tmp_path / "tinybench.toml", tiny_shards, n_classes=10)
    err = fails(*eval_argv(results, spec=spec))
    assert "label 10 is outside [0, 10)" in err and "test/" in err and "sample 's0000030'" in err


def test_unreachable_remote_says_how_to_supply_shards(eval_argv: Any, fails: Callable[..., str], results: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tinybench"
    err = fails(*eval_argv(results, "--data_dir", url))
    assert f"{url}/test/nshards.txt" in err
    assert "$MILL_DATA_DIR/tinybench/test/*.tar" in err and "--data_dir" in err


def test_undecodable_image_fails_then_skip_resumes_without_it(
    damaged_shards: Path,
    replace_image: Any,
    eval_argv: Any,
    fails: Callable[..., str],
    run_mill: Any,
    results: Path,
    sizes: Any,
) -> None:
    with tarfile.open(damaged_shards / "test" / "2.tar") as tar:
        assert any(name.startswith("s0000050.") for name in tar.getnames())
    replace_image(damaged_shards / "test" / "2.tar", "s0000050", b"not an image")
    argv = eval_argv(results, "--data_dir", str(damaged_shards))
    err = fails(*argv)
    assert "shard test/2.tar, sample 's0000050': cannot decode the image" in err
    # Batches finished before the bad one are committed ...
    (run_dir,) = (results / RUNS_DIR).iterdir()
    committed = pl.read_parquet(list(run_dir.glob("chunk-*.parquet")))
    assert len(committed) >= 8 and "s0000050" not in committed["key"].to_list()

    outcome = run_mill(*argv, "--on_bad_sample", "skip")
    assert outcome.code == 0, outcome.err
    # ... and reused by the skipping run, which leaves the bad sample out of every metric.
    (manifest_file,) = (results / "outputs").rglob("tinybench_0shot_*.json")
    manifest = json.loads(manifest_file.read_text())
    assert (manifest["n_reused"], manifest["n_skipped"]) == (len(committed), 1)
    assert manifest["n_samples"] == sizes.n_samples - 1
    assert manifest["skipped"][0]["key"] == "s0000050" and "cannot decode" in manifest["skipped"][0]["reason"]
    per_sample = pl.read_parquet(manifest_file.with_suffix(".parquet"))
    assert len(per_sample) == sizes.n_samples - 1 and "s0000050" not in per_sample["key"].to_list()
    rows = read_aggregate(results).filter(pl.col("model") != "other/model")
    assert rows["n_skipped"].to_list() == [1, 1, 1]
    assert rows["n_samples"].to_list() == [sizes.n_samples - 1] * 3
    acc = rows.filter(pl.col("metric") == "acc")["performance"][0]
    assert acc == pytest.approx(per_sample["correct"].sum() / (sizes.n_samples - 1))


# --- the output directory -------------------------------------------------------------------------------


def test_output_dir_that_cannot_be_created_fails_before_the_model_loads(
    tmp_path: Path, eval_argv: Any, run_mill: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_load(*_: object, **__: object) -> None:
        raise AssertionError("the model was loaded although results could not be written")

    monkeypatch.setattr(ClipPlugin, "load", no_load)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    outcome = run_mill(*eval_argv(blocker / "results"))
    assert outcome.code == EXIT_USER_ERROR, outcome.err
    assert f"cannot create the output directory {blocker / 'results'}" in outcome.err
    assert "--output_dir" in outcome.err


# --- numeric settings -----------------------------------------------------------------------------------

TOO_BIG = str(2**63)
SETTING_CASES = {
    "seed_2_63": (("--seed", TOO_BIG), {}, ["--seed", TOO_BIG, "[0, 2^63)"]),
    "negative_seed": (("--seed", "-1"), {}, ["--seed", "-1", "[0, 2^63)"]),
    "huge_batch_flag": (("--batch_size", "10" * 12), {}, ["--batch_size", "10" * 12]),
    "float_batch_size": ((), {"batch_size": "1e23"}, ["batch_size=1e+23", "integer"]),
    "huge_batch_size": ((), {"batch_size": "1" + "0" * 23}, ["batch_size=1" + "0" * 23, "integer"]),
    "huge_workers": ((), {"num_workers": "1" + "0" * 23}, ["num_workers=1" + "0" * 23, "integer"]),
}


@pytest.mark.parametrize("case", list(SETTING_CASES))
def test_numbers_out_of_range_fail_before_the_model_loads(
    case: str,
    small_batch_clip: str,
    eval_argv: Any,
    fails: Callable[..., str],
    results: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A seed >= 2^63 ran inference, then crashed writing aggregate.csv (and every later rebuild).
    def no_load(*_: object, **__: object) -> None:
        raise AssertionError("the model was loaded although a setting is out of range")

    monkeypatch.setattr(ClipPlugin, "load", no_load)
    flags, model_args, expected = SETTING_CASES[case]
    model = small_batch_clip
    for key, value in model_args.items():
        model = re.sub(rf"{key}=[^,\]]*", f"{key}={value}", model)
    err = fails(*eval_argv(results, *flags, model=model))
    for fragment in expected:
        assert fragment in err, err


@pytest.mark.parametrize("seed", ["-1", TOO_BIG])
def test_spec_seed_out_of_range_is_named(
    seed: str, tmp_path: Path, tiny_spec: Path, eval_argv: Any, fails: Callable[..., str], results: Path
) -> None:
    bad = tmp_path / "tinybench.toml"
    bad.write_text(tiny_spec.read_text().replace("seed = 42", f"seed = {seed}"))
    err = fails(*eval_argv(results, spec=bad))
    assert f"{bad}: seed: " in err and "[0, 2^63)" in err, err


@pytest.mark.parametrize("device", ["mps", "cuda:99", "tpu"])
def test_a_device_this_machine_lacks_is_named(
    device: str, eval_argv: Any, fails: Callable[..., str], results: Path
) -> None:
    # No machine Mill runs on has both an mps and a cuda device, nor 100 GPUs.
    err = fails(*eval_argv(results, "--device", device))
    assert (f"device={device!r}" in err and "--device" in err) or "is not a torch device" in err, err


@pytest.mark.parametrize("content", ["text", "list", "tensor"])
def test_a_checkpoint_that_holds_no_state_dict_is_named(
    content: str, tmp_path: Path, tiny_clip: Any, eval_argv: Any, fails: Callable[..., str], results: Path
) -> None:
    import torch

    checkpoint = tmp_path / "weights.pt"
    if content == "text":
        checkpoint.write_text("root:x:0:0:root:/root:/bin/bash\n")  # pretrained=/etc/passwd, in effect
    else:
        torch.save([1, 2, 3] if content == "list" else torch.zeros(3), checkpoint)
    model = f"clip[path={tiny_clip.config_path},pretrained={checkpoint},dtype=float32,batch_size=4,num_workers=0]"
    err = fails(*eval_argv(results, model=model))
    assert str(checkpoint) in err and "pretrained" in err, err


def test_an_hf_folder_without_model_type_is_named(
    tmp_path: Path, vlm_dir: Path, eval_argv: Any, fails: Callable[..., str], results: Path
) -> None:
    import shutil

    folder = tmp_path / "no-model-type"
    shutil.copytree(vlm_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    argv = eval_argv(results, model=f"hf[path={folder},dtype=float32,batch_size=4,num_workers=0]")
    argv[argv.index("tinybench")] = "tinybench_mcq"
    err = fails(*argv)
    assert str(folder) in err and "model_type" in err, err
