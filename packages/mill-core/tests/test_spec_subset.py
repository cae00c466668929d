"""``classes.subset``: a benchmark whose classes are some of a parent list's, and the built-in ImageNet family."""

from __future__ import annotations

from pathlib import Path

import pytest

from mill.core.errors import SpecError
from mill.core.registry import builtin_spec_dir
from mill.core.specfile import load_spec

PARENT = ("cat", "dog", "fish", "bird", "horse")
FAMILY = {
    # name: (samples, classes, hub dataset)
    "imagenet_v2": (10_000, 1000, "clip-benchmark/wds_imagenetv2"),
    "imagenet_sketch": (50_889, 1000, "clip-benchmark/wds_imagenet_sketch"),
    "imagenet_a": (7_500, 200, "clip-benchmark/wds_imagenet-a"),
    "imagenet_r": (30_000, 200, "clip-benchmark/wds_imagenet-r"),
    "imagenet_o": (2_000, 200, "clip-benchmark/wds_imagenet-o"),
    "objectnet": (18_574, 113, "clip-benchmark/wds_objectnet"),
}
#: timm's results file for each member it publishes numbers on.
TIMM_RESULTS = {
    "imagenet_v2": "results-imagenetv2-matched-frequency.csv",
    "imagenet_sketch": "results-sketch.csv",
    "imagenet_a": "results-imagenet-a.csv",
    "imagenet_r": "results-imagenet-r.csv",
}
REPORTED_MODELS = {
    "ViT-B-32/laion2b_s34b_b79k",
    "ViT-B-32/openai",
    "ViT-B-16/laion2b_s34b_b88k",
    "ViT-L-14/laion2b_s32b_b82k",
}


def _spec_file(tmp_path: Path, classes: str, kind: str = "zero_shot") -> Path:
    """A spec ``bench.toml`` in ``tmp_path`` whose ``[classes]`` table is ``classes``."""
    spec = tmp_path / "bench.toml"
    spec.write_text(
        f"""name = "bench"
description = "d"
seed = 1
headline_metric = "acc"
[dataset]
source = "data"
split = "test"
image_member = "webp"
label_member = "cls"
n_samples = 6
[classes]
{classes}
[templates]
list = ["a {{c}}"]
[variants.bench]
kind = "{kind}"
metric = "acc"
"""
    )
    return spec


def _write(tmp_path: Path, subset: str, indices: str = "3\n0\n4\n") -> Path:
    (tmp_path / "parent.txt").write_text("\n".join(PARENT) + "\n")
    (tmp_path / "sub.txt").write_text(indices)
    return _spec_file(tmp_path, f'file = "parent.txt"\ncount = 5\noverrides = {{ 0 = "kitten" }}\nsubset = {subset}')


def test_subset_labels_take_parent_names_in_file_order(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, '{ file = "sub.txt", count = 3, labels = "subset" }'))
    assert spec.classnames == ("bird", "kitten", "horse")  # the parent's overrides apply
    assert spec.parent_indices == (3, 0, 4)
    assert spec.label_map is None


def test_parent_labels_give_a_label_map(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, '{ file = "sub.txt", count = 3, labels = "parent" }'))
    assert spec.label_map == {3: 0, 0: 1, 4: 2}


def test_subset_file_is_part_of_the_content_hash(tmp_path: Path) -> None:
    path = _write(tmp_path, '{ file = "sub.txt", count = 3, labels = "subset" }')
    before = load_spec(path).content_hash
    (tmp_path / "sub.txt").write_text("3\n0\n2\n")
    assert load_spec(path).content_hash != before


@pytest.mark.parametrize(
    ("subset", "indices", "message"),
    [
        ('{ file = "sub.txt", count = 2, labels = "subset" }', "3\n0\n4\n", r"count = 2 but lists 3 indices"),
        ('{ file = "sub.txt", count = 3, labels = "subset" }', "3\n0\n5\n", r"line 3 of sub.txt: .*\[0, 5\), got '5'"),
        ('{ file = "sub.txt", count = 3, labels = "subset" }', "3\n0\n3\n", r"more than once"),
        ('{ file = "sub.txt", count = 3, labels = "all" }', "3\n0\n4\n", r"classes\.subset\.labels: expected one of"),
        ('{ file = "none.txt", count = 3, labels = "subset" }', "", r"classes\.subset\.file: cannot read"),
    ],
)
def test_subset_mistakes_name_the_key(tmp_path: Path, subset: str, indices: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, subset, indices))


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_family_specs_validate(name: str) -> None:
    n_samples, n_classes, hub = FAMILY[name]
    spec = load_spec(builtin_spec_dir() / f"{name}.toml")
    imagenet = load_spec(builtin_spec_dir() / "imagenet.toml")
    assert spec.name == name
    assert spec.dataset.source == f"hf://datasets/{hub}"
    assert (spec.dataset.split, spec.dataset.image_member, spec.dataset.label_member) == ("test", "webp", "cls")
    assert spec.dataset.n_samples == n_samples
    assert len(spec.classnames) == n_classes == len(set(spec.classnames))
    assert spec.templates == imagenet.templates and len(spec.templates) == 80
    assert list(spec.variants) == [name, f"{name}_mcq", f"{name}_classifier"]
    assert spec.variants[f"{name}_classifier"].kind == "classification"
    assert spec.n_outputs == 1000  # an ImageNet-1k classifier's head scores every member of the family
    mcq = spec.variants[f"{name}_mcq"]
    assert getattr(mcq, "n_options", None) == 10
    zero_shot = [r for r in spec.reported if r.variant == name]
    assert {(r.model, r.variant, r.metric) for r in zero_shot} == {(m, name, "acc") for m in REPORTED_MODELS}
    assert all(0 < r.value < 1 and "open_clip/blob/29b90b8" in r.source for r in zero_shot)
    classifiers = [r for r in spec.reported if r.variant == f"{name}_classifier"]
    # timm publishes results on V2, Sketch, A and R only (not O, not ObjectNet).
    assert len(classifiers) == (5 if name in TIMM_RESULTS else 0)
    timm_csv = f"pytorch-image-models/blob/4e5207c7bb6592474ca56e28b2cf85be8f1a550f/results/{TIMM_RESULTS.get(name)}"
    assert all(0 < r.value < 1 and r.source.endswith(timm_csv) for r in classifiers)
    assert len(spec.reported) == len(zero_shot) + len(classifiers)
    if n_classes == 200:
        assert spec.parent_indices is not None and spec.label_map is None
        assert spec.classnames == tuple(imagenet.classnames[i] for i in spec.parent_indices)
        assert list(spec.parent_indices) == sorted(spec.parent_indices)
    elif n_classes == 1000:
        assert spec.classnames == imagenet.classnames


def test_subset_classes_are_scored_by_their_parent_outputs(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, '{ file = "sub.txt", count = 3, labels = "subset" }'))
    assert (spec.parent_count, spec.parent_classes, spec.n_outputs) == (5, ((3,), (0,), (4,)), 5)


def _write_projection(tmp_path: Path, lines: str) -> Path:
    (tmp_path / "names.txt").write_text("pet\nwild\n")
    (tmp_path / "projection.txt").write_text(lines)
    projection = 'projection = { file = "projection.txt", parent_count = 5 }'
    return _spec_file(tmp_path, f'file = "names.txt"\ncount = 2\n{projection}', kind="classification")


def test_projection_gathers_parent_classes_per_class(tmp_path: Path) -> None:
    spec = load_spec(_write_projection(tmp_path, "0 1\n3\n"))
    assert spec.classnames == ("pet", "wild")  # the benchmark's own names, not the parent's
    assert (spec.parent_count, spec.parent_classes, spec.n_outputs) == (5, ((0, 1), (3,)), 5)
    before = spec.content_hash
    (tmp_path / "projection.txt").write_text("0 2\n3\n")
    assert load_spec(tmp_path / "bench.toml").content_hash != before


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("0 1\n", r"classes\.projection\.file: projection\.txt has 1 lines, expected one per class \(2\)"),
        ("0 1\n3 5\n", r"line 2 of projection\.txt: expected parent class indices in \[0, 5\)"),
        ("0 1\n1\n", r"maps parent class 1 to lines 1 and 2"),
    ],
)
def test_projection_mistakes_name_the_key(tmp_path: Path, lines: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(_write_projection(tmp_path, lines))


def test_objectnet_projection_maps_imagenet_classes_to_its_own() -> None:
    spec = load_spec(builtin_spec_dir() / "objectnet.toml")
    assert spec.parent_count == 1000 and spec.parent_classes is not None
    assert len(spec.parent_classes) == 113 and all(spec.parent_classes)
    flat = [index for indices in spec.parent_classes for index in indices]
    assert len(flat) == len(set(flat)) == 125
    imagenet = load_spec(builtin_spec_dir() / "imagenet.toml")
    # ObjectNet's "banana" gathers ImageNet's "banana" (index 954), and its "backpack" the "backpack" (414).
    assert [imagenet.classnames[i] for i in spec.parent_classes[spec.classnames.index("banana")]] == ["banana"]
    assert [imagenet.classnames[i] for i in spec.parent_classes[spec.classnames.index("backpack")]] == ["backpack"]
