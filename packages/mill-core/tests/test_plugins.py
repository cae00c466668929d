"""Backend discovery through entry points, including a distribution that exists only in this test."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mill.core.errors import UnknownBackendError
from mill.core.model_spec import parse_model_spec
from mill.core.plugins import installed_backends, load_plugin, resolve_model


@contextmanager
def _installed(tmp_path: Path, module: str, source: str, entry_points: str) -> Iterator[None]:
    """A distribution ``mill-<module>`` made of the module ``source`` and ``entry_points``, on sys.path until
    exhausted: exactly what a third party ships."""
    (tmp_path / f"{module}.py").write_text(source)
    dist = tmp_path / f"{module}-1.0.dist-info"
    dist.mkdir()
    name = module.replace("_", "-").removesuffix("-backend")
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(entry_points)
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)


@pytest.fixture
def third_party_backend(tmp_path: Path) -> Iterator[str]:
    """A distribution 'mill-echo' that registers backend 'echo' with nothing but an entry point."""
    source = textwrap.dedent(
        """
        from mill.core.backend import Capabilities


        class EchoPlugin:
            def capabilities(self, args):
                return Capabilities(kinds=frozenset({"generative_mcq"}))

            def load(self, args, context):
                raise NotImplementedError

        plugin = EchoPlugin()
        """
    )
    with _installed(tmp_path, "mill_echo_backend", source, "[mill.backends]\necho = mill_echo_backend:plugin\n"):
        yield "echo"


def test_third_party_backend_is_found_by_entry_point(third_party_backend: str) -> None:
    assert third_party_backend in installed_backends()
    plugin = load_plugin(third_party_backend)
    assert plugin.distribution == "mill-echo"  # from the entry point's metadata, not declared by the plugin
    assert plugin.plugin.capabilities({}).serves("generative_mcq")
    model = resolve_model(parse_model_spec("echo[path=x]"))
    assert (model.backend, model.args) == ("echo", {"path": "x"})


def test_known_but_missing_backend_names_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mill.core.plugins.installed_backends", dict)
    with pytest.raises(UnknownBackendError, match=r"pip install '\./packages/mill-backends-llm\[vllm\]'"):
        load_plugin("vllm")


def test_unknown_backend_suggests_close_names() -> None:
    with pytest.raises(UnknownBackendError, match="Did you mean clip"):
        resolve_model(parse_model_spec("clpi[path=x]"), installed=set())


def test_path_heads_resolve_to_hf(tmp_path: Path) -> None:
    hub = resolve_model(parse_model_spec("Qwen/Qwen3-VL-2B-Instruct[dtype=bfloat16]"), installed=set())
    assert hub.backend == "hf"
    assert hub.args == {"path": "Qwen/Qwen3-VL-2B-Instruct", "dtype": "bfloat16"}
    local = resolve_model(parse_model_spec(str(tmp_path)), installed=set())
    assert (local.backend, local.args["path"]) == ("hf", str(tmp_path))


def test_backend_names_win_over_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip").mkdir()
    assert resolve_model(parse_model_spec("clip[path=ViT-B-32]"), installed=set()).backend == "clip"


@pytest.fixture
def claiming_backend(tmp_path: Path) -> Iterator[str]:
    """A distribution whose claim takes bare paths ending in ``-classifier`` for its backend 'claimer'."""
    source = "def claim(path):\n    return {'name': 'hf-hub:' + path} if path.endswith('-classifier') else None\n"
    with _installed(tmp_path, "mill_claimer", source, "[mill.path_claims]\nclaimer = mill_claimer:claim\n"):
        yield "claimer"


def test_a_claim_takes_bare_ids_before_the_default_route(claiming_backend: str) -> None:
    claimed = resolve_model(parse_model_spec("org/vit-classifier[batch_size=4]"), installed=set())
    assert (claimed.backend, claimed.args) == (claiming_backend, {"name": "hf-hub:org/vit-classifier", "batch_size": 4})
    assert resolve_model(parse_model_spec("Qwen/Qwen3-VL-2B-Instruct"), installed=set()).backend == "hf"
    with pytest.raises(UnknownBackendError, match=r"the model is given twice \(as the head and as name=\)"):
        resolve_model(parse_model_spec("org/vit-classifier[name=x]"), installed=set())
