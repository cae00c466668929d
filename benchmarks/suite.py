"""A suite end to end: ``mill eval MODEL SUITE`` against clip_benchmark's CLI on the same datasets, model and precision.

Both run as fresh processes, as a user runs them, and are timed from start to exit:

- Mill: ``mill eval "clip[path=ARCH,pretrained=CKPT,precision=fp32]" bench_suite`` over a suite of DataComp
  specs (their class names and templates; ``n_samples`` set to the fixture's size), with a fresh cache (no
  classifier reused) and the number of times the model was loaded counted in the process;
- clip_benchmark: ``clip_benchmark eval --model ARCH --pretrained CKPT --dataset wds/vtab/pets wds/... --no_amp``
  over the same shards, which builds the model again for each dataset (its ``cli.run`` per dataset).

The datasets are fixture shards in the layout of DataComp's exports (``test/{i}.tar`` with ``<key>.webp`` and
``<key>.cls``, ``test/nshards.txt``, ``classnames.txt``, ``zeroshot_classification_templates.txt``), holding
real ImageNet photos (``../shared/data/imagenet-sample``) re-encoded as WebP and labelled round-robin over each
dataset's classes. The model is the open_clip architecture with random weights (seed 0) saved as a checkpoint
that both load. Prints each run's time, the ratio, each dataset's top-1 from both (they must agree), and how
many times each loaded the model.

    python benchmarks/suite.py                       # 5 datasets x 96 photos, ViT-S-32, 2 workers, batch 64
    python benchmarks/suite.py --repeat 3 --model ViT-B-32 --n_images 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from sample_shards import DEFAULT_SAMPLE_DIR, DEFAULT_WORK_DIR, photo_labels

from mill.core.registry import SpecRegistry
from mill.data.synthetic import write_image_shards

#: Mill benchmark → DataComp task key (clip_benchmark's ``wds/<key>``; the export folder is the key with - for /).
DATASETS = {
    "pets": "vtab/pets",
    "eurosat": "vtab/eurosat",
    "mnist": "mnist",
    "gtsrb": "gtsrb",
    "kitti_closest_vehicle_distance": "vtab/kitti_closest_vehicle_distance",
}
SUITE = "bench_suite"
#: Runs ``mill`` in this process, counting the model loads of the clip backend, and prints the count last.
MILL_COUNTING_LOADS = """
import sys
import mill.backends.clip.backend as backend
from mill.cli.main import main
loads = []
real = backend.load_model
backend.load_model = lambda *a, **k: loads.append(1) or real(*a, **k)
try:
    main(sys.argv[1:])
finally:
    print(f"model loads: {len(loads)}", file=sys.stderr)
"""
#: clip_benchmark's console script (``clip_benchmark.cli:main``), counting the models its ``run`` loads.
CLIP_BENCHMARK_COUNTING_LOADS = """
import sys
import clip_benchmark.cli as cli
loads = []
real = cli.load_clip
cli.load_clip = lambda *a, **k: loads.append(1) or real(*a, **k)
sys.argv[0] = "clip_benchmark"
try:
    cli.main()
finally:
    print(f"model loads: {len(loads)}", file=sys.stderr)
"""


def write_datasets(root: Path, photos: Path, n_images: int) -> dict[str, Path]:
    """One export-shaped folder per dataset under ``root`` (written once), by Mill benchmark name."""
    specs = SpecRegistry.discover(env={}).specs
    labels = photo_labels(photos)
    folders = {}
    for number, (name, key) in enumerate(DATASETS.items()):
        folder = root / key.replace("/", "-")
        folders[name] = folder
        if (folder / "test" / "nshards.txt").is_file():
            continue
        spec = specs[name]
        chosen = labels[number * n_images : (number + 1) * n_images]
        samples = [(i % len(spec.classnames), _photo(photos / file)) for i, (file, _) in enumerate(chosen)]
        write_image_shards(folder, samples, n_samples=len(samples), n_shards=2, layout="clip_benchmark")
        (folder / "classnames.txt").write_text("".join(f"{c}\n" for c in spec.classnames), encoding="utf-8")
        templates = "".join(f"{t}\n" for t in spec.templates)
        (folder / "zeroshot_classification_templates.txt").write_text(templates, encoding="utf-8")
    return folders


def _photo(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def write_suite(specs_dir: Path, n_images: int) -> None:
    """The DataComp specs with ``n_samples`` set to the fixture's size (replacing the built-in ones), and the suite."""
    (specs_dir / "suites").mkdir(parents=True, exist_ok=True)
    for name, spec in SpecRegistry.discover(env={}).specs.items():
        if name in DATASETS:
            text = spec.path.read_text(encoding="utf-8")
            marker = f"n_samples = {spec.dataset.n_samples}\n"
            (specs_dir / spec.path.name).write_text(text.replace(marker, f"n_samples = {n_images}\n"), encoding="utf-8")
    members = ", ".join(f'"{name}"' for name in DATASETS)
    (specs_dir / "suites" / f"{SUITE}.toml").write_text(
        f'name = "{SUITE}"\ndescription = "benchmarks/suite.py"\nbenchmarks = [{members}]\n', encoding="utf-8"
    )


def save_checkpoint(model_name: str, path: Path) -> None:
    import open_clip
    import torch

    if not path.is_file():
        torch.manual_seed(0)
        torch.save(open_clip.create_model(model_name).state_dict(), path)


def run_mill(
    args: argparse.Namespace, checkpoint: Path, folders: dict[str, Path], scratch: Path
) -> tuple[float, str, Path]:
    out = Path(tempfile.mkdtemp(dir=scratch, prefix="mill-out-"))
    model = f"clip[path={args.model},pretrained={checkpoint},precision=fp32]"
    data = ",".join(f"{name}={folder}" for name, folder in folders.items())
    command = [
        sys.executable, "-c", MILL_COUNTING_LOADS, "eval", model, SUITE, "--data_dir", data,
        "--output_dir", str(out), "--cache_dir", str(out / "cache"), "--batch_size", str(args.batch_size),
        "--num_workers", str(args.num_workers), "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "MILL_SPEC_PATH": str(scratch / "specs"), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"mill failed:\n{done.stderr}")
    return elapsed, done.stderr.strip().splitlines()[-1], out


def run_clip_benchmark(
    args: argparse.Namespace, checkpoint: Path, data_root: Path, scratch: Path
) -> tuple[float, str, Path]:
    out = Path(tempfile.mkdtemp(dir=scratch, prefix="cb-out-"))
    command = [
        sys.executable, "-c", CLIP_BENCHMARK_COUNTING_LOADS, "eval",
        "--model", args.model, "--pretrained", str(checkpoint),
        "--dataset", *[f"wds/{key}" for key in DATASETS.values()], "--dataset_root", f"{data_root}/{{dataset_cleaned}}",
        "--task", "zeroshot_classification", "--batch_size", str(args.batch_size),
        "--num_workers", str(args.num_workers), "--no_amp", "--output", f"{out}/{{dataset}}.json", "--quiet",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(
        command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"clip_benchmark failed:\n{done.stderr[-3000:]}")
    return elapsed, done.stderr.strip().splitlines()[-1], out


def top1s(mill_out: Path, cb_out: Path) -> dict[str, tuple[float, float]]:
    """Each dataset's top-1: Mill's aggregate row and clip_benchmark's ``acc1``."""
    import polars as pl

    rows = pl.read_csv(mill_out / "aggregate.csv").filter(pl.col("metric") == "acc")
    mill = dict(zip(rows.get_column("task").to_list(), rows.get_column("performance").to_list(), strict=True))
    found = {}
    for name, key in DATASETS.items():
        reference = json.loads((cb_out / f"{key.replace('/', '_')}.json").read_text())["metrics"]["acc1"]
        found[name] = (mill[name], reference)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-S-32", help="open_clip architecture (random weights, seed 0)")
    parser.add_argument("--n_images", type=int, default=96, help="photos per dataset")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool, interleaved")
    parser.add_argument("--sample_dir", default=str(DEFAULT_SAMPLE_DIR))
    parser.add_argument("--work_dir", default=str(DEFAULT_WORK_DIR))
    args = parser.parse_args()
    work = Path(args.work_dir) / f"suite-{args.n_images}"
    work.mkdir(parents=True, exist_ok=True)
    folders = write_datasets(work / "data", Path(args.sample_dir), args.n_images)
    checkpoint = work / f"{args.model}-random-seed0.pt"
    save_checkpoint(args.model, checkpoint)
    scratch = Path(tempfile.mkdtemp(prefix="mill-suite-bench-"))
    write_suite(scratch / "specs", args.n_images)
    print(f"machine: {os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f}")
    print(
        f"{len(DATASETS)} datasets x {args.n_images} photos ({', '.join(DATASETS)}); {args.model} random weights, "
        f"fp32; batch {args.batch_size}, {args.num_workers} workers\n"
    )
    mill_times, cb_times = [], []
    for _ in range(args.repeat):
        elapsed, loads, mill_out = run_mill(args, checkpoint, folders, scratch)
        mill_times.append(elapsed)
        print(f"mill eval ... {SUITE}: {elapsed:.1f} s ({loads})")
        elapsed, loads, cb_out = run_clip_benchmark(args, checkpoint, work / "data", scratch)
        cb_times.append(elapsed)
        print(f"clip_benchmark eval ... ({len(DATASETS)} datasets): {elapsed:.1f} s ({loads})")
    mill_time, cb_time = statistics.median(mill_times), statistics.median(cb_times)
    print(
        f"\nmedian end to end: Mill {mill_time:.1f} s, clip_benchmark {cb_time:.1f} s: Mill {cb_time / mill_time:.2f}x"
    )
    for name, (mill, reference) in top1s(mill_out, cb_out).items():
        mark = "same" if abs(mill - reference) < 1e-9 else "DIFFERENT"
        print(f"  {name}: top-1 Mill {mill:.4f}, clip_benchmark {reference:.4f} ({mark})")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
