"""Fixtures for the resume, bad-input and remote-data tests: 60 synthetic samples of 20 classes, a small
``tinybench`` spec over them, the end-to-end tests' tiny models (tests/conftest.py) set for small
runs, and ``mill`` run in this process or as a real subprocess that a test can stop and kill at a
chosen commit.

Everything is deterministic and offline: the model has random weights and the images are synthetic,
so the tests check Mill's plumbing, not a model's accuracy.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen

from mill.core.engine import CHUNK_SIZE_ENV
from mill.core.metrics import MetricValue
from mill.core.results import run_rows, upsert_aggregate
from mill.data import write_synthetic_shards
from mill.testing.cli import Mill
from mill.testing.facts import run_facts

N_CLASSES = 20
PER_CLASS = 3
N_SAMPLES = N_CLASSES * PER_CLASS
#: Small enough that a 60-sample run commits several chunks.
CHUNK_SIZE = 8
#: Put first on PYTHONPATH, its sitecustomize lets a test stop a subprocess at a chosen commit.
STOPPER = Path(__file__).parent / "stopper"


@frozen
class Sizes:
    """The shape of :func:`tiny_shards` and the chunk size the tests run with."""

    n_classes: int = N_CLASSES
    n_samples: int = N_SAMPLES
    chunk_size: int = CHUNK_SIZE


@pytest.fixture(scope="session")
def sizes() -> Sizes:
    return Sizes()


@pytest.fixture(scope="session")
def run_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session: classifiers and shard indexes are built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 synthetic samples of 20 classes in test/{0,1,2}.tar (read-only: copy before damaging)."""
    root = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(root, n_classes=N_CLASSES, per_class=PER_CLASS, n_shards=3)
    return root


@pytest.fixture
def damaged_shards(tmp_path: Path, tiny_shards: Path) -> Path:
    """A private copy of :func:`tiny_shards`, for tests that damage it."""
    copy = tmp_path / "damaged"
    shutil.copytree(tiny_shards, copy)
    return copy


@pytest.fixture(scope="session")
def small_batch_clip(clip_model: str) -> str:
    """The tiny random CLIP of the end-to-end tests, four images at a time, in-process (loader workers
    would only add start-up time to these small runs)."""
    return clip_model.replace("]", ",batch_size=4,num_workers=0]")


@pytest.fixture(scope="session")
def tiny_vlm(vlm_dir: Path) -> str:
    """The end-to-end tests' tiny random Qwen2-VL, served by ``hf``, four prompts at a time."""
    return f"hf[path={vlm_dir},dtype=float32,batch_size=4,num_workers=0]"


def _write_spec(path: Path, source: Path | str, *, n_classes: int = N_CLASSES, extra: str = "") -> Path:
    names = ", ".join(f'"class {i}"' for i in range(n_classes))
    path.write_text(
        textwrap.dedent(
            f"""\
            name = "tinybench"
            description = "20 synthetic classes"
            seed = 42
            headline_metric = "acc"

            [dataset]
            source = "{source}"
            split = "test"
            image_member = "0.webp"
            label_member = "cls"
            n_samples = {N_SAMPLES}

            [classes]
            names = [{names}]
            count = {n_classes}

            [templates]
            list = ["a photo of a {{c}}.", "{{c}}"]

            [variants.tinybench]
            kind = "zero_shot"
            metric = "acc"

            [variants.tinybench_mcq]
            kind = "generative_mcq"
            metric = "tinybench_mcq_acc"
            n_options = 4
            max_new_tokens = 4
            prompt = "Which of these is shown? {{options}} Answer with a letter."
            """
        )
        + extra,
        encoding="utf-8",
    )
    return path


@pytest.fixture
def write_spec() -> Callable[..., Path]:
    """``write_spec(path, source, n_classes=20, extra="")``: a ``tinybench`` spec file over ``source``
    (60 samples, two templates, a zero-shot and an MCQ variant); ``extra`` is appended TOML."""
    return _write_spec


@pytest.fixture(scope="session")
def tiny_spec(tmp_path_factory: pytest.TempPathFactory, tiny_shards: Path) -> Path:
    """The ``tinybench`` spec over :func:`tiny_shards`."""
    return _write_spec(tmp_path_factory.mktemp("spec") / "tinybench.toml", tiny_shards)


@pytest.fixture(scope="session")
def eval_argv(small_batch_clip: str, tiny_spec: Path, run_cache: Path) -> Callable[..., list[str]]:
    """``eval_argv(output_dir, *flags, model=small_batch_clip, spec=tiny_spec)``: quiet ``mill eval`` arguments
    for ``tinybench``, with the session cache."""

    def argv(output_dir: Path, *flags: str, model: str = small_batch_clip, spec: Path = tiny_spec) -> list[str]:
        return [
            "eval",
            model,
            "tinybench",
            "--spec",
            str(spec),
            "--output_dir",
            str(output_dir),
            "--cache_dir",
            str(run_cache),
            "--quiet",
            *flags,
        ]

    return argv


@pytest.fixture
def run_mill(mill_in_process: Mill, monkeypatch: pytest.MonkeyPatch) -> Mill:
    """``run_mill("eval", ...)``: run the command in this process, committing every
    :data:`CHUNK_SIZE` samples, and return its :class:`Outcome`."""
    monkeypatch.setenv(CHUNK_SIZE_ENV, str(CHUNK_SIZE))
    return mill_in_process


class MillProcess:
    """A real ``mill`` subprocess committing every :data:`CHUNK_SIZE` samples, its stderr in ``log``,
    optionally stopping itself at a commit. ``runner`` is what the interpreter runs (``-m mill.cli``, or a
    script such as run_as.py that runs the command as another user)."""

    def __init__(
        self, argv: Sequence[str], *, stop_at: str | None, log: Path, runner: Sequence[str] = ("-m", "mill.cli")
    ) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", CHUNK_SIZE_ENV: str(CHUNK_SIZE)}
        if stop_at is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STOPPER), env.get("PYTHONPATH")]))
            env["MILL_TEST_STOP_AT"] = stop_at
        self.log = log
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, *runner, *argv], env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )

    def wait_until_stopped(self, timeout_s: float = 600) -> None:
        """Block until the process has stopped itself; fail (with its stderr) if it exits instead."""
        deadline = time.monotonic() + timeout_s
        while self._state() != "T":
            if self.process.poll() is not None:
                pytest.fail(f"mill exited ({self.process.returncode}) before its stop point:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"mill did not reach its stop point in {timeout_s}s:\n{self.log.read_text()}")
            time.sleep(0.02)

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def wait(self, timeout_s: float = 600) -> int:
        return self.process.wait(timeout=timeout_s)

    def _state(self) -> str:
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except FileNotFoundError:
            return "gone"
        return stat.rsplit(")", 1)[1].split()[0]


@pytest.fixture(scope="session")
def stoppable_mill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MillProcess]]:
    """``stoppable_mill(argv, stop_at="before:chunk-00002.parquet", runner=...)``: start ``mill`` as a subprocess.

    ``stop_at`` is ``before:NAME`` or ``after:NAME``: the process stops itself (SIGSTOP) around the
    commit of the file named NAME (see stopper/sitecustomize.py). Processes still alive at the end
    of the session are killed.
    """
    log_dir = tmp_path_factory.mktemp("logs")
    started: list[MillProcess] = []

    def start(argv: Sequence[str], *, stop_at: str | None = None, **kwargs: Any) -> MillProcess:
        started.append(MillProcess(argv, stop_at=stop_at, log=log_dir / f"mill-{len(started)}.log", **kwargs))
        return started[-1]

    yield start
    for mill in started:
        if mill.process.poll() is None:
            mill.process.kill()
            mill.process.wait()


def _replace_image(shard: Path, key: str, data: bytes) -> None:
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
    with tarfile.open(shard, "w") as tar:
        for member, content in members:
            if member.name.startswith(f"{key}.") and not member.name.endswith(".cls"):
                content = data
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))


@pytest.fixture
def replace_image() -> Callable[[Path, str, bytes], None]:
    """``replace_image(shard, key, data)``: rewrite ``shard`` with sample ``key``'s image member holding
    ``data`` (e.g. bytes that are not an image)."""
    return _replace_image


def _add_foreign_row(output_dir: Path) -> None:
    """A result of another model already in aggregate.csv: no failure or kill may lose it."""
    facts = run_facts(
        model="other/model",
        benchmark="tinybench",
        n_samples=60,
        settings="precision=fp32",
        default_settings=False,
        run_id="earlier",
        output_file="outputs/other.parquet",
        finished_at="2026-01-01T00:00:00+00:00",
    )
    upsert_aggregate(output_dir, run_rows(facts, "tinybench", {"acc": MetricValue(0.5, 0.1)}, ("acc", "acc")))


@pytest.fixture(scope="session")
def foreign_row() -> Callable[[Path], None]:
    """``foreign_row(output_dir)`` puts another model's result into ``output_dir``'s aggregate.csv."""
    return _add_foreign_row
