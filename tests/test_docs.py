"""Every `mill` command shown in README.md and docs/ parses with the real CLI; those that need no download run.

A command is a line (continuations joined) inside a ```bash, ```sh, ```shell or ```console fence; each part of it
joined by `&&`, `;` or `|` that starts with `mill` (after `VAR=value` prefixes) or runs `-m mill.cli` is one
example. Examples run for real are the bundled demo's evaluations, `mill ls`, `mill collect`, `mill compare`
(the worked example compares two demo runs), a plain `mill report` and `mill rescore` (with and without
`--dry-run`). The flags of every command must also appear in docs/cli.md, so a new flag cannot go
undocumented.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mill.cli.main import cli
from mill.core.model_spec import parse_model_spec, split_top_level
from mill.core.registry import SpecRegistry
from mill.core.suite import discover_suites, expand_benchmarks

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SHELL_FENCES = {"bash", "sh", "shell", "console"}
OPERATORS = {"&&", "||", ";", "|"}
#: Models that ship with Mill: their evaluations need no download, so the test runs them.
OFFLINE_MODEL = "mill-shapes"


def shell_lines(text: str) -> Iterator[str]:
    """Lines of the shell fences of a Markdown text, continuations joined, prompts and comments dropped."""
    language: str | None = None
    pending = ""
    for line in text.splitlines():
        fence = FENCE.match(line.strip())
        if fence:
            language = None if language is not None else fence.group(1)
            continue
        if language not in SHELL_FENCES:
            continue
        stripped = line.strip()
        if language == "console":
            if not stripped.startswith("$ "):
                continue
            stripped = stripped[2:]
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield pending + stripped
        pending = ""


def mill_args(line: str) -> Iterator[list[str]]:
    """The argument lists (after `mill`) of every mill invocation on a shell line."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError as error:  # an unbalanced quote is a broken example
        raise AssertionError(f"cannot split shell line {line!r}: {error}") from None
    part: list[str] = []
    for word in [*words, ";"]:
        if word not in OPERATORS:
            part.append(word)
            continue
        while part and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", part[0]):
            part.pop(0)
        if part and part[0] == "mill":
            yield part[1:]
        elif "mill.cli" in part and part.index("mill.cli") > 0 and part[part.index("mill.cli") - 1] == "-m":
            yield part[part.index("mill.cli") + 1 :]
        part = []


def without_group_options(args: list[str]) -> list[str]:
    """``args`` from the subcommand on: the options of the ``mill`` group written before it
    (``mill --output_dir DIR eval ...``) checked with the group's own parser, and dropped."""
    group_options = {name for param in cli.params if isinstance(param, click.Option) for name in param.opts}
    at = 0
    while at < len(args) and args[at] in group_options:
        at += 2  # every group option takes a value
    with cli.make_context("mill", [*args[:at], "ls"]):
        pass
    return args[at:]


def examples() -> list[tuple[str, list[str]]]:
    found = []
    for file in DOC_FILES:
        for line in shell_lines(file.read_text(encoding="utf-8")):
            for args in mill_args(line):
                found.append((f"{file.relative_to(REPO)}: {line}", without_group_options(args)))
    return found


EXAMPLES = examples()


def test_the_docs_show_the_commands_that_matter() -> None:
    commands = {" ".join(args) for _, args in EXAMPLES}
    assert "eval clip[path=mill-shapes,pretrained=mill-shapes] shapes" in commands  # the README's first command
    assert "eval clip[path=ViT-B-32,pretrained=laion2b_s34b_b79k] imagenet" in commands
    assert "eval Qwen/Qwen3-VL-2B-Instruct[dtype=bfloat16] imagenet --seed 42" in commands
    assert "collect --format markdown --reported" in commands
    assert {args[0] for _, args in EXAMPLES} == {"eval", "collect", "compare", "ls", "report", "rescore", "verify"}


@pytest.mark.parametrize(("where", "args"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_example_parses(where: str, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A spec file an example names as the reader's own (mybench.toml) is created empty: only the command line
    # is checked here.
    _workdir(tmp_path, monkeypatch)
    command = cli.commands.get(args[0])
    assert command is not None, f"{where}: no command 'mill {args[0]}'"
    spec_files = [args[i + 1] for i, word in enumerate(args[:-1]) if word in ("--spec",)]
    for file in spec_files:
        if not Path(file).exists():
            Path(file).write_text("", encoding="utf-8")
    with command.make_context(f"mill {args[0]}", list(args[1:])) as context:
        params = context.params
    if args[0] != "eval":
        return
    for model in split_top_level(params["model"]):
        if not model.endswith(".toml"):  # a model file is the reader's own
            parse_model_spec(model)
    if not spec_files:
        registry = SpecRegistry.discover()
        # A suite stands for its members, as in `mill eval`.
        for benchmark in expand_benchmarks(split_top_level(params["benchmark"]), discover_suites(), registry):
            registry.select(benchmark)


def _workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Work in ``tmp_path``, where the repository's relative paths (specs/...) resolve as in a checkout."""
    monkeypatch.chdir(tmp_path)
    for name in ("specs", "packages", "scripts"):
        (tmp_path / name).symlink_to(REPO / name)


def _runnable(args: list[str]) -> bool:
    if args[0] in ("ls", "collect", "compare") or args == ["report"] or args in (["rescore"], ["rescore", "--dry-run"]):
        return True
    return args[0] == "eval" and all(OFFLINE_MODEL in model for model in split_top_level(args[1]))


def test_offline_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples that need no download run, evaluations first, in one results directory."""
    _workdir(tmp_path, monkeypatch)
    monkeypatch.setenv("MILL_OUTPUT_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MILL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runnable: dict[str, list[str]] = {}
    for _, args in EXAMPLES:
        if _runnable(args):
            runnable.setdefault(shlex.join(args), args)
    ordered = sorted(runnable.values(), key=lambda args: args[0] != "eval")
    assert [args[0] for args in ordered].count("eval") >= 1
    runner = CliRunner()
    for args in ordered:
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, f"mill {shlex.join(args)} failed:\n{result.output}"
    demo = runner.invoke(cli, ["collect", "--format", "csv", "--benchmarks", "shapes", "--metric", "acc"])
    assert "mill-shapes/mill-shapes" in demo.output


def test_every_flag_is_in_the_cli_reference() -> None:
    reference = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, command in cli.commands.items():
        assert f"## `mill {name}" in reference, f"docs/cli.md has no section for mill {name}"
        for param in command.params:
            if isinstance(param, click.Option) and "--help" not in param.opts:
                assert f"`{param.opts[0]}" in reference, f"docs/cli.md does not document mill {name} {param.opts[0]}"


def test_every_spec_key_is_in_the_spec_reference() -> None:
    from importlib.metadata import entry_points

    import attrs

    from mill.core import spec
    from mill.core.task_kind import ENTRY_POINT_GROUP

    # Mill's own kinds: a third party's (tests/support/mill-echo-kind in the e2e session) documents its own.
    own_kinds = [ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.dist and ep.dist.name == "mill-core"]
    reference = (REPO / "docs" / "specs.md").read_text(encoding="utf-8")
    classes = [
        spec.SpecFile,
        spec.DatasetSpec,
        spec.ClassesSpec,
        spec.TemplatesSpec,
        *(kind.variant_type for kind in own_kinds),
        spec.ReportedBaseline,
    ]
    for cls in classes:
        for field in attrs.fields(cls):
            assert (
                f"`{field.name}`" in reference or f"`[{field.name}" in reference or f"`[[{field.name}" in reference
            ), f"docs/specs.md does not document {cls.__name__}.{field.name}"


def test_reproducibility_table_is_what_collect_prints(tmp_path: Path) -> None:
    page = (REPO / "docs" / "reproducibility" / "imagenet.md").read_text(encoding="utf-8")
    args = ["collect", "--format", "markdown", "--reported", "--benchmarks", "imagenet", "--output_dir", str(tmp_path)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    sections = {
        section.splitlines()[0]: [line for line in section.splitlines() if line.startswith("| ")]
        for section in result.output.split("### ")[1:]
    }
    rows = sections["imagenet: imagenet acc"]
    assert len(rows) == 5  # the header and the four published models
    for row in rows:
        assert row in page, f"docs/reproducibility/imagenet.md lacks the row {row!r}"
    # The classification variant's table (timm's and torchvision's published figures) is in docs/classifiers.md.
    classifiers = (REPO / "docs" / "classifiers.md").read_text(encoding="utf-8")
    rows = sections["imagenet: imagenet_classifier acc"]
    assert len(rows) == 8  # the header, five timm models and two torchvision weights
    for row in rows:
        assert row in classifiers, f"docs/classifiers.md lacks the row {row!r}"


def test_relative_links_resolve() -> None:
    for file in DOC_FILES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", file.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (file.parent / target).exists(), f"{file.relative_to(REPO)}: broken link {target}"


def test_docs_and_messages_name_the_hf_command_that_current_hub_clients_install() -> None:
    # huggingface_hub 1.x installs `hf` (hf download, hf auth login), no longer `huggingface-cli`.
    sources = [*DOC_FILES, *sorted((REPO / "packages").glob("*/src/**/*.py")), *sorted((REPO / "scripts").glob("*.py"))]
    stale = [str(path.relative_to(REPO)) for path in sources if "huggingface-cli" in path.read_text(encoding="utf-8")]
    assert stale == []
