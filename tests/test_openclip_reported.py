"""open_clip's published figures in the DataComp specs: scripts/derive_openclip_reported.py writes them from a CSV
in open_clip's layout (a fixture here: the real one needs the network), the spec-deriving script keeps them, and
every DataComp spec in specs/ carries them for the four models, pinned to open_clip's commit."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mill.core.registry import SpecRegistry, builtin_spec_dir
from mill.core.specfile import load_spec

Script = Callable[[str], ModuleType]


def _csv(derive: Any, *, drop_model: bool = False, cell: str | None = None) -> bytes:
    """open_clip's results table's layout: name, pretrained, then a column per DataComp dataset; model i's figure
    for the j-th member is 0.i0jj."""
    columns = [title for _, title, *_ in derive.MEMBERS]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["name", "pretrained", "params (M)", *columns])
    models = derive.MODELS[1:] if drop_model else derive.MODELS
    for i, (name, tag) in enumerate(models):
        writer.writerow([name, tag, "151.28", *[cell or f"0.{i}0{j:02d}" for j in range(len(columns))]])
    return out.getvalue().encode()


def test_blocks_are_written_from_the_csv_and_rewritten_in_place(script: Script, tmp_path: Path) -> None:
    derive: Any = script("derive_openclip_reported")
    for name in ("pets", "flickr30k", "imagenet_v2"):
        shutil.copy(builtin_spec_dir() / f"{name}.toml", tmp_path)
    table = derive.read_table(_csv(derive), check_hash=False)
    # The hand-written ImageNet-V2 figures are checked against the table (these made-up ones differ).
    with pytest.raises(derive.DerivationError, match=r"imagenet_v2\.toml: ViT-B-32/laion2b_s34b_b79k's figure"):
        derive.updated_specs(tmp_path, table)
    (tmp_path / "imagenet_v2.toml").unlink()
    texts, absent = derive.updated_specs(tmp_path, table)
    assert sorted(texts) == ["flickr30k.toml", "pets.toml"]
    assert "caltech101" in absent and "pets" not in absent and "winogavil" not in absent
    for file, text in texts.items():
        before = (tmp_path / file).read_text()
        assert derive.without_block(text) == derive.without_block(before)  # only the block changes
        (tmp_path / file).write_text(text)
    pets = load_spec(tmp_path / "pets.toml")
    column = [title for _, title, name, *_ in derive.MEMBERS].index("Oxford-IIIT Pet")
    assert [(r.model, r.variant, r.metric, r.value) for r in pets.reported] == [
        (f"{name}/{tag}", "pets", "mean_per_class_recall", float(f"0.{i}0{column:02d}"))
        for i, (name, tag) in enumerate(derive.MODELS)
    ]
    assert all(r.source == derive.CSV_URL and derive.OPEN_CLIP_COMMIT in r.source for r in pets.reported)
    assert {r.metric for r in load_spec(tmp_path / "flickr30k.toml").reported} == {"mean_recall@1"}
    # Again: the same text, one block.
    again, _ = derive.updated_specs(tmp_path, table)
    assert again == texts
    assert texts["pets.toml"].count(derive.BLOCK_START) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"drop_model": True}, "no row for ViT-B-32/laion2b_s34b_b79k"), ({"cell": "n/a"}, "'n/a' is not a number")],
)
def test_a_table_without_the_figures_is_refused(script: Script, tmp_path: Path, kwargs: Any, message: str) -> None:
    derive: Any = script("derive_openclip_reported")
    shutil.copy(builtin_spec_dir() / "pets.toml", tmp_path)
    with pytest.raises(derive.DerivationError, match=message):
        derive.updated_specs(tmp_path, derive.read_table(_csv(derive, **kwargs), check_hash=False))
    with pytest.raises(derive.DerivationError, match="SHA-256"):
        derive.read_table(_csv(derive))


def test_deriving_a_spec_again_keeps_its_figures(
    script: Script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helpers: Any = script("derive_imagenet_family")
    derived = script("derive_datacomp_specs").derived_specs()["pets.toml"]  # type: ignore[attr-defined]
    # Written into a copy of specs/ holding Pets' spec with its figures.
    monkeypatch.setattr(helpers, "SPECS", tmp_path / "specs")
    monkeypatch.setattr(helpers, "REPO", tmp_path)
    tmp_path = tmp_path / "specs"
    tmp_path.mkdir()
    published = (builtin_spec_dir() / "pets.toml").read_text()
    (tmp_path / "pets.toml").write_text(published)
    assert helpers.write_or_check({"pets.toml": derived}, check=True, script="s") == 0
    assert helpers.write_or_check({"pets.toml": derived}, check=False, script="s") == 0
    assert (tmp_path / "pets.toml").read_text() == published
    assert len(load_spec(tmp_path / "pets.toml").reported) == 4


def test_every_datacomp_spec_here_carries_open_clips_figures(script: Script) -> None:
    derive: Any = script("derive_openclip_reported")
    specs = SpecRegistry.discover(env={}).specs
    models = [f"{name}/{tag}" for name, tag in derive.MODELS]
    present = [name for _, _, name, _, _ in derive.MEMBERS if name in specs]
    assert len(present) >= 14  # the specs on main: 12 classification, 2 retrieval
    for name in present:
        spec = specs[name]
        figures = {r.model: r for r in spec.reported if r.model in models}
        assert list(figures) == models, name
        assert all(r.metric == spec.headline_metric for r in figures.values()), name
        assert all(r.source == derive.CSV_URL for r in figures.values()), name
