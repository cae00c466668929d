"""Where shards come from: a source string turned into local shard files.

A source is one of

- a local directory ``DIR`` laid out as ``DIR/{split}/*.tar`` (or ``DIR`` itself holding ``*.tar``);
- an http(s) dataset root laid out the same way, with ``{root}/{split}/nshards.txt`` naming the count of
  shards ``0.tar`` ... ``{n-1}.tar`` (the clip_benchmark export);
- an http(s) webdataset brace pattern, ``https://host/path/{000..003}.tar``;
- ``hf://datasets/{owner}/{name}`` on the Hugging Face Hub, optionally followed by a glob of files in the
  repository (``/test/*.tar``); without one, ``{split}/*.tar`` is taken.

Remote shards are downloaded once into ``{cache_dir}/shards/...`` by :mod:`mill.data.download`: a
download goes to a partial file that is renamed into place only when complete, so a shard present at its
final path is always whole and an interrupted run resumes by reusing it. Stalls and dropped connections are
retried there; refusals, missing files and a full disk become one-line errors.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
import shutil
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

from attrs import frozen

from mill.core.cachefile import write_cache
from mill.core.errors import DataError
from mill.data.download import RetryPolicy, fetch, retry_hub

#: The environment variable naming a folder of local datasets, one sub-folder per benchmark.
DATA_DIR_ENV = "MILL_DATA_DIR"


@frozen
class ShardInfo:
    """One shard file on local disk.

    ``name`` is the shard's path relative to the source root (``test/0.tar``); it is what results and
    manifests record, so it does not depend on where the cache or the data folder lives.
    """

    name: str
    path: Path
    size: int
    #: The hex sha256 of the file, once it is indexed (:func:`mill.data.index.index_shard`).
    sha256: str | None = None


def choose_source(
    data_dir: str | None,
    benchmark: str,
    spec_source: str,
    env: Mapping[str, str] = os.environ,
) -> str:
    """The source to read: an explicit ``data_dir``, else ``$MILL_DATA_DIR/{benchmark}`` if it exists,
    else the spec's (usually remote) source."""
    if data_dir:
        return data_dir
    root = env.get(DATA_DIR_ENV)
    if root:
        candidate = Path(root).expanduser() / benchmark
        if candidate.is_dir():
            return str(candidate)
    return spec_source


def resolve_shards(
    source: str,
    *,
    split: str,
    cache_dir: Path | None,
    benchmark: str | None = None,
    export_files: Sequence[str] = (),
) -> tuple[ShardInfo, ...]:
    """The shards of ``split`` in ``source``, downloaded into ``cache_dir`` first when remote (a remote
    source needs one: downloads are kept there).

    ``benchmark`` and ``export_files`` (files the spec reads beside the shards) only improve error messages (where
    to put a local copy).

    Raises:
        DataError: the local directory is missing or holds no shards; a remote source is unreachable or a
            shard cannot be downloaded (the message names the URL and how to provide the shards locally).
    """
    if "://" in source and cache_dir is None and source.startswith(("hf://", "http://", "https://")):
        raise DataError(f"{source} is remote: downloading its shards needs a cache directory (cache_dir)")
    if source.startswith("hf://"):
        assert cache_dir is not None
        return _hf_shards(
            source, split=split, cache_dir=cache_dir, hint=where_to_put_shards(source, split, benchmark, export_files)
        )
    if source.startswith(("http://", "https://")):
        assert cache_dir is not None
        return _http_shards(
            source, split=split, cache_dir=cache_dir, hint=where_to_put_shards(source, split, benchmark, export_files)
        )
    if "://" in source:
        raise DataError(
            f"unsupported data source {source!r}: use a local directory, an http(s) URL or "
            "hf://datasets/{owner}/{name}"
        )
    return local_shards(Path(source).expanduser(), split=split)


def local_shards(root: Path, *, split: str) -> tuple[ShardInfo, ...]:
    """The ``*.tar`` files in ``root/split`` (or in ``root`` itself), in natural order.

    Raises:
        DataError: ``root`` does not exist, or neither folder holds a ``.tar`` file.
    """
    if not root.is_dir():
        raise DataError(
            f"data directory {root} does not exist: point --data_dir (or $MILL_DATA_DIR/<benchmark>) at a "
            f"folder holding {split}/*.tar shards"
        )
    for folder in (root / split, root):
        files = sorted(folder.glob("*.tar"), key=lambda p: natural_key(p.name)) if folder.is_dir() else []
        if files:
            return tuple(ShardInfo(name=f.relative_to(root).as_posix(), path=f, size=f.stat().st_size) for f in files)
    raise DataError(
        f"data directory {root} holds no shards: expected {root / split}/*.tar (or *.tar directly in {root})"
    )


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting ``2.tar`` before ``10.tar``: digit runs compare as numbers."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part)


def where_to_put_shards(source: str, split: str, benchmark: str | None, export_files: Sequence[str] = ()) -> str:
    """The part of an error message telling the user how to provide shards (and the ``export_files`` the spec reads
    beside them) locally (pure)."""
    bench = benchmark or "<benchmark>"
    local = f"${DATA_DIR_ENV}/{bench}"
    files = " and ".join(export_files)
    beside = (f" (with {files} in {local})", f" (and {files} in DIR)") if export_files else ("", "")
    lines = [
        f"Put the shards in {local}/{split}/*.tar{beside[0]}, or pass --data_dir DIR with DIR/{split}/*.tar{beside[1]}."
    ]
    if source.startswith("hf://"):
        repo, _ = parse_hf_source(source)
        patterns = " ".join([f"'{split}/*'", *export_files])
        lines.append(
            f"To download them: hf download {repo} --repo-type dataset --include {patterns} --local-dir {local}"
        )
    return "\n".join(lines)


def read_export_files(
    source: str, names: Sequence[str], *, split: str, cache_dir: Path | None, benchmark: str | None = None
) -> dict[str, bytes]:
    """The bytes of the files ``names`` at the root of the export ``source`` (beside its ``split`` folder), as
    clip_benchmark's ``wds`` loader reads ``classnames.txt`` and ``zeroshot_classification_templates.txt``;
    remote files are downloaded into ``cache_dir`` first, like shards.

    Raises:
        DataError: a file is missing or cannot be downloaded (the message says where it belongs).
    """
    hint = where_to_put_shards(source, split, benchmark, names)
    if source.startswith("hf://"):
        assert cache_dir is not None
        repo, _ = parse_hf_source(source)
        paths = [_hf_file(repo, name, cache_dir=cache_dir, hint=hint) for name in names]
    elif source.startswith(("http://", "https://")):
        assert cache_dir is not None
        base = source.rstrip("/") + "/"
        paths = []
        for name in names:
            target = _cache_path(cache_dir, base + name)
            _download(base + name, target, policy=RetryPolicy.from_env(), hint=hint)
            paths.append(target)
    else:
        root = Path(source).expanduser()
        paths = [root / name for name in names]
        for path in paths:
            if not path.is_file():
                raise DataError(
                    f"{path} is missing: {benchmark or 'this benchmark'}'s spec reads it from the export, beside "
                    f"its {split}/ folder (as clip_benchmark does).\n{hint}"
                )
    return {name: path.read_bytes() for name, path in zip(names, paths, strict=True)}


def _hf_file(repo: str, name: str, *, cache_dir: Path, hint: str, policy: RetryPolicy | None = None) -> Path:
    """``name`` of the Hub dataset ``repo``, downloaded once into ``{cache_dir}/shards/hf/{repo}``."""
    import huggingface_hub

    local_dir = cache_dir / "shards" / "hf" / repo
    target = local_dir / name
    if target.exists():
        return target
    try:
        downloaded = retry_hub(
            functools.partial(
                huggingface_hub.hf_hub_download, repo, name, repo_type="dataset", local_dir=str(local_dir)
            ),
            repo=repo,
            url=f"https://huggingface.co/datasets/{repo}/resolve/main/{name}",
            policy=policy,
            cleanup=lambda: _remove_hub_partials(local_dir),
        )
    except DataError as error:
        raise DataError(f"{error}\n{hint}") from None
    # hf_hub_download writes to an .incomplete file, resumes it on a retry, and moves it into place when done.
    if Path(downloaded) != target:
        shutil.move(downloaded, target)
    return target


# --- http(s) ---------------------------------------------------------------------------------------------


def _http_shards(source: str, *, split: str, cache_dir: Path, hint: str) -> tuple[ShardInfo, ...]:
    policy = RetryPolicy.from_env()
    if "{" in source:
        # Imported here: importing webdataset imports torch, which only reading shards needs.
        from webdataset.shardlists import expand_urls

        urls = expand_urls(source)
        base = source[: source.index("{")].rsplit("/", 1)[0] + "/"
    elif source.endswith(".tar"):
        urls = [source]
        base = source.rsplit("/", 1)[0] + "/"
    else:
        base = source.rstrip("/") + "/"
        count = _http_shard_count(base, split=split, cache_dir=cache_dir, hint=hint, policy=policy)
        urls = [f"{base}{split}/{i}.tar" for i in range(count)]
    shards = []
    for url in urls:
        target = _cache_path(cache_dir, url)
        if not target.exists():
            _download(url, target, policy=policy, hint=hint)
        name = url[len(base) :] if url.startswith(base) else url.rsplit("/", 1)[-1]
        shards.append(ShardInfo(name=name, path=target, size=target.stat().st_size))
    return tuple(shards)


def _http_shard_count(base: str, *, split: str, cache_dir: Path, hint: str, policy: RetryPolicy) -> int:
    url = f"{base}{split}/nshards.txt"
    cached = _cache_path(cache_dir, url)
    # The count is refetched each run (the export may grow) but the cached copy lets a run that already
    # has every shard work offline, without waiting through the retries.
    try:
        _download(
            url, cached, policy=RetryPolicy(policy.timeout_s, 0) if cached.exists() else policy, hint="", overwrite=True
        )
    except DataError as error:
        if not cached.exists():
            raise DataError(f"{error}\n{hint}") from error
    text = cached.read_text().strip()
    try:
        count = int(text)
    except ValueError:
        raise DataError(f"{url} should hold the number of shards, found {text[:40]!r}") from None
    if count <= 0:
        raise DataError(f"{url} says the split has {count} shards: check the dataset root URL")
    return count


def _cache_path(cache_dir: Path, url: str) -> Path:
    """Where a remote file lives in the cache: mirrors the URL so names stay readable (pure)."""
    parts = urllib.parse.urlsplit(url)
    host = re.sub(r"[^A-Za-z0-9._-]", "_", parts.netloc)
    path = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in parts.path.split("/") if p not in ("", ".", "..")]
    return cache_dir.joinpath("shards", parts.scheme, host, *path)


def _download(url: str, target: Path, *, policy: RetryPolicy, hint: str, overwrite: bool = False) -> None:
    """Fetch ``url`` to ``target`` unless it is there; on failure raise a DataError naming the URL, plus ``hint``."""
    if target.exists() and not overwrite:
        return
    try:
        fetch(url, target, policy=policy)
    except DataError as error:
        raise DataError(f"{error}\n{hint}" if hint else str(error)) from None


# --- Hugging Face Hub ------------------------------------------------------------------------------------


def parse_hf_source(source: str) -> tuple[str, str | None]:
    """``hf://datasets/owner/name[/glob]`` → (``owner/name``, glob or None) (pure).

    Raises:
        DataError: the string is not of that form.
    """
    rest = source.removeprefix("hf://")
    parts = rest.split("/", 3)
    if len(parts) < 3 or parts[0] != "datasets" or not parts[1] or not parts[2]:
        raise DataError(
            f"cannot read Hugging Face source {source!r}: expected hf://datasets/{{owner}}/{{name}}"
            " optionally followed by /{split}/*.tar"
        )
    return f"{parts[1]}/{parts[2]}", (parts[3] if len(parts) == 4 and parts[3] else None)


def _hf_shards(source: str, *, split: str, cache_dir: Path, hint: str) -> tuple[ShardInfo, ...]:
    # Imported here: the hub client is only needed for hf:// sources.
    import huggingface_hub

    repo, pattern = parse_hf_source(source)
    pattern = pattern or f"{split}/*.tar"
    local_dir = cache_dir / "shards" / "hf" / repo
    listing = local_dir / ".mill-listing.json"
    policy = RetryPolicy.from_env()
    try:
        # With a cached listing to fall back on, one attempt: an offline run should not wait through retries.
        files = retry_hub(
            lambda: huggingface_hub.HfApi().list_repo_files(repo, repo_type="dataset"),
            repo=repo,
            url=f"https://huggingface.co/datasets/{repo}",
            policy=RetryPolicy(policy.timeout_s, 0) if listing.exists() else policy,
        )
    except DataError as error:
        if not listing.exists():
            raise DataError(f"{error}\n{hint}") from None
        files = json.loads(listing.read_text())
    else:
        # Only lets a later run work offline: a full or read-only cache costs a warning.
        write_cache(listing, lambda tmp: tmp.write_text(json.dumps(sorted(files))))
    names = sorted((f for f in files if fnmatch.fnmatch(f, pattern)), key=natural_key)
    if not names:
        raise DataError(f"dataset {repo} on the Hugging Face Hub has no files matching {pattern!r}\n{hint}")
    shards = []
    for name in names:
        target = _hf_file(repo, name, cache_dir=cache_dir, hint=hint, policy=policy)
        shards.append(ShardInfo(name=name, path=target, size=target.stat().st_size))
    return tuple(shards)


def _remove_hub_partials(local_dir: Path) -> None:
    """Delete the ``.incomplete`` files huggingface_hub leaves under ``local_dir`` when a download fails."""
    for partial in (local_dir / ".cache" / "huggingface").rglob("*.incomplete"):
        partial.unlink(missing_ok=True)
