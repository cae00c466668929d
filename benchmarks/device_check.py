"""The GPU device check of issue 16: one run, under 5 minutes, of the figures only a GPU machine gives.

Run through ``benchmarks/device_check.sh`` (which installs the carried wheels first); writes
``OUT/device_check.json`` after every item, so a run cut short still reports what it measured:

  stack         the machine's software (python, torch, CUDA, GPU, every package Mill uses); a missing package
                stops the run before any work, naming it
  data          real photos (``.carry/photos``) re-encoded once as WebP at quality 90 at their own resolution,
                replicated under distinct keys into 50,000 samples in the real export's layout
                (``test/{i}.tar`` with ``<key>.0.webp`` and ``<key>.cls``, plus ``test/nshards.txt``)
  1 mill_eval   ``mill eval "clip[path=ViT-B-32]" imagenet`` at its defaults (random weights, 1000 x 80 prompts)
  2 limits      classifier build, the model's forward alone on pre-decoded tensors, decode + transform alone
                across the loader workers; the end-to-end rate as a fraction of the lower limit, and the limit
                that binds
  3 reference   clip_benchmark at its defaults (batch 64, 4 workers, per-class classifier loop) on a
                10,000-sample part, in a subprocess (with the carried older numpy if the machine's is refused)
  4 precision   bf16 against fp32 on the bundled demo model: accuracies and per-sample top-1 agreement
  6 nccl        a NCCL process group at world size 1: all_reduce, Mill's barrier and gather_objects
  5 mcq         hf generative MCQ with a Qwen2-VL of the 2B model's size built from its config: batched vs 1

``--dry-run``: the same steps on the CPU with synthetic images, a few hundred samples, a tiny CLIP model, a
10-class x 2-template spec and the tiny VLM (what tests/test_device_check.py runs).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.metadata
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
DEFAULT_CARRY = ROOT / ".carry"
# zero_shot.py and mcq.py beside this file hold the measurements this check shares with them.
sys.path.insert(0, str(BENCHMARKS))
#: Modules the check imports, and the distribution each comes from (for the stack record and the early check).
REQUIRED = {
    "torch": "torch",
    "torchvision": "torchvision",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "open_clip": "open_clip_torch",
    "timm": "timm",
    "ftfy": "ftfy",
    "polars": "polars",
    "attrs": "attrs",
    "cattrs": "cattrs",
    "filelock": "filelock",
    "braceexpand": "braceexpand",
    "webdataset": "webdataset",
    "huggingface_hub": "huggingface_hub",
    "PIL": "pillow",
    "numpy": "numpy",
    "rich": "rich",
    "click": "click",
    "mill.core": "mill-core",
    "mill.data": "mill-data",
    "mill.cli.main": "mill-cli",
    "mill.backends.clip": "mill-backends-clip",
    "mill.backends.llm.hf": "mill-backends-llm",
}
OTHER_DISTRIBUTIONS = (
    "clip-benchmark",
    "scikit-learn",
    "pyarrow",
    "pandas",
    "safetensors",
    "accelerate",
    "triton",
    "nvidia-nccl-cu13",
)

#: Qwen2-VL-2B-Instruct's sizes (its config.json); the tiny VLM's processor and tokenizer are kept.
QWEN2_VL_2B_TEXT = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "head_dim": 128,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    "tie_word_embeddings": True,
}
QWEN2_VL_2B_VISION = {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4}
#: The Qwen2-VL processor's default pixel bounds, so a photo becomes the few hundred image tokens it would.
QWEN2_VL_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280}


class Size(SimpleNamespace):
    """How big each step is: the real protocol, or the dry run's few hundred samples."""


REAL = Size(
    n_samples=50_000,
    n_shards=50,
    reference_shards=10,
    n_photos=None,
    n_forward=10_240,
    n_predecoded=512,
    mcq_batched=64,
    mcq_single=16,
    mcq_batch_size=16,
    deadline_s=285.0,
)
DRY = Size(
    n_samples=320,
    n_shards=8,
    # At least clip_benchmark's 4 workers: its webdataset loader fails on a worker with no shard.
    reference_shards=4,
    n_photos=8,
    n_forward=256,
    n_predecoded=64,
    mcq_batched=8,
    mcq_single=4,
    mcq_batch_size=4,
    deadline_s=1200.0,
)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.step == "reference":
        return _reference_step(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    report = Report(out / "device_check.json", dry_run=args.dry_run)
    missing = _missing_modules()
    report.record("stack", _stack(missing))
    if missing:
        names = ", ".join(f"{module} (distribution {REQUIRED[module]})" for module in missing)
        print(
            f"device_check: cannot start, missing: {names}. Run benchmarks/device_prepare.sh where PyPI is "
            "reachable and carry .carry/; device_check.sh installs its wheels.",
            file=sys.stderr,
        )
        report.finish("missing packages")
        return 2
    size = DRY if args.dry_run else REAL
    device = "cpu" if args.dry_run else "cuda"
    started = time.perf_counter()
    built = report.run("data", lambda: _build_data(args, size, work), started, size)
    if built is None or built["status"] != "ok":
        report.finish("no data")
        return 1
    root = work / "shards"
    part = work / "part"
    model = _clip_model(args.dry_run, work)
    benchmark = str(_small_spec(work)) if args.dry_run else "imagenet"
    report.run("mill_eval", lambda: _mill_eval(model, benchmark, root, work), started, size)
    report.run("reference", lambda: _reference(args, model, benchmark, part, work), started, size)
    report.run(
        "limits",
        lambda: _limits(model, benchmark, root, part, device, size, work, report.results.get("mill_eval")),
        started,
        size,
    )
    report.run("precision", lambda: _precision(work), started, size)
    report.run("nccl", lambda: _nccl(device), started, size)
    report.run("mcq", lambda: _mcq(args.dry_run, device, part, size, work), started, size)
    report.summarise(size)
    report.finish("done")
    return 0 if not report.results["summary"]["items_failed"] else 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, synthetic images, a few hundred samples")
    parser.add_argument("--out", default=os.environ.get("OUT", "device_check_out"), help="JSON goes here")
    parser.add_argument("--carry", default=str(DEFAULT_CARRY), help="the carried folder (photos/)")
    parser.add_argument("--work_dir", default="/tmp/mill-device-check", help="shards, caches, results")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--benchmark", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


class Report:
    """The JSON of the run, rewritten after every item."""

    def __init__(self, path: Path, *, dry_run: bool) -> None:
        self.path = path
        self.results: dict[str, dict[str, Any]] = {}
        self.header: dict[str, Any] = {"dry_run": dry_run, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.clock = time.perf_counter()

    def record(self, name: str, result: dict[str, Any]) -> None:
        self.results[name] = result
        self._write("running")

    def run(self, name: str, step: Callable[[], dict[str, Any]], started: float, size: Size) -> dict[str, Any] | None:
        """Run one item, recording its figures or its error; past the deadline, record it as skipped."""
        elapsed = time.perf_counter() - started
        if elapsed > size.deadline_s:
            self.record(name, {"status": "skipped", "reason": f"deadline {size.deadline_s:.0f} s passed"})
            print(f"[{elapsed:6.1f} s] {name}: skipped (deadline)", flush=True)
            return None
        print(f"[{elapsed:6.1f} s] {name} ...", flush=True)
        begin = time.perf_counter()
        try:
            result = {"status": "ok", **step()}
        except Exception as error:  # one item's failure must not cost the others' figures
            traceback.print_exc()
            result = {"status": "error", "error": f"{type(error).__name__}: {error}"}
        result["seconds"] = round(time.perf_counter() - begin, 3)
        self.record(name, result)
        print(f"[{time.perf_counter() - started:6.1f} s] {name}: {json.dumps(result)}", flush=True)
        return result

    def summarise(self, size: Size) -> None:
        self.results["summary"] = _summary(self.results, size)
        self._write("running")
        print("summary: " + json.dumps(self.results["summary"], indent=2), flush=True)

    def finish(self, state: str) -> None:
        self._write(state)

    def _write(self, state: str) -> None:
        document = {**self.header, "state": state, "total_seconds": round(time.perf_counter() - self.clock, 3)}
        document.update(self.results)
        self.path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- stack


def _missing_modules() -> list[str]:
    missing = []
    for module in REQUIRED:
        try:
            importlib.import_module(module)
        except Exception as error:  # any import failure makes the package unusable here
            print(f"device_check: import {module} failed: {type(error).__name__}: {error}", file=sys.stderr)
            missing.append(module)
    return missing


def _stack(missing: list[str]) -> dict[str, Any]:
    versions = {}
    for distribution in (*REQUIRED.values(), *OTHER_DISTRIBUTIONS):
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[distribution] = None
    stack: dict[str, Any] = {
        "status": "ok" if not missing else "error",
        "missing": missing,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }
    if "torch" not in missing:
        import torch

        stack["torch_cuda"] = torch.version.cuda
        stack["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            stack["gpu"] = {
                "name": properties.name,
                "capability": f"{properties.major}.{properties.minor}",
                "memory_gib": round(properties.total_memory / 2**30, 1),
                "multiprocessors": properties.multi_processor_count,
                "cudnn": torch.backends.cudnn.version(),
                "nccl": ".".join(map(str, torch.cuda.nccl.version())),
            }
    if shutil.which("nvidia-smi"):
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        stack["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    return stack


# ----------------------------------------------------------------------------------------------- data


def _build_data(args: argparse.Namespace, size: Size, work: Path) -> dict[str, Any]:
    """WebP (quality 90) images replicated under distinct keys into ``size.n_samples`` samples."""
    start = time.perf_counter()
    encoded = _synthetic_photos(size.n_photos) if args.dry_run else _carried_photos(Path(args.carry) / "photos")
    encode_s = time.perf_counter() - start
    split = work / "shards" / "test"
    split.mkdir(parents=True)
    per_shard = -(-size.n_samples // size.n_shards)
    written = 0
    for shard in range(size.n_shards):
        with tarfile.open(split / f"{shard}.tar", "w") as tar:
            for index in range(shard * per_shard, min(size.n_samples, (shard + 1) * per_shard)):
                label, data = encoded[index % len(encoded)]
                key = f"s{index:07d}"
                for member, payload in ((f"{key}.0.webp", data), (f"{key}.cls", b"%d" % label)):
                    info = tarfile.TarInfo(member)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                written += len(data)
    (split / "nshards.txt").write_text(f"{size.n_shards}\n")
    # The clip_benchmark part: the first shards, linked, with their own nshards.txt.
    part = work / "part" / "test"
    part.mkdir(parents=True)
    for shard in range(size.reference_shards):
        (part / f"{shard}.tar").symlink_to(split / f"{shard}.tar")
    (part / "nshards.txt").write_text(f"{size.reference_shards}\n")
    return {
        "n_samples": size.n_samples,
        "n_shards": size.n_shards,
        "distinct_images": len(encoded),
        "mean_webp_kib": round(sum(len(d) for _, d in encoded) / len(encoded) / 1024, 1),
        "dataset_mib": round(written / 2**20, 1),
        "reference_samples": min(size.n_samples, size.reference_shards * per_shard),
        "encode_s": round(encode_s, 3),
    }


def _webp(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="WEBP", quality=90)
    return buffer.getvalue()


def _carried_photos(folder: Path) -> list[tuple[int, bytes]]:
    from PIL import Image

    labels = folder / "labels.tsv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels} not found: run benchmarks/device_prepare.sh and carry .carry/")
    with labels.open(newline="") as file:
        rows = [(row["filename"], int(row["class_index"])) for row in csv.DictReader(file, delimiter="\t")]
    encoded = []
    for name, label in rows:
        with Image.open(folder / name) as image:
            encoded.append((label, _webp(image)))
    return encoded


def _synthetic_photos(n: int) -> list[tuple[int, bytes]]:
    import numpy as np

    from mill.data.synthetic import synthetic_image

    rng = np.random.default_rng(0)
    return [(label, _webp(synthetic_image(label, n_classes=n, size=96, rng=rng))) for label in range(n)]


def _small_spec(work: Path) -> Path:
    """A 10-class x 2-template zero-shot spec over the check's shards (the dry run's small classifier)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    folder = work / "spec"
    folder.mkdir(exist_ok=True)
    (folder / "classnames.txt").write_text("\n".join(IMAGENET_CLASSNAMES[:10]) + "\n")
    (folder / "templates.txt").write_text("a photo of a {c}.\na picture of a {c}.\n")
    spec = folder / "devcheck.toml"
    spec.write_text(
        'name = "devcheck"\ndescription = "device check dry run"\nseed = 0\nheadline_metric = "acc"\n\n'
        f'[dataset]\nsource = "{work / "shards"}"\nsplit = "test"\nimage_member = "0.webp"\nlabel_member = "cls"\n'
        f"n_samples = {DRY.n_samples}\n\n"
        '[classes]\nfile = "classnames.txt"\ncount = 10\n\n[templates]\nfile = "templates.txt"\n\n'
        '[variants.devcheck]\nkind = "zero_shot"\nmetric = "acc"\ntop_k = 5\n'
    )
    return spec


def _clip_model(dry_run: bool, work: Path) -> dict[str, str]:
    """The clip backend's arguments: ViT-B-32 with random weights, or the tiny model in the dry run."""
    if not dry_run:
        return {"path": "ViT-B-32"}
    from mill.backends.clip.tiny import write_tiny_model

    tiny = write_tiny_model(work / "tiny-clip")
    return {"path": str(tiny.config_path), "pretrained": str(tiny.checkpoint_path)}


def _spec_string(backend: str, arguments: dict[str, str]) -> str:
    return f"{backend}[{','.join(f'{k}={v}' for k, v in arguments.items())}]"


# ------------------------------------------------------------------------------------------- 1: mill eval


def _mill(*argv: str, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    """``python -m mill.cli ARGV`` as its own process; the wall time includes its start-up, as a user's does."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mill.cli", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"mill {' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, done


def _per_sample(output_dir: Path) -> Any:
    import polars as pl

    from mill.core.results import read_aggregate

    files = read_aggregate(output_dir).get_column("output_file").unique().to_list()
    if len(files) != 1:
        raise RuntimeError(f"expected one per-sample file in {output_dir}, found {files}")
    return pl.read_parquet(output_dir / files[0])


def _mill_eval(model: dict[str, str], benchmark: str, root: Path, work: Path) -> dict[str, Any]:
    output = work / "results-eval"
    seconds, _ = _mill(
        "eval",
        _spec_string("clip", model),
        benchmark,
        "--data_dir",
        str(root),
        "--output_dir",
        str(output),
        "--cache_dir",
        str(work / "cache-eval"),
        "--quiet",
    )
    rows = _per_sample(output)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import mill.cli.main, mill.backends.clip.backend"], check=True)
    import_s = time.perf_counter() - start
    return {
        "n_samples": rows.height,
        "wall_s": round(seconds, 3),
        "images_per_s": round(rows.height / seconds, 1),
        "import_s": round(import_s, 3),
        "accuracy": round(float(rows.get_column("correct").mean()), 4),
    }


# -------------------------------------------------------------------------------------------- 2: limits


def _dataset(root: Path, cache: Path) -> Any:
    from mill.core.sample import ReadOptions
    from mill.data import open_dataset, synthetic_dataset_spec

    return open_dataset(
        synthetic_dataset_spec(root, n_samples=0),
        n_classes=1000,
        options=ReadOptions(allow_incomplete=True, cache_dir=cache),
    )


def _task(benchmark: str) -> Any:
    from mill.core.kinds.zero_shot import ZeroShotTask
    from mill.core.specfile import load_spec

    spec = load_spec(Path(benchmark) if benchmark.endswith(".toml") else ROOT / "specs" / f"{benchmark}.toml")
    return ZeroShotTask(spec.name, "default", spec.classnames, spec.templates)


def _load_clip(model: dict[str, str], device: str, cache: Path, precision: str | None = None) -> Any:
    """The clip backend at Mill's defaults (precision, batch size, workers) for ``device``."""
    import zero_shot as zs

    from mill.core.backend import DEFAULT_BATCH_SIZE, MAX_DEFAULT_WORKERS
    from mill.core.precision import DEFAULT_PRECISION

    namespace = SimpleNamespace(model=model["path"], pretrained=model.get("pretrained"), device=device)
    batch = DEFAULT_BATCH_SIZE[device]
    workers = min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)
    return zs._load(namespace, precision or DEFAULT_PRECISION, batch, workers, cache), batch, workers


@contextmanager
def _timer(into: dict[str, float], name: str, device: str) -> Iterator[None]:
    import zero_shot as zs

    zs._sync(device)
    start = time.perf_counter()
    yield
    zs._sync(device)
    into[name] = time.perf_counter() - start


def _limits(
    model: dict[str, str],
    benchmark: str,
    root: Path,
    part: Path,
    device: str,
    size: Size,
    work: Path,
    mill_eval: dict[str, Any] | None,
) -> dict[str, Any]:
    import torch
    import zero_shot as zs

    times: dict[str, float] = {}
    with _timer(times, "model_load", device):
        backend, batch, workers = _load_clip(model, device, work / "cache-limits")
    task = _task(benchmark)
    data = _dataset(root, work / "cache-limits")
    zs._warm_up(backend, data, task)
    with _timer(times, "classifier", device):
        classifier = backend.classifier_for(task)
    # Forward alone: a few hundred decoded images, repeated to n_forward, from pinned host memory (the copy
    # included, as in a run) and already on the device (the model alone).
    decoded = torch.cat(
        [
            b.images
            for b in data.subset(data.keys[: size.n_predecoded]).batches(batch_size=batch, transform=backend.preprocess)
        ]
    )
    repeats = -(-size.n_forward // len(decoded))
    host = decoded.repeat(repeats, 1, 1, 1)[: size.n_forward]
    host = host.pin_memory() if device == "cuda" else host
    zs._forward_only(backend, host[:batch], classifier, batch)
    times["forward_host"] = zs._forward_only(backend, host, classifier, batch)
    resident = host.to(backend.device)
    times["forward_device"] = zs._forward_only(backend, resident, classifier, batch)
    del resident
    # Decode + transform alone, across Mill's loader workers, no model.
    sample = _dataset(part, work / "cache-limits-part")
    with _timer(times, "decode", "cpu"):
        decoded_count = sum(
            len(b.keys)
            for b in sample.batches(
                batch_size=batch, num_workers=workers, transform=backend.preprocess, pin_memory=device == "cuda"
            )
        )
    rates = {
        "forward_host": size.n_forward / times["forward_host"],
        "forward_device": size.n_forward / times["forward_device"],
        "decode": decoded_count / times["decode"],
    }
    result: dict[str, Any] = {
        "batch_size": batch,
        "num_workers": workers,
        "precision": backend.args.precision.name if hasattr(backend.args.precision, "name") else None,
        "n_prompts": len(task.classnames) * len(task.templates),
        "model_load_s": round(times["model_load"], 3),
        "classifier_s": round(times["classifier"], 3),
        "forward_images": size.n_forward,
        "decode_images": decoded_count,
        "rates": {name: round(rate, 1) for name, rate in rates.items()},
    }
    if mill_eval and mill_eval.get("status") == "ok":
        lower_name = min(("forward_host", "decode"), key=rates.__getitem__)
        fixed = mill_eval["import_s"] + times["model_load"]
        images_s = max(mill_eval["wall_s"] - fixed - times["classifier"], 1e-9)
        parts = {"fixed_start_up": fixed, "classifier": times["classifier"], "images": images_s}
        result.update(
            lower_limit=lower_name,
            end_to_end_fraction_of_lower=round(mill_eval["images_per_s"] / rates[lower_name], 3),
            images_phase_rate=round(mill_eval["n_samples"] / images_s, 1),
            images_phase_fraction_of_lower=round(mill_eval["n_samples"] / images_s / rates[lower_name], 3),
            wall_breakdown_s={name: round(value, 3) for name, value in parts.items()},
            largest_share=max(parts, key=parts.__getitem__),
        )
    return result


# ----------------------------------------------------------------------------------------- 3: reference


def _reference(
    args: argparse.Namespace, model: dict[str, str], benchmark: str, part: Path, work: Path
) -> dict[str, Any]:
    """clip_benchmark in its own process: with the machine's numpy if it imports, else the carried one."""
    probe = "import clip_benchmark.metrics.zeroshot_classification"
    env = dict(os.environ)
    numpy_source = "machine"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False).returncode != 0:
        step_numpy = os.environ.get("MILL_STEP_NUMPY")
        if not step_numpy:
            raise RuntimeError("clip_benchmark does not import here and no MILL_STEP_NUMPY folder was given")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (step_numpy, env.get("PYTHONPATH"))))
        numpy_source = step_numpy
    out = work / "reference.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--step",
        "reference",
        "--model",
        json.dumps(model),
        "--benchmark",
        benchmark,
        "--data",
        str(part),
        "--json",
        str(out),
        "--work_dir",
        str(work),
    ]
    if args.dry_run:
        command.append("--dry-run")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    print(done.stdout + done.stderr, flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"clip_benchmark step exited {done.returncode}: {done.stderr[-2000:]}")
    return {"numpy": numpy_source, **json.loads(out.read_text())}


def _reference_step(args: argparse.Namespace) -> int:
    import numpy
    import zero_shot as zs

    device = "cpu" if args.dry_run else "cuda"
    work = Path(args.work_dir)
    backend, _, _ = _load_clip(json.loads(args.model), device, work / "cache-reference")
    task = _task(args.benchmark)
    root = Path(args.data)
    data = _dataset(root, work / "cache-reference")
    zs._warm_up(backend, data, task)
    key_index = {key: i for i, key in enumerate(sorted(data.keys))}
    total, text, _ = zs._reference(
        backend.model,
        backend.preprocess,
        backend.loaded.tokenizer,
        root,
        list(task.classnames),
        list(task.templates),
        key_index,
        device,
        True,
        zs.REFERENCE_BATCH_SIZE,
        zs.REFERENCE_WORKERS,
    )
    n = len(key_index)
    result = {
        "numpy_version": numpy.__version__,
        "n_samples": n,
        "batch_size": zs.REFERENCE_BATCH_SIZE,
        "num_workers": zs.REFERENCE_WORKERS,
        "wall_s": round(total, 3),
        "classifier_s": round(text, 3),
        "images_per_s": round(n / total, 1),
        "images_phase_rate": round(n / max(total - text, 1e-9), 1),
    }
    Path(args.json).write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------- 4: precision


def _precision(work: Path) -> dict[str, Any]:
    """The bundled demo model on the bundled shapes benchmark in bf16 autocast and in fp32."""
    predictions = {}
    result: dict[str, Any] = {}
    for precision in ("amp_bf16", "fp32"):
        output = work / f"results-shapes-{precision}"
        seconds, _ = _mill(
            "eval",
            f"clip[path=mill-shapes,pretrained=mill-shapes,precision={precision}]",
            "shapes",
            "--output_dir",
            str(output),
            "--cache_dir",
            str(work / f"cache-shapes-{precision}"),
            "--quiet",
        )
        rows = _per_sample(output).sort("key")
        predictions[precision] = rows
        result[precision] = {
            "accuracy": round(float(rows.get_column("correct").mean()), 4),
            "wall_s": round(seconds, 3),
        }
    bf16, fp32 = predictions["amp_bf16"], predictions["fp32"]
    if bf16.get_column("key").to_list() != fp32.get_column("key").to_list():
        raise RuntimeError("the bf16 and fp32 runs scored different samples")
    agree = int((bf16.get_column("prediction") == fp32.get_column("prediction")).sum())
    return {**result, "n_samples": bf16.height, "top1_agree": agree, "target_agree": bf16.height - 1}


# -------------------------------------------------------------------------------------------- 6: nccl


def _nccl(device: str) -> dict[str, Any]:
    """A process group of one (NCCL on CUDA, gloo on the CPU), used through Mill's collectives."""
    import socket

    import torch
    import torch.distributed as dist

    from mill.cli.distributed import barrier, gather_objects, world

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environ = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    saved = {name: os.environ.get(name) for name in environ}
    os.environ.update(environ)
    backend = "nccl" if device == "cuda" else "gloo"
    try:
        info = world()
        start = time.perf_counter()
        if device == "cuda":
            dist.init_process_group(backend, rank=0, world_size=1, device_id=torch.device("cuda", 0))
        else:
            dist.init_process_group(backend, rank=0, world_size=1)
        init_s = time.perf_counter() - start
        tensor = torch.full((1024,), 2.0, device=device)
        dist.all_reduce(tensor)
        barrier()
        gathered = gather_objects({"rank": info.rank, "sum": float(tensor.sum())})
        if gathered is None or len(gathered) != 1 or gathered[0]["sum"] != 2048.0:
            raise RuntimeError(f"unexpected gather result {gathered}")
        used = dist.get_backend()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return {"backend": used, "world_size": info.world_size, "init_s": round(init_s, 3), "all_reduce_sum": 2048.0}


# --------------------------------------------------------------------------------------------- 5: mcq


def _vlm(dry_run: bool, work: Path) -> Path:
    """The tiny VLM, or one of Qwen2-VL-2B's size built from config with the tiny one's processor."""
    from mill.backends.llm.tiny import write_tiny_vlm

    tiny = write_tiny_vlm(work / "vlm-tiny")
    if dry_run:
        return tiny
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

    folder = work / "vlm-2b"
    shutil.copytree(tiny, folder)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config["text_config"].update(QWEN2_VL_2B_TEXT)
    config["vision_config"].update(QWEN2_VL_2B_VISION)
    config["tie_word_embeddings"] = True
    config_file.write_text(json.dumps(config, indent=2))
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    vocabulary = len(AutoTokenizer.from_pretrained(folder))
    with torch.device("cuda"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(folder), dtype=torch.bfloat16)
    with torch.no_grad():
        # Ids past the tiny tokenizer's vocabulary are never generated (their logits are 0, below the max).
        model.get_input_embeddings().weight[vocabulary:] = 0
        model.get_output_embeddings().weight[vocabulary:] = 0
    model.generation_config.do_sample = False
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return folder


def _mcq(dry_run: bool, device: str, part: Path, size: Size, work: Path) -> dict[str, Any]:
    import mcq

    from mill.core.plugins import load_plugin

    start = time.perf_counter()
    path = _vlm(dry_run, work)
    build_s = time.perf_counter() - start
    data = _dataset(part, work / "cache-mcq")
    task = mcq.imagenet_mcq_task()
    common: dict[str, Any] = {"path": str(path), "device": device, "num_workers": 2}
    common["dtype"] = "float32" if dry_run else "bfloat16"
    if not dry_run:
        common.update(QWEN2_VL_PIXELS)
    runs = {}
    answers = {}
    for name, batch_size, n in (("batched", size.mcq_batch_size, size.mcq_batched), ("single", 1, size.mcq_single)):
        start = time.perf_counter()
        backend = load_plugin("hf").plugin.load(
            {**common, "batch_size": batch_size}, mcq._context(work / f"mcq-{name}")
        )
        load_s = time.perf_counter() - start
        mcq._run(backend, task, mcq._head(data, batch_size))  # warm-up, untimed
        seconds, answers[name] = mcq._run(backend, task, mcq._head(data, n))
        runs[name] = {
            "batch_size": batch_size,
            "n_samples": n,
            "load_s": round(load_s, 3),
            "wall_s": round(seconds, 3),
            "samples_per_s": round(n / seconds, 3),
        }
        del backend
    same = sum(a == b for a, b in zip(answers["batched"], answers["single"], strict=False))
    spec_text = (ROOT / "specs" / "imagenet.toml").read_text()
    return {
        "model": "tiny random Qwen2-VL" if dry_run else "Qwen2-VL of the 2B model's size, random weights",
        "build_s": round(build_s, 3),
        **runs,
        "speedup": round(runs["batched"]["samples_per_s"] / runs["single"]["samples_per_s"], 2),
        "identical_answers": same,
        "compared": min(size.mcq_batched, size.mcq_single),
        "letter_likelihood": "measured" if "likelihood" in spec_text else "not landed: no such variant in the spec",
    }


# ------------------------------------------------------------------------------------------ summary


def _summary(results: dict[str, dict[str, Any]], size: Size) -> dict[str, Any]:
    """Each target of the issue against the figures, and the limit that binds."""
    summary: dict[str, Any] = {}
    evaluation, limits = results.get("mill_eval", {}), results.get("limits", {})
    reference, precision = results.get("reference", {}), results.get("precision", {})
    if evaluation.get("status") == "ok":
        summary["end_to_end_s"] = evaluation["wall_s"]
        summary["end_to_end_target_30s_met"] = evaluation["wall_s"] < 30.0 if size is REAL else None
    if limits.get("status") == "ok" and "end_to_end_fraction_of_lower" in limits:
        summary["fraction_of_lower_limit"] = limits["end_to_end_fraction_of_lower"]
        summary["fraction_target_0_8_met"] = limits["end_to_end_fraction_of_lower"] >= 0.8
        summary["binds"] = (
            limits["largest_share"] if limits["largest_share"] != "images" else f"images: {limits['lower_limit']}"
        )
    if evaluation.get("status") == "ok" and reference.get("status") == "ok":
        ratio = evaluation["images_per_s"] / reference["images_per_s"]
        # clip_benchmark on the full 50,000: its classifier once, its image rate for the rest.
        projected = reference["classifier_s"] + evaluation["n_samples"] / reference["images_phase_rate"]
        summary["vs_clip_benchmark"] = round(ratio, 2)
        summary["vs_clip_benchmark_projected_same_size"] = round(projected / evaluation["wall_s"], 2)
        summary["vs_clip_benchmark_target_2x_met"] = ratio >= 2.0
    if precision.get("status") == "ok":
        summary["bf16_fp32_agree"] = f"{precision['top1_agree']}/{precision['n_samples']}"
        summary["bf16_fp32_target_met"] = precision["top1_agree"] >= precision["target_agree"]
    summary["items_ok"] = sorted(name for name, item in results.items() if item.get("status") == "ok")
    summary["items_failed"] = sorted(name for name, item in results.items() if item.get("status") not in (None, "ok"))
    return summary


if __name__ == "__main__":
    sys.exit(main())
