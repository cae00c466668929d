"""What a DataComp export holds beside its images: the class names and templates a spec reads from the export's
root when the data is opened, and each sample's metadata row (the ``npy`` member)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mill.core.errors import DataError
from mill.core.registry import SpecRegistry
from mill.core.sample import ReadOptions
from mill.core.spec import Spec
from mill.core.specfile import spec_as_opened
from mill.data.dataset import open_spec_data
from mill.data.synthetic import synthetic_image, write_export_files, write_metadata_shards

ROWS = [(0, 2013, 4), (3, 2014, 7), (3, 2015, 7), (1, 2016, 0), (4, 2013, 61), (0, 2017, 2)]


@pytest.fixture
def fmow() -> Spec:
    return SpecRegistry.discover(env={}).specs["fmow"]


def _export(root: Path, fmow: Spec) -> Path:
    rng = np.random.default_rng(0)
    samples = [(row[2], synthetic_image(row[2], n_classes=62, size=16, rng=rng), row) for row in ROWS]
    write_metadata_shards(root, samples, n_samples=len(samples), n_shards=2)
    write_export_files(root, [f"class {i}" for i in range(62)], ["a satellite photo of {c}."])
    return root


def test_names_templates_and_metadata_rows_come_from_the_export(fmow: Spec, tmp_path: Path) -> None:
    export = _export(tmp_path / "wds_wilds-fmow_test", fmow)
    data = open_spec_data(fmow, str(export), ReadOptions(allow_incomplete=True))
    assert set(data.export_files) == {"classnames.txt", "zeroshot_classification_templates.txt"}
    assert list(data.labels) == [row[2] for row in ROWS]
    assert data.metadata(list(reversed(data.keys))) == [tuple(row) for row in reversed(ROWS)]
    assert data.subset(data.keys[:2]).metadata(data.keys[:2]) == [tuple(row) for row in ROWS[:2]]
    opened = spec_as_opened(fmow, data)
    assert opened.classnames[61] == "class 61" and opened.templates == ("a satellite photo of {c}.",)
    assert opened.content_hash != fmow.content_hash


def test_a_missing_or_wrong_export_file_is_one_clear_error(fmow: Spec, tmp_path: Path) -> None:
    export = _export(tmp_path / "export", fmow)
    (export / "classnames.txt").write_text("only\ntwo\n")
    with pytest.raises(DataError, match=r"export/classnames.txt: classes: declares count = 62 but lists 2 names"):
        open_spec_data(fmow, str(export), ReadOptions(allow_incomplete=True))
    (export / "classnames.txt").unlink()
    with pytest.raises(DataError) as error:
        open_spec_data(fmow, str(export), ReadOptions(allow_incomplete=True))
    message = str(error.value)
    assert message.startswith(f"{export / 'classnames.txt'} is missing: fmow's spec reads it from the export")
    assert "DIR/test/*.tar (and classnames.txt and zeroshot_classification_templates.txt in DIR)" in message


def test_a_metadata_member_that_is_no_row_of_integers_is_named(fmow: Spec, tmp_path: Path) -> None:
    export = _export(tmp_path / "export", fmow)
    with tarfile.open(export / "test" / "1.tar", "a") as tar:
        for member, data in (("s9999999.webp", b"x"), ("s9999999.cls", b"1"), ("s9999999.npy", b"not npy")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=r"shard test/1.tar, sample 's9999999': its metadata member is not a NumPy"):
        open_spec_data(fmow, str(export), ReadOptions(allow_incomplete=True))
