from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from mill.backends.llm.plugin import hf_plugin, vllm_plugin
from mill.backends.llm.vllm import INSTALL_HINT
from mill.core.errors import UnknownBackendError
from mill.core.plugins import load_plugin


def test_plugin_module_imports_no_ml_framework() -> None:
    code = (
        "import sys, mill.backends.llm.plugin\n"
        "heavy = [m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_distributions() -> None:
    # From the entry points' metadata: a name pip knows, so its version enters the run identity.
    assert load_plugin("hf").plugin is hf_plugin and load_plugin("vllm").plugin is vllm_plugin
    assert load_plugin("hf").distribution == load_plugin("vllm").distribution == "mill-backends-llm"
    assert version(str(load_plugin("vllm").distribution))


def test_vllm_missing_says_how_to_install(tiny_vlm: Path, context: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    with pytest.raises(UnknownBackendError) as error:
        vllm_plugin.load({"path": str(tiny_vlm)}, context)  # type: ignore[arg-type]
    assert INSTALL_HINT in str(error.value)
    assert INSTALL_HINT == "pip install './packages/mill-backends-llm[vllm]'"
