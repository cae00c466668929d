"""torch.distributed helpers: the launcher's environment, the split of the samples, gathering on rank 0.

The end-to-end test launches two gloo processes on CPU with torchrun, each evaluating its part of real
(synthetic) shards, and checks that rank 0 gathers exactly what one process computes alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mill.cli import distributed
from mill.cli.distributed import DistributedError, WorldInfo, gather_objects, world
from mill.core.engine import rank_keys
from mill.core.sample import ReadOptions
from mill.data import open_dataset, synthetic_dataset_spec, write_synthetic_shards

# Each rank opens the same shards, keeps its own keys, and "evaluates" every image into a record that
# depends on its decoded pixels; rank 0 writes what it gathered.
RANK_SCRIPT = """
import json, sys
from pathlib import Path

import torch

from mill.cli import distributed as d
from mill.core.engine import rank_keys
from mill.core.sample import ReadOptions
from mill.data import open_dataset, synthetic_dataset_spec

shards, cache, out = (Path(p) for p in sys.argv[1:4])
info = d.world()
assert d.init_process_group_if_needed("cpu", info)
data = open_dataset(synthetic_dataset_spec(shards, n_samples=21), n_classes=7,
                    options=ReadOptions(cache_dir=cache / f"rank{info.rank}"))
mine = data.subset(rank_keys(data.keys, info.rank, info.world_size))
records = []
for batch in mine.batches(batch_size=3, num_workers=1):
    for key, label, image in zip(batch.keys, batch.labels, batch.images):
        pixels = torch.tensor(list(image.getdata()), dtype=torch.int64)
        records.append({"key": key, "gold": label, "checksum": int(pixels.sum()), "rank": info.rank})
gathered = d.gather_objects(records)
d.barrier()
if info.is_main:
    assert gathered is not None and len(gathered) == info.world_size
    out.write_text(json.dumps(gathered))
else:
    assert gathered is None
d.shutdown(completed=True)
"""


def _records(shards: Path, cache: Path) -> list[dict[str, object]]:
    """What one process alone computes over all the samples (the reference)."""
    import torch

    data = open_dataset(synthetic_dataset_spec(shards, n_samples=21), n_classes=7, options=ReadOptions(cache_dir=cache))
    records: list[dict[str, object]] = []
    for batch in data.batches(batch_size=4):
        for key, label, image in zip(batch.keys, batch.labels, batch.images, strict=True):
            pixels = torch.tensor(list(image.getdata()), dtype=torch.int64)
            records.append({"key": key, "gold": label, "checksum": int(pixels.sum())})
    return records


def test_two_gloo_ranks_gather_exactly_what_one_process_computes(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    write_synthetic_shards(shards, n_classes=7, per_class=3, n_shards=2, image_size=16)
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent(RANK_SCRIPT))
    out = tmp_path / "gathered.json"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*launch, str(script), str(shards), str(tmp_path / "cache"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    per_rank = json.loads(out.read_text())
    assert [{r["rank"] for r in part} for part in per_rank] == [{0}, {1}]
    keys = [[r["key"] for r in part] for part in per_rank]
    assert not set(keys[0]) & set(keys[1])
    assert abs(len(keys[0]) - len(keys[1])) <= 1
    merged = sorted(({k: v for k, v in r.items() if k != "rank"} for part in per_rank for r in part), key=str)
    reference = _records(shards, tmp_path / "cache-single")
    assert len(reference) == 21
    assert merged == sorted(reference, key=str)


def test_rank_keys_partition_the_keys_whatever_their_order() -> None:
    keys = [f"s{i:07d}" for i in range(23)]
    for world_size in (1, 2, 3, 8, 30):
        parts = [rank_keys(keys[::-1], rank, world_size) for rank in range(world_size)]
        assert sorted(k for part in parts for k in part) == keys
        assert sum(len(part) for part in parts) == len(keys)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert parts == [rank_keys(keys, rank, world_size) for rank in range(world_size)]
    assert rank_keys(keys, 1, 4) == keys[1::4]
    with pytest.raises(ValueError, match="rank 2 is not in"):
        rank_keys(keys, 2, 2)


def test_world_reads_torchrun_then_slurm_and_defaults_to_one_process() -> None:
    assert world({}) == WorldInfo(rank=0, world_size=1, local_rank=0)
    assert world({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == WorldInfo(3, 4, 1)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    # A batch script sees its allocation's task count but is a single process until srun starts tasks.
    assert world(slurm) == WorldInfo()
    assert world({**slurm, "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}) == WorldInfo(5, 8, 1)
    # torchrun's variables win when srun starts torchrun itself.
    both = {**slurm, "MASTER_ADDR": "n", "MASTER_PORT": "1", "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    assert world(both) == WorldInfo(0, 2, 0)
    with pytest.raises(DistributedError, match="RANK=4, WORLD_SIZE=4"):
        world({"RANK": "4", "WORLD_SIZE": "4", "LOCAL_RANK": "0"})
    with pytest.raises(DistributedError, match="LOCAL_RANK"):
        world({"RANK": "0", "WORLD_SIZE": "2"})


def test_single_process_helpers_need_no_group() -> None:
    assert gather_objects({"a": 1}) == [{"a": 1}]


class _RecordingDist:
    """The part of torch.distributed that ``shutdown`` uses, recording the calls made on it."""

    def __init__(self, barrier_error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.barrier_error = barrier_error

    def is_initialized(self) -> bool:
        return True

    def get_backend(self) -> str:
        return "gloo"

    def get_rank(self) -> int:
        return 1

    def get_world_size(self) -> int:
        return 2

    def barrier(self) -> None:
        self.calls.append("barrier")
        if self.barrier_error is not None:
            raise self.barrier_error

    def destroy_process_group(self) -> None:
        self.calls.append("destroy")


@pytest.mark.parametrize(("completed", "calls"), [(True, ["barrier", "destroy"]), (False, ["destroy"])])
def test_a_completed_rank_waits_for_the_others_before_leaving_and_a_failed_one_leaves_at_once(
    monkeypatch: pytest.MonkeyPatch, completed: bool, calls: list[str]
) -> None:
    fake = _RecordingDist()
    monkeypatch.setattr(distributed, "_dist", lambda: fake)
    distributed.shutdown(completed=completed)
    assert fake.calls == calls


def test_a_completed_rank_whose_peer_left_early_says_so_and_still_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _RecordingDist(RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:18611.\nmore"))
    monkeypatch.setattr(distributed, "_dist", lambda: fake)
    left_early = r"rank 1 of 2 completed its part, but another rank left .*closed by peer"
    with pytest.raises(DistributedError, match=left_early):
        distributed.shutdown(completed=True)
    assert fake.calls == ["barrier", "destroy"]


# Rank 0 fails after the gather (as when its results cannot be written); rank 1 completed and is told.
EARLY_LEAVER_SCRIPT = """
import sys
import time
from pathlib import Path

from mill.cli import distributed as d

out = Path(sys.argv[1])
info = d.world()
assert d.init_process_group_if_needed("cpu", info)
d.gather_objects({"rank": info.rank})
if info.is_main:
    time.sleep(0.5)  # scoring, then writing fails
    d.shutdown(completed=False)
else:
    try:
        d.shutdown(completed=True)
    except d.DistributedError as exc:
        out.write_text(str(exc))
"""


def test_a_rank_that_completed_is_told_when_rank_zero_failed_after_the_gather(tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent(EARLY_LEAVER_SCRIPT))
    out = tmp_path / "rank1-error.txt"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run([*launch, str(script), str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_text().startswith("rank 1 of 2 completed its part, but another rank left the launch before the end")
