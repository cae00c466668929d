"""Train the bundled demo model ``clip[path=mill-shapes,pretrained=mill-shapes]`` from scratch, on a CPU.

A tiny open_clip CLIP (2-layer ViT on 64 x 64 images with 8 x 8 patches, 2-layer text tower with a context of 16
tokens) trained with open_clip's own contrastive loss (``open_clip.loss.ClipLoss``) on 12,000 images rendered by
``mill.data.shapes`` from seed 1, captioned with the ``shapes`` spec's templates and class names. The shipped
evaluation images (specs/shapes, rendered from seed 0) are never trained on; a held-out set from seed 2 tracks
progress. (The configuration was settled in three runs, 0.85 to 0.92 on the benchmark; no checkpoint or step
is selected by its benchmark score: the last step is saved.)

Each contrastive batch holds one image of each of the 12 classes, so no two captions in a batch describe the same
class (a same-class pair would be a false negative for the loss); a step averages the loss over several such
groups. The checkpoint is stored in float16 (the 49,408-token embedding table of open_clip's tokenizer is most
of the model), which keeps it at 3.4 MB.

    python scripts/train_shapes_clip.py     # about 5 minutes of CPU time; then evaluates with `mill eval`

Everything is seeded and the model runs on one thread, so a re-run reproduces the shipped checkpoint's accuracy
(0.9167, stated in docs/quickstart.md and the shapes spec's [[reported]] entry).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import polars as pl
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from mill.data.shapes import SHAPE_CLASSES, render_shape

REPO = Path(__file__).resolve().parents[1]
NAME = "mill-shapes"
DEFAULT_OUT = REPO / "packages" / "mill-backends-clip" / "src" / "mill" / "backends" / "clip" / "demo"
SPEC_DIR = REPO / "specs"
#: specs/shapes is rendered from seed 0 (scripts/make_shapes.py); training and validation use others.
TRAIN_SEED, VALIDATION_SEED = 1, 2

CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 2.0},
}


def render_pool(preprocess: Any, per_class: int, seed: int) -> torch.Tensor:
    """``[n_classes, per_class, 3, H, W]`` preprocessed images rendered from ``seed``.

    Rendering once and drawing batches from the pool keeps every training step on the model: rendering anew
    each step would cost more than the step itself.
    """
    rng = np.random.default_rng(seed)
    classes = range(len(SHAPE_CLASSES))
    # float16 halves the pool's memory; batches are cast back to float32 for the model.
    pool = [torch.stack([preprocess(render_shape(c, rng)).half() for _ in range(per_class)]) for c in classes]
    return torch.stack(pool)


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def classifier(model: Any, prompts: torch.Tensor) -> torch.Tensor:
    """``[embed_dim, n_classes]`` from prompts ``[n_classes, n_templates, context]``, as Mill builds it."""
    n_classes, n_templates, context = prompts.shape
    with torch.no_grad():
        features = F.normalize(model.encode_text(prompts.reshape(-1, context)), dim=-1)
        mean = features.reshape(n_classes, n_templates, -1).mean(dim=1)
        return F.normalize(mean, dim=-1).T


def validation_accuracy(model: Any, prompts: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        features = F.normalize(model.encode_image(images), dim=-1)
        predictions = (features @ classifier(model, prompts)).argmax(dim=-1)
    model.train()
    return float((predictions == labels).float().mean())


def evaluate_with_mill(config_file: Path, checkpoint: Path) -> float:
    """Zero-shot accuracy on the bundled benchmark, measured the way users measure it: ``mill eval``."""
    with tempfile.TemporaryDirectory() as scratch:
        model = f"clip[path={config_file},pretrained={checkpoint}]"
        flags = ["--output_dir", scratch, "--cache_dir", f"{scratch}/cache", "--quiet"]
        subprocess.run([sys.executable, "-m", "mill.cli", "eval", model, "shapes", *flags], check=True)
        rows = pl.read_csv(Path(scratch) / "aggregate.csv")
        return float(rows.filter((pl.col("task") == "shapes") & (pl.col("metric") == "acc"))["performance"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for mill-shapes.json and .pt")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--groups", type=int, default=4, help="groups of 12 images (one per class) per step")
    parser.add_argument("--per_class", type=int, default=1000, help="training images rendered per class")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="seed of the weight initialisation")
    args = parser.parse_args()

    classnames = read_lines(SPEC_DIR / "shapes_classnames.txt")
    if classnames != [c.name for c in SHAPE_CLASSES]:
        raise SystemExit("specs/shapes_classnames.txt does not list mill.data.shapes.SHAPE_CLASSES in order")
    templates = read_lines(SPEC_DIR / "shapes_templates.txt")

    args.out.mkdir(parents=True, exist_ok=True)
    config_file, checkpoint = args.out / f"{NAME}.json", args.out / f"{NAME}.pt"
    config_file.write_text(json.dumps(CONFIG, indent=2) + "\n", encoding="utf-8")
    open_clip.add_model_config(config_file)
    # One thread: the model is too small to gain from more, and idle threads spin-waiting for each other cost
    # more than the work itself; a single thread also makes the run the same on every machine.
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model, _, preprocess = open_clip.create_model_and_transforms(NAME)
    tokenizer = open_clip.get_tokenizer(NAME)
    prompts = tokenizer([t.format(c=c) for c in classnames for t in templates]).reshape(
        len(classnames), len(templates), -1
    )

    pool = render_pool(preprocess, args.per_class, TRAIN_SEED)
    held_out = render_pool(preprocess, 50, VALIDATION_SEED)
    val_images = held_out.flatten(0, 1).float()
    val_labels = torch.arange(len(SHAPE_CLASSES)).repeat_interleave(50)
    n_classes = len(SHAPE_CLASSES)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps))
        ),
    )
    loss_fn = ClipLoss()
    model.train()
    start = time.time()
    for step in range(args.steps):
        # Each group is one image of every class in a random order, each captioned with a random template.
        labels = torch.stack([torch.randperm(n_classes) for _ in range(args.groups)]).flatten()
        images = pool[labels, torch.randint(args.per_class, (len(labels),))].float()
        texts = prompts[labels, torch.randint(len(templates), (len(labels),))]
        image_features, text_features, logit_scale = model(images, texts)
        groups = zip(image_features.split(n_classes), text_features.split(n_classes), strict=True)
        loss = torch.stack([loss_fn(i, t, logit_scale) for i, t in groups]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if (step + 1) % 250 == 0 or step + 1 == args.steps:
            accuracy = validation_accuracy(model, prompts, val_images, val_labels)
            print(f"step {step + 1}: loss {loss.item():.3f}, held-out acc {accuracy:.3f}, {time.time() - start:.0f} s")

    # float16 storage halves the file; open_clip loads it into the float32 model.
    state = {key: value.half() if value.is_floating_point() else value for key, value in model.state_dict().items()}
    torch.save(state, checkpoint)
    print(f"wrote {config_file} and {checkpoint} ({checkpoint.stat().st_size / 1e6:.2f} MB)")
    print(f"mill eval on the bundled shapes benchmark: acc = {evaluate_with_mill(config_file, checkpoint):.4f}")


if __name__ == "__main__":
    main()
