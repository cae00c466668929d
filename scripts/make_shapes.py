"""Write the bundled ``shapes`` benchmark's evaluation shards (specs/shapes/test/*.tar).

Deterministic: the same seed renders the same images (rendering is mill.data.shapes). The demo model is trained
by scripts/train_shapes_clip.py on images rendered from other seeds, never on these.

    python scripts/make_shapes.py            # rewrites specs/shapes/test/
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from mill.data.shapes import SHAPE_CLASSES, write_shapes_shards

REPO = Path(__file__).resolve().parents[1]
#: The evaluation images' seed; training seeds must differ from it.
EVAL_SEED = 0
PER_CLASS = 25
N_SHARDS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "specs" / "shapes", help="dataset root (holds test/)")
    args = parser.parse_args()
    shutil.rmtree(args.out / "test", ignore_errors=True)
    paths = write_shapes_shards(args.out, per_class=PER_CLASS, n_shards=N_SHARDS, seed=EVAL_SEED)
    total = sum(path.stat().st_size for path in paths)
    print(f"wrote {len(SHAPE_CLASSES) * PER_CLASS} samples in {len(paths)} shards ({total / 1e6:.2f} MB) to {args.out}")


if __name__ == "__main__":
    main()
