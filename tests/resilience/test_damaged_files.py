"""Damaged results: chunks set aside and recomputed, a damaged aggregate.csv left alone and rebuilt from the
manifests, and ``mill verify`` telling verified, mismatched and unverifiable rows apart, through the real
``mill`` command and the tiny CLIP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
from polars.testing import assert_frame_equal

from mill.core.checksum import MANIFEST_HASH_KEY
from mill.core.chunks import RUNS_DIR

PARQUET = Path("outputs/mill-tiny-clip__mill-tiny-clip.pt/tinybench_0shot_precision-fp32.parquet")


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_damaged_chunks_are_named_set_aside_and_recomputed(tmp_path: Path, eval_argv: Any, run_mill: Any) -> None:
    out = tmp_path / "out"
    assert run_mill(*eval_argv(out)).code == 0
    reference = pl.read_parquet(out / PARQUET)
    (run_dir,) = (out / RUNS_DIR).iterdir()
    chunks = sorted(run_dir.glob("chunk-*.parquet"))
    data = bytearray(chunks[1].read_bytes())
    data[100] ^= 0xFF  # a flipped bit, as a failing disk or a bad copy leaves
    chunks[1].write_bytes(bytes(data))
    chunks[3].write_bytes(chunks[3].read_bytes()[: len(data) // 2])  # a partial copy
    Path(f"{chunks[5]}.sha256").unlink()

    again = run_mill(*eval_argv(out))
    assert again.code == 0, again.err
    warnings = [line for line in again.err.splitlines() if line.startswith("warning:")]
    assert [w.split(" is damaged")[0] for w in warnings] == [f"warning: {chunks[i]}" for i in (1, 3, 5)]
    assert sorted(p.name for p in (run_dir / "damaged").glob("*.parquet")) == [chunks[i].name for i in (1, 3, 5)]
    assert_frame_equal(pl.read_parquet(out / PARQUET), reference)
    assert json.loads((out / PARQUET.with_suffix(".json")).read_text())["n_reused"] == 60 - 3 * 8


def test_a_damaged_run_record_is_set_aside_and_the_run_goes_on(tmp_path: Path, eval_argv: Any, run_mill: Any) -> None:
    out = tmp_path / "out"
    assert run_mill(*eval_argv(out)).code == 0
    reference = pl.read_parquet(out / PARQUET)
    (run_dir,) = (out / RUNS_DIR).iterdir()
    record = run_dir / "run.json"
    damaged = record.read_bytes()[:20]  # a partial copy: it used to end the command with a JSON traceback
    record.write_bytes(damaged)

    again = run_mill(*eval_argv(out))
    assert again.code == 0, again.err
    (warning,) = [line for line in again.err.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: {record} is damaged") and "new run id" in warning
    assert (run_dir / "damaged" / "run.json").read_bytes() == damaged
    assert json.loads(record.read_text())["identity"]
    assert_frame_equal(pl.read_parquet(out / PARQUET), reference)
    assert json.loads((out / PARQUET.with_suffix(".json")).read_text())["n_reused"] == 60


def test_a_damaged_aggregate_is_kept_and_mill_verify_rebuilds_it(tmp_path: Path, eval_argv: Any, run_mill: Any) -> None:
    out = tmp_path / "out"
    assert run_mill(*eval_argv(out)).code == 0
    verified = run_mill("verify", "--output_dir", str(out))
    assert verified.code == 0, verified.err
    assert verified.out.count("verified") == 3 and "3 verified, 0 mismatched, 0 unverifiable" in verified.err

    aggregate = out / "aggregate.csv"
    damaged = aggregate.read_bytes()[:-25]
    aggregate.write_bytes(damaged)
    refused = run_mill(*eval_argv(out, "--seed", "1"))
    assert refused.code == 2
    (line,) = _error_lines(refused.err)
    assert "not added to aggregate.csv" in line and f"mill verify --rebuild --output_dir {out}" in line
    assert "Traceback" not in refused.err
    assert aggregate.read_bytes() == damaged  # never overwritten
    seeded = out / str(PARQUET).replace("_0shot_", "_0shot_seed1_")
    assert seeded.exists() and seeded.with_suffix(".json").exists()
    assert run_mill("verify", "--output_dir", str(out)).code == 2

    rebuilt = run_mill("verify", "--output_dir", str(out), "--rebuild")
    assert rebuilt.code == 0, rebuilt.err
    assert "6 verified, 0 mismatched" in rebuilt.err
    (kept,) = out.glob("aggregate.csv.*.bak")
    assert kept.read_bytes() == damaged

    # A per-sample file changed after it was written is a mismatch; a manifest from before hashes, unverifiable.
    legacy_manifest = out / PARQUET.with_suffix(".json")
    manifest = json.loads(legacy_manifest.read_text())
    for key in ("per_sample_sha256", MANIFEST_HASH_KEY, "task_type", "default_settings", "headline"):
        del manifest[key]
    legacy_manifest.write_text(json.dumps(manifest))
    frame = pl.read_parquet(seeded)
    frame.with_columns(pl.lit(True).alias("correct")).write_parquet(seeded)
    checked = run_mill("verify", "--output_dir", str(out))
    assert checked.code == 2
    rows = [line.split("│")[1].strip() for line in checked.out.splitlines() if "tinybench" in line and "│" in line]
    assert sorted(rows) == ["mismatched"] * 3 + ["unverifiable"] * 3
    assert "3 verified" not in checked.err and "0 verified, 3 mismatched, 3 unverifiable" in checked.err


def test_a_shard_changed_at_the_same_size_is_a_new_run_not_a_resumed_one(
    tmp_path: Path, damaged_shards: Path, eval_argv: Any, run_mill: Any
) -> None:
    import os
    import tarfile

    out = tmp_path / "out"
    argv = eval_argv(out, "--data_dir", str(damaged_shards))
    assert run_mill(*argv).code == 0
    shard = damaged_shards / "test" / "0.tar"
    with tarfile.open(shard) as tar:
        label = next(m for m in tar.getmembers() if m.name.endswith(".cls"))
        key = label.name.split(".")[0]
        old = tar.extractfile(label).read()  # type: ignore[union-attr]
    new = b"9" if old.strip() != b"9" else b"8"
    data = bytearray(shard.read_bytes())
    stat = shard.stat()
    data[label.offset_data : label.offset_data + 1] = new  # one label, same size, mtime kept
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    again = run_mill(*argv)
    assert again.code == 0, again.err
    (warning,) = [line for line in again.err.splitlines() if line.startswith("warning:")]
    assert "the content of shard(s) test/0.tar changed" in warning and "starts afresh" in warning
    manifest = json.loads((out / PARQUET.with_suffix(".json")).read_text())
    assert manifest["n_reused"] == 0  # it used to resume every committed sample, and write the stale accuracy
    frame = pl.read_parquet(out / PARQUET)
    assert frame.filter(pl.col("key") == key)["gold"].to_list() == [int(new)]
