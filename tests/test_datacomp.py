"""DataComp's classification datasets: the derived specs are what the script derives from the pinned clip_benchmark
package, and a spec scored by DataComp's main metric (mean per-class recall for Oxford-IIIT Pet) gives, sample by
sample, clip_benchmark's predictions on shards in the layout of DataComp's webdataset exports."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import polars as pl
import pytest
import torch
import wilds.common.metrics.metric as wilds_metric
import wilds.common.utils
from clip_benchmark.datasets.builder import build_dataset
from clip_benchmark.metrics.zeroshot_classification import accuracy, run_classification, zero_shot_classifier
from clip_benchmark.models.open_clip import load_open_clip
from wilds.common.grouper import CombinatorialGrouper
from wilds.common.metrics.all_metrics import F1, Accuracy
from wilds.datasets.wilds_dataset import WILDSDataset

from mill.backends.clip.tiny import TinyModel
from mill.cli.report.runs import gather_runs
from mill.core.chunks import RUNS_DIR
from mill.core.registry import SpecRegistry, builtin_spec_dir
from mill.core.results import read_aggregate
from mill.data.synthetic import synthetic_image, write_export_files, write_image_shards, write_metadata_shards

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = 2
#: Where a spec's open_clip figures start: scripts/derive_openclip_reported.py writes them, after what the spec
#: script derives (tests/test_openclip_reported.py).
REPORTED_BLOCK = "\n# open_clip's published figures"


def test_specs_are_what_the_script_derives_from_clip_benchmark(script: Callable[[str], Any]) -> None:
    derive = script("derive_datacomp_specs")
    derived = derive.derived_specs()
    tasks = (*derive.TASKS, *derive.EXPORT_NAMED, *(task[:6] for task in derive.WITH_METADATA))
    assert len(derived) == len(tasks) + len(derive.IMAGENET_FAMILY) == 35
    for file, text in derived.items():
        assert (builtin_spec_dir() / file).read_text(encoding="utf-8").split(REPORTED_BLOCK)[0] == text, file
    specs = SpecRegistry.discover(env={}).specs
    for key, _, name, size, n_classes, metric in tasks:
        spec = specs[name]
        classes = spec.export.classes.count if spec.export and spec.export.classes else len(spec.classnames)
        assert (spec.dataset.n_samples, classes) == (size, n_classes)
        assert (
            spec.dataset.source == f"hf://datasets/djghosh/wds_{key.removeprefix('fairness/').replace('/', '-')}_test"
        )
        assert spec.headline_metric == derive.METRICS[metric]
    for key, _, name, size, n_classes, _ in derive.IMAGENET_FAMILY:
        spec = specs[name]
        assert (spec.dataset.n_samples, len(spec.classnames)) == (size, n_classes)
        assert spec.dataset.source == f"hf://datasets/djghosh/wds_{key}_test"


def _reference(export: Path, tiny_clip: TinyModel, task: str = "vtab/pets") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets as DataComp's eval_utils/wds_eval.py computes them for its ``task``: clip_benchmark's
    wds loader (class names and templates from the export's files), classifier and classification, in float32."""
    open_clip.add_model_config(tiny_clip.config_path)
    model, transform, tokenizer = load_open_clip(tiny_clip.name, str(tiny_clip.checkpoint_path), device="cpu")
    model.eval()
    dataset = build_dataset(f"wds/{task}", root=str(export), transform=transform, split="test", download=False)
    loader = torch.utils.data.DataLoader(dataset.batched(16), batch_size=None, shuffle=False, num_workers=0)
    classifier = zero_shot_classifier(model, tokenizer, dataset.classes, dataset.templates, "cpu", amp=False)
    logits, target = run_classification(model, classifier, loader, "cpu", amp=False)
    return logits, target


def _export(root: Path, labels: list[int]) -> Path:
    """Oxford-IIIT Pet shards in the export's layout, with the export's classnames.txt and templates file."""
    spec = SpecRegistry.discover(env={}).specs["pets"]
    rng = np.random.default_rng(3)
    n = len(spec.classnames)
    images = [synthetic_image(i % n, n_classes=n, size=64, rng=rng) for i in range(len(labels))]
    write_image_shards(
        root, zip(labels, images, strict=True), n_samples=len(labels), n_shards=2, layout="clip_benchmark"
    )
    write_export_files(root, spec.classnames, spec.templates)
    return root


def test_pets_per_sample_and_mean_per_class_recall_equal_clip_benchmarks(
    tiny_clip: TinyModel, clip_model: str, mill_in_process: Any, cache_dir: Path, tmp_path: Path
) -> None:
    # A random model's top-1 is near zero on any labels; so that the metrics say something, the labels are
    # chosen from its own first predictions: right on two samples in three, over classes of unequal size.
    n_samples = 37 * PER_CLASS
    first, _ = _reference(_export(tmp_path / "first", [0] * n_samples), tiny_clip)
    guessed = first.argmax(dim=1).tolist()
    labels = [p if i % 3 else (p + 1) % 37 for i, p in enumerate(guessed)]
    export = _export(tmp_path / "wds_vtab-pets_test", labels)

    logits, target = _reference(export, tiny_clip)
    predictions = logits.argmax(dim=1).numpy()
    golds = target.numpy()
    assert golds.tolist() == labels
    assert len(set(predictions.tolist())) >= 5  # equality says little if one class is predicted for all

    out = tmp_path / "results"
    done = mill_in_process(
        "eval", clip_model, "pets", "--data_dir", str(export), "--output_dir", str(out),
        "--cache_dir", str(cache_dir), "--allow_incomplete", "--quiet",
    )  # fmt: skip
    assert done.code == 0, done.err
    rows = read_aggregate(out)
    (output_file,) = rows.get_column("output_file").unique().to_list()
    frame = pl.read_parquet(out / output_file)
    assert frame.get_column("gold").to_list() == golds.tolist()
    assert frame.get_column("prediction").to_list() == predictions.tolist()

    values = dict(zip(rows.get_column("metric").to_list(), rows.get_column("performance").to_list(), strict=True))
    (acc1, acc5) = accuracy(logits, target, topk=(1, 5))
    assert values["acc"] == pytest.approx(acc1) and values["acc5"] == pytest.approx(acc5)
    # sklearn's balanced_accuracy_score, which DataComp calls: the mean over classes present of their recall.
    recalls = [np.mean(predictions[golds == c] == c) for c in np.unique(golds)]
    assert values["mean_per_class_recall"] == pytest.approx(float(np.mean(recalls)))
    assert values["mean_per_class_recall"] != pytest.approx(values["acc"])  # the two are told apart
    headline = rows.filter(pl.col("task") == "pets").get_column("metric").to_list()
    assert headline[0] == "mean_per_class_recall"


def test_mill_ls_lists_the_datacomp_and_retrieval_specs(script: Callable[[str], Any], mill_in_process: Any) -> None:
    done = mill_in_process("ls")
    assert done.code == 0, done.err
    rows = {line.split("│")[1].strip(): line for line in done.out.splitlines() if line.count("│") > 3}
    derive = script("derive_datacomp_specs")
    for task in (*derive.TASKS, *derive.EXPORT_NAMED, *derive.WITH_METADATA, *derive.IMAGENET_FAMILY):
        assert "zero_shot" in rows[task[2]], task[2]
    for name in ("flickr30k", "mscoco"):
        assert "retrieval" in rows[name] and "mean_recall@1" in rows[name], name
    assert "mean_per_class_recall" in rows["pets"]
    assert "macro_f1" in rows["iwildcam"] and "worst_group_acc5" in rows["dollar_street"]
    assert set(SpecRegistry.discover(env={}).specs) <= set(rows)  # every spec, the 37 of DataComp among them


# --- Class names read from the export, worst-group and F1 metrics (DataComp's WILDS and fairness sets) --------

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _labelled_by_the_model(
    root: Path, tiny_clip: TinyModel, task: str, n_classes: int, n_samples: int, rows: list[tuple[int, ...]] | None
) -> list[int]:
    """Labels for ``n_samples`` synthetic images that the model gets right two times in three: its own first
    predictions on a copy of the export (a random model's top-1 is near zero on any fixed labels)."""
    _write(root / "probe", [0] * n_samples, n_classes, rows)
    first, _ = _reference(root / "probe", tiny_clip, task)
    return [p if i % 3 else (p + 1) % n_classes for i, p in enumerate(first.argmax(dim=1).tolist())]


def _write(root: Path, labels: list[int], n_classes: int, rows: list[tuple[int, ...]] | None) -> Path:
    """An export: shards (with each sample's metadata row when ``rows`` is given), classnames.txt, templates."""
    rng = np.random.default_rng(5)
    images = [synthetic_image(i % n_classes, n_classes=n_classes, size=64, rng=rng) for i in range(len(labels))]
    if rows is None:
        samples = zip(labels, images, strict=True)
        write_image_shards(root, samples, n_samples=len(labels), n_shards=2, layout="clip_benchmark")
    else:
        write_metadata_shards(root, zip(labels, images, rows, strict=True), n_samples=len(labels), n_shards=2)
    names = CIFAR10 if n_classes == 10 else [f"class number {i}" for i in range(n_classes)]
    write_export_files(root, names, ["a photo of a {c}.", "a blurry photo of the {c}."])
    return root


def _mill(mill_in_process: Any, clip_model: str, benchmark: str, export: Path, out: Path, cache_dir: Path) -> Any:
    done = mill_in_process(
        "eval", clip_model, benchmark, "--data_dir", str(export), "--output_dir", str(out),
        "--cache_dir", str(cache_dir), "--allow_incomplete", "--quiet",
    )  # fmt: skip
    assert done.code == 0, done.err
    rows = read_aggregate(out)
    (output_file,) = rows.get_column("output_file").unique().to_list()
    values = dict(zip(rows.get_column("metric").to_list(), rows.get_column("performance").to_list(), strict=True))
    manifest = json.loads((out / output_file).with_suffix(".json").read_text())
    return pl.read_parquet(out / output_file), values, manifest


def test_class_names_read_from_the_export_give_clip_benchmarks_predictions_and_join_the_identity(
    tiny_clip: TinyModel, clip_model: str, mill_in_process: Any, cache_dir: Path, tmp_path: Path
) -> None:
    # CIFAR-10: clip_benchmark ships its templates, not its class names; the spec reads the export's classnames.txt.
    spec = SpecRegistry.discover(env={}).specs["cifar10"]
    assert spec.classnames == () and spec.export is not None and spec.export.names == ("classnames.txt",)
    labels = _labelled_by_the_model(tmp_path, tiny_clip, "cifar10", 10, 40, None)
    export = _write(tmp_path / "wds_cifar10_test", labels, 10, None)
    # The export's templates file holds the package's templates (clip_benchmark's wds loader reads the file).
    write_export_files(export, CIFAR10, spec.templates)
    logits, target = _reference(export, tiny_clip, "cifar10")
    assert len(set(logits.argmax(dim=1).tolist())) >= 4

    frame, values, manifest = _mill(mill_in_process, clip_model, "cifar10", export, tmp_path / "out", cache_dir)
    assert frame.get_column("gold").to_list() == target.tolist() == labels
    assert frame.get_column("prediction").to_list() == logits.argmax(dim=1).tolist()
    assert frame.get_column("prediction_label").to_list() == [CIFAR10[i] for i in logits.argmax(dim=1).tolist()]
    (acc1, acc5) = accuracy(logits, target, topk=(1, 5))
    assert values["acc"] == pytest.approx(acc1) and values["acc5"] == pytest.approx(acc5)

    # A changed classnames.txt is another run (its hash is in the identity), not a resumed one.
    renamed = [*CIFAR10[:3], "kitten", *CIFAR10[4:]]
    write_export_files(export, renamed, spec.templates)
    again, _, manifest_again = _mill(mill_in_process, clip_model, "cifar10", export, tmp_path / "out", cache_dir)
    assert manifest_again["spec_hash"] != manifest["spec_hash"]
    assert len(list((tmp_path / "out" / RUNS_DIR).iterdir())) == 2
    assert "kitten" in again.get_column("gold_label").to_list()
    # The report names the classes as the runs' own files do (the spec itself holds none).
    (run,) = gather_runs(tmp_path / "out")
    assert run.classnames[3] == "kitten" and len(run.classnames) == 10
    page = tmp_path / "report.html"
    report = mill_in_process("report", "--output_dir", str(tmp_path / "out"), "--out", str(page))
    assert report.code == 0, report.err
    text = page.read_text()
    assert all(name in text for name in set(again.get_column("gold_label").to_list()))


def _patched_wilds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The WILDS package's group averages without torch_scatter, as DataComp's wilds_eval.py replaces them."""

    def group_means(values: torch.Tensor, groups: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
        counts = wilds.common.utils.get_counts(groups, n_groups)
        sums = torch.zeros(n_groups, dtype=torch.float).scatter_add_(0, groups, values.float())
        return sums / counts, counts

    monkeypatch.setattr(wilds_metric, "avg_over_groups", group_means)


class _Evaluated(WILDSDataset):  # type: ignore[misc]
    """What DataComp's evaluators are: a WILDS dataset holding only the samples' metadata rows and field names
    (no metadata map, so a group is named by its number)."""

    def __init__(self, metadata: torch.Tensor, fields: list[str]) -> None:
        self._metadata_array = metadata
        self._metadata_fields = fields


class _TopKAccuracy(Accuracy):  # type: ignore[misc]
    """Accuracy of top-k predictions (a row per sample), as DataComp scores Dollar Street."""

    def _compute_element_wise(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return (y_pred == y_true.unsqueeze(-1)).any(-1).float()


def _datacomp_worst_group(
    benchmark: str, logits: torch.Tensor, target: torch.Tensor, metadata: torch.Tensor, fields: list[str]
) -> float:
    """DataComp's main metric of ``benchmark`` computed with the WILDS package as its evaluator does."""
    dataset = _Evaluated(metadata, fields)
    if benchmark == "fmow":
        # FMoWEvaluator: accuracy per region; the minimum over the regions that have samples, "Other" aside
        # (a group is named "region:N" here, so no group is set aside).
        grouper = CombinatorialGrouper(dataset=dataset, groupby_fields=["region"])
        metric = Accuracy()
        per_group = metric.compute_group_wise(
            logits.argmax(dim=1), target, grouper.metadata_to_group(metadata), grouper.n_groups
        )
        kept = [
            per_group[metric.group_metric_field(g)]
            for g in range(grouper.n_groups)
            if per_group[metric.group_count_field(g)] > 0 and "Other" not in grouper.group_field_str(g)
        ]
        return float(metric.worst(kept))
    field, metric = {"dollar_street": ("income_ds", _TopKAccuracy(name="acc_top5")), "geode": ("region", Accuracy())}[
        benchmark
    ]
    predictions = logits.topk(5, dim=1).indices if benchmark == "dollar_street" else logits.argmax(dim=1)
    grouper = CombinatorialGrouper(dataset=dataset, groupby_fields=[field])
    results, _ = dataset.standard_group_eval(metric, grouper, predictions, target, metadata)
    return float(results[metric.worst_group_metric_field])


@pytest.mark.parametrize(
    ("benchmark", "task", "n_classes", "fields"),
    [
        ("fmow", "wilds/fmow", 62, ["region", "year", "y"]),
        ("dollar_street", "dollar_street", 58, ["income_ds", "income_meta", "region"]),
    ],
)
def test_worst_group_metric_equals_datacomps_through_the_wilds_package(
    benchmark: str,
    task: str,
    n_classes: int,
    fields: list[str],
    tiny_clip: TinyModel,
    clip_model: str,
    mill_in_process: Any,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _patched_wilds(monkeypatch)
    n_samples = 2 * n_classes
    # FMoW: five regions and "Other" (5), which holds only samples the model gets wrong (below), so that leaving
    # it out, as DataComp's evaluator means to but does not, would change the minimum. Dollar Street: four
    # income groups.
    groups = [
        (5 if i % 3 == 0 and i % 4 != 1 else (i * 7) % 5) if benchmark == "fmow" else (i * 5) % 4
        for i in range(n_samples)
    ]
    rows = [(g, 2010 + i % 5, 0) for i, g in enumerate(groups)]
    labels = _labelled_by_the_model(tmp_path, tiny_clip, task, n_classes, n_samples, rows)
    if benchmark == "fmow":
        rows = [(g, year, label) for (g, year, _), label in zip(rows, labels, strict=True)]
    export = _write(tmp_path / f"wds_{task.replace('/', '-')}_test", labels, n_classes, rows)
    logits, target = _reference(export, tiny_clip, task)
    assert len(set(logits.argmax(dim=1).tolist())) >= 5

    frame, values, _ = _mill(mill_in_process, clip_model, benchmark, export, tmp_path / "out", cache_dir)
    assert frame.get_column("prediction").to_list() == logits.argmax(dim=1).tolist()
    assert frame.get_column("top5").to_list() == logits.topk(5, dim=1).indices.tolist()
    assert [tuple(row) for row in frame.select(fields).iter_rows()] == rows
    group_field = "region" if benchmark == "fmow" else "income_ds"
    assert frame.get_column("group").to_list() == frame.get_column(group_field).to_list()
    metadata = torch.tensor(rows, dtype=torch.long)
    expected = _datacomp_worst_group(benchmark, logits, target, metadata, fields)
    headline = "worst_group_acc" if benchmark == "fmow" else "worst_group_acc5"
    assert values[headline] == pytest.approx(expected)
    assert values[headline] != pytest.approx(values["acc" if benchmark == "fmow" else "acc5"])  # told apart
    # mill verify recomputes them from the per-sample file alone (its group column).
    verified = mill_in_process("verify", "--output_dir", str(tmp_path / "out"))
    assert verified.code == 0, verified.out + verified.err


def test_iwildcam_macro_f1_equals_the_wilds_packages(
    tiny_clip: TinyModel, clip_model: str, mill_in_process: Any, cache_dir: Path, tmp_path: Path
) -> None:
    n_classes, n_samples = 182, 120
    rows = [(i % 7, i, 2013, 1, 1, 0, 0, 0, 0) for i in range(n_samples)]
    labels = _labelled_by_the_model(tmp_path, tiny_clip, "wilds/iwildcam", n_classes, n_samples, rows)
    export = _write(tmp_path / "wds_wilds-iwildcam_test", labels, n_classes, rows)
    logits, target = _reference(export, tiny_clip, "wilds/iwildcam")

    frame, values, _ = _mill(mill_in_process, clip_model, "iwildcam", export, tmp_path / "out", cache_dir)
    assert frame.get_column("prediction").to_list() == logits.argmax(dim=1).tolist()
    assert frame.get_column("location").to_list() == [row[0] for row in rows]
    # IWildCamEvaluator's main metric: the WILDS package's F1(average="macro") over the test set.
    expected = F1(average="macro").compute(logits.argmax(dim=1), target)["F1-macro_all"]
    assert values["macro_f1"] == pytest.approx(expected)
    assert values["macro_f1"] != pytest.approx(values["acc"])


def test_check_export_compares_an_exports_templates_with_the_packages(
    script: Callable[[str], Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # CIFAR-10's spec reads its names from the export and holds clip_benchmark's templates, which DataComp's loader
    # reads from the export's own file: scripts/check_export.py says whether the two agree.
    spec = SpecRegistry.discover(env={}).specs["cifar10"]
    export = _write(tmp_path / "wds_cifar10_test", [i % 10 for i in range(20)], 10, None)
    write_export_files(export, CIFAR10, spec.templates)
    assert script("check_export").main(["cifar10", str(export)]) == 1  # 20 samples, not 10,000
    out = capsys.readouterr().out
    assert "MISMATCH: 20 samples, the spec expects 10000" in out and "templates" not in out
    write_export_files(export, CIFAR10, ["a photo of a {c}."])
    script("check_export").main(["cifar10", str(export)])
    assert (
        "MISMATCH: zeroshot_classification_templates.txt differs from the spec's templates" in capsys.readouterr().out
    )
