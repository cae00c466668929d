"""The closed-set classification kind: its task over the ImageNet family, its scoring, how a classifier is given
the classification variant, and the label-space check made before anything loads."""

from __future__ import annotations

import polars as pl
import pytest

from mill.core.backend import Capabilities
from mill.core.engine import check_label_space, pick_variant
from mill.core.errors import CapabilityError
from mill.core.kinds import classification
from mill.core.kinds.classification import ClassificationTask, ClassificationVariant
from mill.core.registry import builtin_spec_dir
from mill.core.specfile import load_spec
from mill.core.task_kind import SAMPLE_COLUMNS, get_kind

CLASSIFIER = Capabilities(kinds=frozenset({classification.NAME}), modalities=frozenset({"image"}), n_outputs=1000)
FAMILY = ("imagenet", "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r", "imagenet_o", "objectnet")


@pytest.mark.parametrize("name", FAMILY)
def test_a_classifier_gets_the_classification_variant_of_every_member_of_the_family(name: str) -> None:
    spec = load_spec(builtin_spec_dir() / f"{name}.toml")
    picked = pick_variant(spec, None, CLASSIFIER, "timm[name=resnet50]")
    assert picked == f"{name}_classifier"
    check_label_space(spec, CLASSIFIER, "timm[name=resnet50]")  # 1000 outputs fit every member
    task = get_kind(classification.NAME).build_task(spec, picked, spec.variants[picked], spec.seed)
    assert isinstance(task, ClassificationTask)
    assert task.n_outputs == 1000 and task.top_k == 5 and task.classnames == spec.classnames
    if name in ("imagenet", "imagenet_v2", "imagenet_sketch"):
        assert task.parent_classes is None  # all 1000 outputs, output i is class i
    else:
        assert task.parent_classes is not None and len(task.parent_classes) == len(spec.classnames)


def test_a_subset_task_scores_each_class_by_its_parent_output() -> None:
    spec = load_spec(builtin_spec_dir() / "imagenet_r.toml")
    variant = spec.variants["imagenet_r_classifier"]
    task = get_kind(classification.NAME).build_task(spec, "imagenet_r_classifier", variant, 0)
    assert spec.parent_indices is not None
    assert task.parent_classes == tuple((index,) for index in spec.parent_indices)


@pytest.mark.parametrize(("name", "n_outputs"), [("imagenet", 10), ("imagenet_a", 200), ("objectnet", 113)])
def test_a_classifier_with_another_label_space_is_refused(name: str, n_outputs: int) -> None:
    spec = load_spec(builtin_spec_dir() / f"{name}.toml")
    capabilities = Capabilities(kinds=CLASSIFIER.kinds, modalities=CLASSIFIER.modalities, n_outputs=n_outputs)
    with pytest.raises(CapabilityError, match=rf"'m' scores {n_outputs} classes, but {name} is scored over 1000"):
        check_label_space(spec, capabilities, "m")


def test_a_model_without_a_fixed_head_is_not_checked() -> None:
    spec = load_spec(builtin_spec_dir() / "imagenet.toml")
    check_label_space(spec, Capabilities(kinds=frozenset({"zero_shot"})), "clip[path=ViT-B-32]")


def test_scoring_reports_top1_and_topk_with_stderr() -> None:
    task = ClassificationTask("bench", "bench", ("a", "b", "c", "d"), n_outputs=4, top_k=2)
    raw = pl.DataFrame(
        {
            "key": ["k0", "k1", "k2", "k3"],
            "shard": ["0.tar"] * 4,
            "gold": [0, 1, 2, 3],
            "topk": [[0, 1], [2, 1], [3, 0], [1, 2]],
        },
        schema={**SAMPLE_COLUMNS, **classification.RAW_SCHEMA},
    )
    variant = ClassificationVariant(kind=classification.NAME, metric="acc", top_k=2)
    scored = get_kind(classification.NAME).score(task, variant, raw, seed=0)
    assert scored.frame["prediction"].to_list() == [0, 2, 3, 1]
    assert scored.frame["prediction_label"].to_list() == ["a", "c", "d", "b"]
    assert scored.frame["correct"].to_list() == [True, False, False, False]
    assert set(scored.metrics) == {"acc", "acc2"}
    assert scored.metrics["acc"].value == pytest.approx(0.25)
    assert scored.metrics["acc2"].value == pytest.approx(0.5)
    assert scored.metrics["acc"].stderr is not None and scored.metrics["acc"].stderr > 0
    assert get_kind(classification.NAME).metrics(scored.frame, "acc", 0) == scored.metrics
