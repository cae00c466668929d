"""Spec loading: the built-in imagenet spec, and every kind of mistake named by file and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mill.core.errors import SpecError
from mill.core.kinds.generative_mcq import McqVariant, UnparsedPolicy
from mill.core.kinds.likelihood_mcq import LikelihoodMcqVariant
from mill.core.kinds.zero_shot import ZeroShotVariant
from mill.core.registry import builtin_spec_dir
from mill.core.specfile import load_spec, with_export_files

IMAGENET = builtin_spec_dir() / "imagenet.toml"


@pytest.fixture
def spec_copy(tmp_path: Path) -> Path:
    """A writable copy of the imagenet spec and the files it references."""
    for file in builtin_spec_dir().glob("imagenet*"):
        shutil.copy(file, tmp_path / file.name)
    return tmp_path / "imagenet.toml"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_imagenet_spec_declares_both_variants() -> None:
    spec = load_spec(IMAGENET)
    assert spec.name == "imagenet"
    assert spec.dataset.n_samples == 50_000
    assert spec.dataset.source == "hf://datasets/haideraltahan/wds_imagenet1k"
    assert len(spec.classnames) == 1000 and len(set(spec.classnames)) == 1000
    assert len(spec.templates) == 80 and all("{c}" in t for t in spec.templates)
    assert list(spec.variants) == ["imagenet", "imagenet_mcq", "imagenet_mcq_likelihood", "imagenet_classifier"]
    zero_shot, mcq = spec.variants["imagenet"], spec.variants["imagenet_mcq"]
    likelihood = spec.variants["imagenet_mcq_likelihood"]
    assert isinstance(zero_shot, ZeroShotVariant) and zero_shot.kind == "zero_shot"
    assert zero_shot.metric == "acc"
    assert isinstance(mcq, McqVariant) and mcq.kind == "generative_mcq"
    assert (mcq.metric, mcq.n_options, mcq.max_new_tokens) == ("imagenet_mcq_acc", 10, 32)
    assert mcq.unparsed is UnparsedPolicy.WRONG
    # The same question as the generative variant, under a metric of its own (so it never rolls up as `acc`).
    assert isinstance(likelihood, LikelihoodMcqVariant) and likelihood.kind == "likelihood_mcq"
    assert (likelihood.n_options, likelihood.prompt) == (mcq.n_options, mcq.prompt)
    assert likelihood.metric == "imagenet_mcq_likelihood_acc"
    assert {r.model: r.value for r in spec.reported}["ViT-B-32/laion2b_s34b_b79k"] == 0.6656
    # timm's results-imagenet.csv row at the test size timm's validate.py resolves (288 px, crop 1.0) and
    # torchvision's documented acc@1, for the classification variant.
    classifiers = {r.model: r.value for r in spec.reported if r.variant == "imagenet_classifier"}
    assert (classifiers["resnet50.a1_in1k"], classifiers["resnet50/IMAGENET1K_V2"]) == (0.8124, 0.80858)


def test_content_hash_covers_referenced_files(spec_copy: Path) -> None:
    before = load_spec(spec_copy).content_hash
    templates = spec_copy.parent / "imagenet_templates.txt"
    templates.write_text(templates.read_text().replace("a bad photo", "a poor photo"))
    assert load_spec(spec_copy).content_hash != before


def test_toml_syntax_error_names_file_and_line(spec_copy: Path) -> None:
    _edit(spec_copy, 'split = "test"', 'split = "test')
    with pytest.raises(SpecError, match=r"imagenet\.toml: TOML syntax error: .*line 12"):
        load_spec(spec_copy)


def test_unknown_key_names_its_path(spec_copy: Path) -> None:
    _edit(spec_copy, "max_new_tokens = 32", "max_new_tokens = 32\nmax_tokens = 3")
    with pytest.raises(SpecError, match=r"imagenet\.toml: variants\.imagenet_mcq: unknown key\(s\) max_tokens"):
        load_spec(spec_copy)


def test_wrong_type_names_dotted_path_and_value(spec_copy: Path) -> None:
    _edit(spec_copy, "max_new_tokens = 32", 'max_new_tokens = "32x"')
    with pytest.raises(SpecError) as error:
        load_spec(spec_copy)
    assert str(error.value) == (f"{spec_copy}: variants.imagenet_mcq.max_new_tokens: expected an integer, got '32x'")


def test_wrong_type_in_nested_table(spec_copy: Path) -> None:
    _edit(spec_copy, "n_samples = 50000", 'n_samples = "many"')
    with pytest.raises(SpecError, match=r"dataset\.n_samples: expected an integer, got 'many'"):
        load_spec(spec_copy)


def test_missing_required_key(spec_copy: Path) -> None:
    _edit(spec_copy, 'split = "test"\n', "")
    with pytest.raises(SpecError, match=r"dataset\.split: required key is missing"):
        load_spec(spec_copy)


def test_a_dataset_names_its_target_member(spec_copy: Path) -> None:
    _edit(spec_copy, 'label_member = "cls"\n', "")
    with pytest.raises(SpecError, match=r"dataset: name the member holding each sample's target: label_member"):
        load_spec(spec_copy)


def test_class_labels_need_classes_and_templates(spec_copy: Path) -> None:
    text = spec_copy.read_text()
    start, end = text.index("[templates]"), text.index("[variants.imagenet]")
    spec_copy.write_text(text[:start] + text[end:])
    with pytest.raises(SpecError, match=r"templates: a dataset with class labels \(dataset.label_member\) needs"):
        load_spec(spec_copy)


def test_captions_take_no_classes(spec_copy: Path) -> None:
    _edit(spec_copy, 'label_member = "cls"\n', 'text_member = "txt"\n')
    with pytest.raises(SpecError, match=r"classes: a dataset without class labels .* has no \[classes\]"):
        load_spec(spec_copy)


def test_missing_class_file_names_the_path(spec_copy: Path) -> None:
    (spec_copy.parent / "imagenet_classnames.txt").unlink()
    with pytest.raises(SpecError, match=r"classes\.file: cannot read .*imagenet_classnames\.txt"):
        load_spec(spec_copy)


def test_missing_template_file(spec_copy: Path) -> None:
    (spec_copy.parent / "imagenet_templates.txt").unlink()
    with pytest.raises(SpecError, match=r"templates\.file: cannot read"):
        load_spec(spec_copy)


def test_class_count_must_match(spec_copy: Path) -> None:
    _edit(spec_copy, "count = 1000", "count = 999")
    with pytest.raises(SpecError, match="declares count = 999 but lists 1000 names"):
        load_spec(spec_copy)


def test_duplicate_names_rejected_unless_allowed(spec_copy: Path) -> None:
    # Without the overrides, the curated list names 'missile' and 'sunglasses' twice each.
    _edit(spec_copy, 'overrides = { 744 = "projectile", 836 = "sunglass" }', "")
    with pytest.raises(SpecError, match=r"duplicate class name 'missile' at indices 657 and 744"):
        load_spec(spec_copy)
    _edit(spec_copy, "count = 1000", "count = 1000\nallow_duplicates = true")
    assert load_spec(spec_copy).classnames[744] == "missile"


def test_unknown_variant_kind(spec_copy: Path) -> None:
    _edit(spec_copy, 'kind = "zero_shot"', 'kind = "zeroshot"')
    with pytest.raises(
        SpecError,
        match=r"variants\.imagenet\.kind: expected one of .*'zero_shot'",
    ):
        load_spec(spec_copy)


def test_more_options_than_classes_rejected(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.toml"
    spec.write_text(
        """
name = "tiny"
description = "three classes"
seed = 1
headline_metric = "acc"
[dataset]
source = "data"
split = "test"
image_member = "webp"
label_member = "cls"
n_samples = 3
[classes]
names = ["a", "b", "c"]
count = 3
[templates]
list = ["a photo of a {c}."]
[variants.tiny_mcq]
kind = "generative_mcq"
metric = "acc"
n_options = 4
max_new_tokens = 8
prompt = "Which?\\n{options}"
"""
    )
    with pytest.raises(SpecError, match=r"variants\.tiny_mcq\.n_options: expected 2 to 3"):
        load_spec(spec)
    spec.write_text(spec.read_text().replace("n_options = 4", "n_options = 3"))
    loaded = load_spec(spec)
    assert loaded.templates == ("a photo of a {c}.",)
    assert loaded.classnames == ("a", "b", "c")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("[variants.imagenet_mcq]", '[variants."../../../x/pwned"]', 'variants."../../../x/pwned"'),
        ("[variants.imagenet_mcq]", '[variants."/tmp/pwned"]', 'variants."/tmp/pwned"'),
        ("[variants.imagenet_mcq]", '[variants."a b"]', 'variants."a b"'),
        ('name = "imagenet"', 'name = ".."', "name"),
        ('name = "imagenet"', 'name = "sub/dir"', "name"),
    ],
)
def test_names_that_are_no_file_names_are_refused(spec_copy: Path, old: str, new: str, key: str) -> None:
    # A benchmark or variant name becomes part of the results' file names: a path would write outside them.
    _edit(spec_copy, old, new)
    with pytest.raises(SpecError) as error:
        load_spec(spec_copy)
    assert str(error.value).startswith(f"{spec_copy}: {key}: ") and "is not a valid name" in str(error.value)


def test_class_file_that_is_not_utf8_is_named(spec_copy: Path) -> None:
    classes = spec_copy.parent / "imagenet_classnames.txt"
    classes.write_bytes(classes.read_bytes().replace(b"tench", b"t\xe9nch", 1))  # Latin-1, as an old editor saves
    with pytest.raises(SpecError, match=r"imagenet\.toml: classes\.file: .*imagenet_classnames\.txt is not UTF-8"):
        load_spec(spec_copy)


@pytest.mark.parametrize("empty", ["list = []", 'file = "empty.txt"'])
def test_a_spec_without_templates_is_refused(spec_copy: Path, empty: str) -> None:
    (spec_copy.parent / "empty.txt").write_text("\n\n")
    _edit(spec_copy, 'file = "imagenet_templates.txt"', empty)
    with pytest.raises(SpecError, match=r"imagenet\.toml: templates\.(list|file: empty\.txt): no template"):
        load_spec(spec_copy)


EXPORT_SPEC = """
name = "exported"
description = "classes and templates from the export"
seed = 42
headline_metric = "acc"

[dataset]
source = "data"
split = "test"
image_member = "webp"
label_member = "cls"
n_samples = 4
metadata_member = "npy"
metadata_fields = ["region", "year"]
group_by = "region"

[classes]
count = 2
export_file = "classnames.txt"

[templates]
export_file = "zeroshot_classification_templates.txt"

[variants.exported]
kind = "zero_shot"
metric = "worst_group_acc"
"""


def _export_spec(tmp_path: Path, text: str = EXPORT_SPEC) -> Path:
    path = tmp_path / "exported.toml"
    path.write_text(text)
    return path


def test_class_names_and_templates_from_the_export_join_the_hash(tmp_path: Path) -> None:
    spec = load_spec(_export_spec(tmp_path))
    assert spec.classnames == () and spec.templates == ()
    assert spec.export is not None
    assert spec.export.names == ("classnames.txt", "zeroshot_classification_templates.txt")
    files = {"classnames.txt": b"cat\ndog\n", "zeroshot_classification_templates.txt": b"a photo of a {c}.\n"}
    opened = with_export_files(spec, files, "/exports/x")
    assert opened.classnames == ("cat", "dog") and opened.templates == ("a photo of a {c}.",)
    assert opened.export is None and opened.content_hash != spec.content_hash
    renamed = with_export_files(spec, {**files, "classnames.txt": b"cat\nwolf\n"}, "/exports/x")
    assert renamed.content_hash != opened.content_hash
    assert with_export_files(spec, dict(files), "/elsewhere").content_hash == opened.content_hash
    with pytest.raises(SpecError, match=r"^/exports/x/classnames.txt: classes: declares count = 2 but lists 3"):
        with_export_files(spec, {**files, "classnames.txt": b"a\nb\nc\n"}, "/exports/x")
    with pytest.raises(SpecError, match=r"zeroshot_classification_templates.txt: templates\[0\]: .* lacks the \{c\}"):
        with_export_files(spec, {**files, "zeroshot_classification_templates.txt": b"a photo\n"}, "/exports/x")
    with pytest.raises(SpecError, match=r"^/exports/x/classnames.txt: missing"):
        with_export_files(spec, {}, "/exports/x")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('export_file = "classnames.txt"', 'export_file = "classnames.txt"\nnames = ["a", "b"]', "give exactly one of"),
        ('group_by = "region"', 'group_by = "country"', "'country' is not one of dataset.metadata_fields"),
        ('["region", "year"]', '["region", "gold"]', r"metadata_fields\[1\]: 'gold' cannot name a per-sample column"),
        ('metadata_fields = ["region", "year"]\ngroup_by = "region"', "", "give metadata_member .* together"),
    ],
)
def test_export_and_metadata_keys_are_checked(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in EXPORT_SPEC
    with pytest.raises(SpecError, match=message):
        load_spec(_export_spec(tmp_path, EXPORT_SPEC.replace(old, new)))
