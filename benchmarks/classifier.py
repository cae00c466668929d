"""Classifier throughput: Mill's timm backend against timm's validation path, one model, the same photos.

timm's path is validate.py's composition (``create_dataset`` over an image folder, ``create_loader`` without the
CUDA prefetcher, which applies ``create_transform`` of ``resolve_data_config`` at the test size, then the model's
forward); Mill's is the timm backend's ``run_classification`` over the same photos as shards. The folder holds the
shards' WebP photos decoded and saved as PNG (timm's folder reader takes no WebP), so both see the same pixels;
timm then decodes PNG where Mill decodes WebP.

Prints, for one run on this machine: each tool's end-to-end time over the photos (model construction excluded,
both load the same checkpoint), best of ``--repeat``, and how many top-1 predictions agree.

Default size fits a 2-core CPU in a couple of minutes: resnet18.a1_in1k's architecture with random weights (no
download; its test size is 288 px) and 64 real photos, batch 64, each tool with the same number of loader workers.
On a GPU machine with the weights cached, for example:
  python benchmarks/classifier.py --model resnet50.a1_in1k --pretrained --device cuda --n_images 1000
"""

from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
import time
from pathlib import Path

import timm
import torch
from PIL import Image
from sample_shards import DEFAULT_SAMPLE_DIR, DEFAULT_WORK_DIR, photo_shards
from timm.data import create_dataset, create_loader, resolve_data_config

from mill.backends.classifiers import timm_plugin
from mill.core.backend import DEFAULT_BATCH_SIZE, MAX_DEFAULT_WORKERS, RunContext
from mill.core.kinds.classification import ClassificationTask
from mill.core.sample import ReadOptions
from mill.data import open_dataset, synthetic_dataset_spec


def main() -> None:
    args = _parse()
    root = photo_shards(Path(args.sample_dir), Path(args.work_dir), args.n_images)
    scratch = Path(tempfile.mkdtemp(prefix="mill-bench-"))
    folder = _image_folder(root, scratch / "folder")
    checkpoint = scratch / "model.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model(args.model, pretrained=args.pretrained).state_dict(), checkpoint)
    batch = args.batch_size or DEFAULT_BATCH_SIZE.get(args.device.split(":")[0], 64)
    workers = args.num_workers if args.num_workers is not None else min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)
    print(f"{args.model}, {args.n_images} photos, batch {batch}, {workers} workers, {args.device}, fp32")

    model = timm.create_model(args.model, checkpoint_path=str(checkpoint)).eval().to(args.device)
    config = resolve_data_config({}, model=model, use_test_size=True)
    print(f"data config: {config}")

    def reference() -> list[int]:
        dataset = create_dataset(name="", root=str(folder), split="validation")
        loader = create_loader(
            dataset,
            input_size=config["input_size"],
            batch_size=batch,
            use_prefetcher=False,
            interpolation=config["interpolation"],
            mean=config["mean"],
            std=config["std"],
            num_workers=workers,
            crop_pct=config["crop_pct"],
            crop_mode=config["crop_mode"],
            pin_memory=args.device.startswith("cuda"),
            device=torch.device(args.device),
        )
        predictions: list[int] = []
        with torch.inference_mode():
            for images, _ in loader:
                predictions += model(images.to(args.device)).argmax(dim=-1).tolist()
        return predictions

    spec = {"name": args.model, "checkpoint": str(checkpoint), "precision": "fp32", "device": args.device}
    spec |= {"batch_size": batch, "num_workers": workers}
    backend = timm_plugin.load(spec, RunContext(cache_dir=None))
    data = open_dataset(
        synthetic_dataset_spec(root, n_samples=0),
        n_classes=1000,
        options=ReadOptions(allow_incomplete=True, cache_dir=scratch / "cache"),
    )
    task = ClassificationTask("imagenet", "imagenet_classifier", tuple(str(i) for i in range(1000)), 1000, top_k=5)

    def mill() -> list[int]:
        answers = {}
        for result in backend.run_classification(task, data):  # type: ignore[attr-defined]
            answers.update({key: topk[0] for key, topk in zip(result.keys, result.topk, strict=True)})
        return [answers[key] for key in sorted(answers)]

    timings: dict[str, float] = {}
    predictions: dict[str, list[int]] = {}
    for _ in range(args.repeat):
        for name, run in (("timm", reference), ("mill", mill)):  # interleaved: both see the same load
            start = time.perf_counter()
            predictions[name] = run()
            timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - start)
    n = len(predictions["mill"])
    agree = sum(a == b for a, b in zip(predictions["mill"], predictions["timm"], strict=True))
    for name in ("mill", "timm"):
        print(f"{name}: {timings[name]:.2f} s ({n / timings[name]:.1f} img/s)")
    print(f"mill / timm speed: {timings['timm'] / timings['mill']:.2f}x; top-1 agreement {agree}/{n}")


def _image_folder(root: Path, folder: Path) -> Path:
    """The shards' WebP photos as a PNG image folder (one folder per class, named by its index), in key order."""
    for shard in sorted((root / "test").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {member.name: member for member in tar.getmembers()}
            for name, member in members.items():
                if not name.endswith(".webp"):
                    continue
                key = name.split(".")[0]
                label = int(tar.extractfile(members[f"{key}.cls"]).read())  # type: ignore[union-attr]
                (folder / f"{label:04d}").mkdir(parents=True, exist_ok=True)
                with Image.open(tar.extractfile(member)) as image:  # type: ignore[arg-type]
                    image.save(folder / f"{label:04d}" / f"{key}.png")
    return folder


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18.a1_in1k", help="timm model with its pretrained tag")
    parser.add_argument("--pretrained", action="store_true", help="the published weights (default: random weights)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=None, help="both tools (default: Mill's)")
    parser.add_argument("--num_workers", type=int, default=None, help="both tools (default: Mill's)")
    parser.add_argument("--n_images", type=int, default=64, help="photos converted from --sample_dir (max 1000)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each tool; the fastest counts")
    parser.add_argument("--sample_dir", default=str(DEFAULT_SAMPLE_DIR))
    parser.add_argument("--work_dir", default=str(DEFAULT_WORK_DIR), help="where converted shards are cached")
    return parser.parse_args()


if __name__ == "__main__":
    main()
