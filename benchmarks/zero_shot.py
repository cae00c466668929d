"""Zero-shot throughput: Mill against the LAION reference (clip_benchmark), one model, the same shards.

Prints, for one run on this machine:
  1. end to end (classifier included): Mill vs clip_benchmark's ``zero_shot_classifier`` + ``run_classification``
     over its usual webdataset DataLoader, each at its default precision, and both in fp32;
  2. classifier build: Mill (all prompts in large batches, padding not encoded) vs clip_benchmark's per-class loop;
  3. Mill re-run with a warm classifier cache: the share of its time spent on text;
  4. Mill end to end vs the model's forward pass alone on pre-decoded tensors (the data path's cost).

Default size fits a 2-core CPU in a few minutes: the ViT-B-32 architecture with random weights (no download)
and 96 real photos, classified among 64 classes with 16 templates. On a GPU machine, for example:
  python benchmarks/zero_shot.py --device cuda --n_images 1000 --n_classes 1000 --n_templates 80
Timings exclude model construction (both tools get the same model object).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
from sample_shards import DEFAULT_SAMPLE_DIR, DEFAULT_WORK_DIR, photo_shards

from mill.backends.clip import ClipArgs
from mill.backends.clip.backend import ClipBackend
from mill.core.backend import DEFAULT_BATCH_SIZE, MAX_DEFAULT_WORKERS, RunContext
from mill.core.kinds.zero_shot import ZeroShotTask
from mill.core.progress import SilentProgress
from mill.core.sample import ReadOptions
from mill.data import ShardDataset, open_dataset, synthetic_dataset_spec

#: clip_benchmark's command-line defaults.
REFERENCE_BATCH_SIZE = 64
REFERENCE_WORKERS = 4


def main() -> None:
    args = _parse()
    device_type = args.device.split(":")[0]
    root = (
        Path(args.data_dir)
        if args.data_dir
        else photo_shards(Path(args.sample_dir), Path(args.work_dir), args.n_images)
    )
    scratch = Path(tempfile.mkdtemp(prefix="mill-bench-"))
    data = _open(root, scratch)
    key_index = {key: i for i, key in enumerate(sorted(data.keys))}
    # Fewer classes than ImageNet's 1000 keep a CPU run short (clip_benchmark's loop costs seconds per class
    # there); predictions are then among these classes, which is all a speed comparison needs.
    classnames = list(IMAGENET_CLASSNAMES[: args.n_classes])
    templates = [t("{c}") for t in OPENAI_IMAGENET_TEMPLATES][: args.n_templates]
    task = ZeroShotTask("bench", "default", tuple(classnames), tuple(templates))
    workers = args.num_workers if args.num_workers is not None else min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)
    mill_batch = args.batch_size or DEFAULT_BATCH_SIZE.get(device_type, 64)
    ref_batch = args.batch_size or REFERENCE_BATCH_SIZE
    ref_workers = args.num_workers if args.num_workers is not None else REFERENCE_WORKERS
    print(
        f"machine: {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if device_type == "cuda" else "")
    )
    print(
        f"model: {args.model} ({args.pretrained or 'random weights'}); {len(data)} images from {root}; "
        f"{len(classnames)} classes x {len(templates)} templates = {len(classnames) * len(templates)} prompts"
    )
    print(f"Mill: batch {mill_batch}, {workers} workers; clip_benchmark: batch {ref_batch}, {ref_workers} workers\n")

    backends = {p: _load(args, p, mill_batch, workers, scratch / f"cache-{p}") for p in ("amp_bf16", "fp32")}
    model, preprocess, tokenizer = (
        backends["fp32"].model,
        backends["fp32"].preprocess,
        backends["fp32"].loaded.tokenizer,
    )
    _warm_up(backends["amp_bf16"], data, task)

    figures: dict[str, float] = {}
    top1: dict[str, torch.Tensor] = {}
    for precision, amp in (("amp_bf16", True), ("fp32", False)):
        label = "default precision" if amp else "fp32"
        ref_total, ref_text, top1[f"ref-{precision}"] = _reference(
            model,
            preprocess,
            tokenizer,
            root,
            classnames,
            templates,
            key_index,
            args.device,
            amp,
            ref_batch,
            ref_workers,
        )
        mill_total, mill_text, top1[f"mill-{precision}"] = _mill(backends[precision], data, task)
        figures[f"{precision} mill"] = mill_total
        figures[f"{precision} mill text"] = mill_text
        print(
            f"end to end, {label}: Mill {_rate(len(data), mill_total)}, clip_benchmark "
            f"{_rate(len(data), ref_total)} -> {ref_total / mill_total:.2f}x"
        )
        print(
            f"classifier build, {label}: Mill {mill_text:.1f} s, clip_benchmark loop {ref_text:.1f} s "
            f"-> {ref_text / mill_text:.2f}x"
        )
    agree = (top1["mill-fp32"] == top1["ref-fp32"]).float().mean().item()
    print(f"fp32 top-1 agreement, Mill vs clip_benchmark: {agree:.1%} of {len(data)} images")

    warm_total, warm_text, _ = _mill(backends["amp_bf16"], data, task)
    print(
        f"warm classifier cache: {_rate(len(data), warm_total)}, text (cache load) {warm_text * 1000:.1f} ms "
        f"= {warm_text / warm_total:.3%} of the run"
    )

    images = torch.cat(
        [b.images for b in data.batches(batch_size=mill_batch, transform=backends["amp_bf16"].preprocess)]
    )
    classifier = backends["amp_bf16"].classifier_for(task)
    forward = _forward_only(backends["amp_bf16"], images, classifier, mill_batch)
    images_only = warm_total - warm_text
    print(
        f"forward only (pre-decoded tensors, default precision): {_rate(len(data), forward)}; Mill end to end "
        f"(warm cache) reaches {forward / images_only:.2f}x of it"
    )
    if args.compile:
        compiled = _load(args, "amp_bf16", mill_batch, workers, scratch / "cache-amp_bf16", compile_model=True)
        start = time.perf_counter()
        _forward_only(compiled, images[:mill_batch], classifier, mill_batch)
        print(f"compile=true: first batch (compilation) {time.perf_counter() - start:.1f} s")
        print(f"compile=true forward only: {_rate(len(data), _forward_only(compiled, images, classifier, mill_batch))}")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture")
    parser.add_argument("--pretrained", default=None, help="open_clip tag or checkpoint (default: random weights)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=None, help="both tools (default: each tool's own)")
    parser.add_argument("--num_workers", type=int, default=None, help="both tools (default: each tool's own)")
    parser.add_argument("--n_images", type=int, default=96, help="photos converted from --sample_dir (max 1000)")
    parser.add_argument("--n_templates", type=int, default=16, help="the first N of the 80 OpenAI templates")
    parser.add_argument("--n_classes", type=int, default=64, help="the first N ImageNet classes (1000: all)")
    parser.add_argument("--data_dir", default=None, help="existing shards (DIR/test/*.tar) instead of the photos")
    parser.add_argument("--sample_dir", default=str(DEFAULT_SAMPLE_DIR))
    parser.add_argument("--work_dir", default=str(DEFAULT_WORK_DIR), help="where converted shards are cached")
    parser.add_argument("--compile", action="store_true", help="also time compile=true (slow to compile on a CPU)")
    return parser.parse_args()


def _open(root: Path, cache: Path) -> ShardDataset:
    return open_dataset(
        synthetic_dataset_spec(root, n_samples=0),
        n_classes=1000,
        options=ReadOptions(allow_incomplete=True, cache_dir=cache),
    )


def _load(
    args: argparse.Namespace, precision: str, batch: int, workers: int, cache: Path, compile_model: bool = False
) -> ClipBackend:
    spec = {
        "path": args.model,
        "pretrained": args.pretrained,
        "precision": precision,
        "device": args.device,
        "batch_size": batch,
        "num_workers": workers,
        "compile": compile_model,
    }
    context = RunContext(cache_dir=cache, progress=SilentProgress())
    return ClipBackend.load(ClipArgs.from_mapping({k: v for k, v in spec.items() if v is not None}), context)


def _mill(backend: ClipBackend, data: ShardDataset, task: ZeroShotTask) -> tuple[float, float, torch.Tensor]:
    """Seconds end to end, seconds spent getting the classifier, top-1 per sample (in key order)."""
    spent: list[float] = []
    classifier_for = backend.classifier_for

    def timed(t: ZeroShotTask) -> torch.Tensor:
        start = time.perf_counter()
        classifier = classifier_for(t)
        _sync(backend.device.type)
        spent.append(time.perf_counter() - start)
        return classifier

    backend.classifier_for = timed  # type: ignore[method-assign]
    start = time.perf_counter()
    results = list(backend.run_zero_shot(task, data))
    total = time.perf_counter() - start
    del backend.classifier_for
    by_key = dict(zip((k for r in results for k in r.keys), (t[0] for r in results for t in r.topk), strict=True))
    return total, spent[0], torch.tensor([by_key[k] for k in sorted(by_key)])


def _reference(
    model: Any,
    preprocess: Callable[..., Any],
    tokenizer: Any,
    root: Path,
    classnames: list[str],
    templates: list[str],
    key_index: dict[str, int],
    device: str,
    amp: bool,
    batch: int,
    workers: int,
) -> tuple[float, float, torch.Tensor]:
    """clip_benchmark's zero-shot classification as its CLI runs it on a webdataset export.

    Returns seconds end to end, seconds building the classifier, and top-1 per sample in key order.
    """
    # Imported here: device_check.py imports this module where clip_benchmark may need another numpy.
    from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier

    start = time.perf_counter()
    classifier = zero_shot_classifier(model, tokenizer, classnames, templates, device, amp=amp)
    _sync(device)
    text = time.perf_counter() - start
    nshards = int((root / "test" / "nshards.txt").read_text())
    # clip_benchmark's build_wds_dataset pipeline, with two changes that cost nothing: "0.webp" is accepted
    # (the real export's image member; clip_benchmark's own exports say "webp"), and the target is the
    # sample's position in key order rather than its class, so predictions can be compared with Mill's
    # whatever order the loader's workers deliver them in.
    dataset = (
        wds.WebDataset(
            str(root / "test" / f"{{0..{nshards - 1}}}.tar"), nodesplitter=lambda src: src, shardshuffle=False
        )
        .decode(wds.autodecode.ImageHandler("pil", extensions=["webp", "png", "jpg", "jpeg"]))
        .to_tuple(["0.webp", "webp", "png", "jpg", "jpeg"], "__key__")
        .map_tuple(preprocess, key_index.__getitem__)
    )
    loader = torch.utils.data.DataLoader(dataset.batched(batch), batch_size=None, shuffle=False, num_workers=workers)
    logits, positions = run_classification(model, classifier, loader, device, amp=amp)
    total = time.perf_counter() - start
    top1 = torch.empty(len(key_index), dtype=torch.long)
    top1[positions] = logits.argmax(dim=-1)
    return total, text, top1


def _forward_only(backend: ClipBackend, images: torch.Tensor, classifier: torch.Tensor, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        backend.logits_for(images[i : i + batch], classifier).argmax(dim=-1).cpu()
    _sync(backend.device.type)
    return time.perf_counter() - start


def _warm_up(backend: ClipBackend, data: ShardDataset, task: ZeroShotTask) -> None:
    """One batch through both towers, so one-time costs (allocator, kernels, autotuning) are not timed."""
    batch = next(iter(data.batches(batch_size=8, transform=backend.preprocess)))
    with torch.inference_mode():
        backend.logits_for(batch.images, torch.zeros(backend.model.text_projection.shape[-1], 2, device=backend.device))
        backend.model.encode_text(backend.loaded.tokenizer(list(task.templates[:2])).to(backend.device))
    _sync(backend.device.type)


def _sync(device_type: str) -> None:
    if device_type == "cuda":
        torch.cuda.synchronize()


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:.1f} img/s ({seconds:.1f} s)"


if __name__ == "__main__":
    main()
