"""The ImageNet family end to end: each spec on shards in its export's layout, the robustness suite, its mean,
and ImageNet-A/R's class subsets against clip_benchmark's own dataset builder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import polars as pl
import pytest
from clip_benchmark.datasets.builder import all_imagenet_wordnet_ids, build_dataset
from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier
from clip_benchmark.models.open_clip import load_open_clip
from PIL import Image
from torch.utils.data import DataLoader

from mill.backends.clip.tiny import TinyModel
from mill.core.registry import SpecRegistry, builtin_spec_dir
from mill.core.results import read_aggregate
from mill.data import write_synthetic_shards
from mill.data.synthetic import synthetic_image, write_image_shards

FAMILY = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r", "imagenet_o", "objectnet")
ROBUSTNESS = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r", "objectnet")
LIMIT = 8
Mill = Callable[..., Any]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def family_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with one folder per benchmark: clip_benchmark's export layout (``<key>.webp``,
    ``<key>.cls``, ``test/nshards.txt``), labels 0..5, valid for every spec's class count."""
    root = tmp_path_factory.mktemp("family")
    for name in FAMILY:
        write_synthetic_shards(root / name, n_classes=6, per_class=2, n_shards=2, layout="clip_benchmark")
    return root


def _eval(mill: Mill, model: str, benchmark: str, out: Path, cache: Path) -> Any:
    return mill(
        "eval", model, benchmark, "--output_dir", str(out), "--cache_dir", str(cache), "--limit", str(LIMIT), "--quiet"
    )


def test_robustness_suite_runs_its_members_and_collect_shows_the_mean(
    mill_in_process: Mill,
    clip_model: str,
    family_data: Path,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MILL_DATA_DIR", str(family_data))
    out = tmp_path / "results"
    done = _eval(mill_in_process, clip_model, "imagenet_robustness", out, cache_dir)
    assert done.code == 0, done.err
    rows = read_aggregate(out)
    assert set(rows.get_column("benchmark").to_list()) == set(ROBUSTNESS)
    rollup = rows.filter(rows.get_column("task") == rows.get_column("benchmark"))
    assert rollup.filter(rollup.get_column("metric") == "acc").height == len(ROBUSTNESS)
    assert set(rows.get_column("limit").to_list()) == {LIMIT}
    before = (out / "aggregate.csv").read_bytes()

    shown = mill_in_process("collect", "--output_dir", str(out), "--all", "--format", "json")
    assert shown.code == 0, shown.err
    assert "imagenet_robustness (suite)" in shown.out
    accs = rows.filter((rows.get_column("metric") == "acc") & (rows.get_column("task") == rows.get_column("benchmark")))
    mean = sum(accs.get_column("performance").to_list()) / len(ROBUSTNESS)
    assert f'"mean (unweighted)": {float(f"{mean:.4f}")}' in shown.out
    assert (out / "aggregate.csv").read_bytes() == before  # the mean is never stored

    # ImageNet-O is in the family suite, not in the robustness one: the family's mean waits for it.
    family = mill_in_process(
        "collect", "--output_dir", str(out), "--all", "--benchmarks", "imagenet_family", "--format", "csv"
    )
    assert family.code == 0, family.err
    assert "— (5 of 7)" in family.out


def test_imagenet_o_end_to_end(
    mill_in_process: Mill, clip_model: str, family_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    done = mill_in_process(
        "eval", clip_model, "imagenet_o", "--data_dir", str(family_data / "imagenet_o"), "--output_dir", str(out),
        "--cache_dir", str(cache_dir), "--limit", str(LIMIT), "--quiet",
    )  # fmt: skip
    assert done.code == 0, done.err
    rows = read_aggregate(out)
    assert set(rows.get_column("task").to_list()) == {"imagenet_o"}
    assert set(rows.get_column("n_samples").to_list()) == {LIMIT}


def test_subset_files_are_what_the_script_derives_from_clip_benchmark(script: Callable[[str], Any]) -> None:
    derive = script("derive_imagenet_family")
    datasets_dir = derive.clip_benchmark_datasets_dir()  # type: ignore[attr-defined]
    derive.check_names_and_templates(datasets_dir)  # type: ignore[attr-defined]
    for file, indices in derive.subset_indices(datasets_dir).items():  # type: ignore[attr-defined]
        assert (builtin_spec_dir() / file).read_text() == "".join(f"{i}\n" for i in indices)
        assert len(indices) == 200


def _check_export(script: Callable[[str], Any], *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = script("check_export").main(list(argv))
    return code, capsys.readouterr().out


def test_check_export_confirms_a_matching_export_and_reports_mismatches(
    script: Callable[[str], Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "export"
    write_synthetic_shards(export, n_classes=6, per_class=2, n_shards=2, layout="clip_benchmark")
    names = ["a", "b", "c", "d", "e", "f"]
    (export / "classnames.txt").write_text("\n".join(names) + "\n")
    spec = tmp_path / "six.toml"
    spec.write_text(
        'name = "six"\ndescription = "d"\nseed = 1\nheadline_metric = "acc"\n[dataset]\nsource = "x"\n'
        'split = "test"\nimage_member = "webp"\nlabel_member = "cls"\nn_samples = 12\n'
        f"[classes]\ncount = 6\nnames = {names!r}\n".replace("'", '"')
        + '[templates]\nlist = ["a {c}"]\n[variants.six]\nkind = "zero_shot"\nmetric = "acc"\n'
    )
    code, out = _check_export(script, str(spec), str(export), capsys=capsys)
    assert code == 0, out
    assert "six: OK" in out

    # The real ImageNet-A spec: 12 samples of 6 classes are not its 7,500 of 200, and the names differ.
    code, out = _check_export(script, "imagenet_a", str(export), capsys=capsys)
    assert code == 1
    assert "MISMATCH: 12 samples, the spec expects 7500" in out
    assert "MISMATCH: 194 classes have no sample" in out
    assert "MISMATCH: classnames.txt lists 6 classes, the spec 200" in out


@pytest.fixture(scope="module")
def reference_model(tiny_clip: TinyModel) -> tuple[Any, Any, Any]:
    """The tiny model, transform and tokenizer as clip_benchmark's CLI builds them."""
    open_clip.add_model_config(tiny_clip.config_path)
    model, transform, tokenizer = load_open_clip(tiny_clip.name, str(tiny_clip.checkpoint_path), device="cpu")
    model.eval()
    return model, transform, tokenizer


def _image_folder(root: Path, wnids: list[str]) -> Path:
    """One image per class in the layout of the ImageNet-A/R archives that clip_benchmark reads: ``<wnid>/*.png``."""
    rng = np.random.default_rng(0)
    for label, wnid in enumerate(wnids):
        (root / wnid).mkdir(parents=True)
        synthetic_image(label, n_classes=len(wnids), size=64, rng=rng).save(root / wnid / f"{wnid}_0.png")
    return root


@pytest.mark.parametrize(("benchmark", "reference_name"), [("imagenet_a", "imagenet-a"), ("imagenet_r", "imagenet-r")])
def test_class_subset_matches_clip_benchmarks_builder(
    benchmark: str,
    reference_name: str,
    reference_model: tuple[Any, Any, Any],
    mill_in_process: Mill,
    clip_model: str,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    """clip_benchmark's ``build_dataset`` on an image folder of every class of the subset, and ``mill eval`` on the
    same images as shards in the export's layout: the same tiny model predicts the same class for every sample.

    The folders are named by Mill's subset (its parent indices as ImageNet wnids); clip_benchmark names the classes
    from its own wnid list, so a wrong or misordered index in Mill's subset file shows as differing names."""
    spec = SpecRegistry.discover().specs[benchmark]
    assert spec.parent_indices is not None
    folder = _image_folder(tmp_path / "folder", [all_imagenet_wordnet_ids[i] for i in spec.parent_indices])
    model, transform, tokenizer = reference_model
    reference = build_dataset(reference_name, root=str(folder), transform=transform, download=False)
    assert len(reference.classes) == len(spec.classnames) == 200
    classifier = zero_shot_classifier(model, tokenizer, reference.classes, reference.templates, "cpu", amp=False)
    logits, targets = run_classification(model, classifier, DataLoader(reference, batch_size=64), "cpu", amp=False)
    predictions = logits.argmax(dim=-1).tolist()
    # Equality says little if the random model predicts one class for everything.
    assert len(set(predictions)) >= 5

    # The export holds ImageFolder's labels (clip_benchmark's webdataset_builder writes the dataset it built), as
    # the spec reads them: subset positions, or parent indices where the spec says labels = "parent".
    labels = targets.tolist() if spec.label_map is None else [spec.parent_indices[t] for t in targets.tolist()]
    export = tmp_path / "export"
    samples = [
        (label, Image.open(path).convert("RGB")) for label, (path, _) in zip(labels, reference.samples, strict=True)
    ]
    write_image_shards(export, samples, n_samples=len(samples), n_shards=2, layout="clip_benchmark")

    out = tmp_path / "results"
    done = mill_in_process(
        "eval", clip_model, benchmark, "--data_dir", str(export), "--output_dir", str(out),
        "--cache_dir", str(cache_dir), "--allow_incomplete", "--quiet",
    )  # fmt: skip
    assert done.code == 0, done.err
    (output_file,) = read_aggregate(out).get_column("output_file").unique().to_list()
    frame = pl.read_parquet(out / output_file).sort("key")
    # The export's keys are s0000000, s0000001, ... in the reference dataset's order.
    assert frame.get_column("key").to_list() == [f"s{i:07d}" for i in range(len(reference))]
    assert frame.get_column("prediction").to_list() == predictions
    assert frame.get_column("gold").to_list() == targets.tolist()
    assert frame.get_column("gold_label").to_list() == [reference.classes[t] for t in targets.tolist()]
    assert frame.get_column("prediction_label").to_list() == [reference.classes[p] for p in predictions]
