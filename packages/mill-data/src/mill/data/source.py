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
retried there; refusals, missing files and a full disk become one-line errors. What the server calls the
version of each downloaded shard (:attr:`ShardInfo.version`) is kept beside it; each run asks an http(s)
server once per shard whether it is still current, and downloads a changed shard again, with a warning.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import os
import re
import shutil
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from attrs import frozen

from mill.core.cachefile import write_cache
from mill.core.errors import DataError, MillWarning
from mill.data.download import RetryPolicy, fetch, remote_version, retry_hub

log = logging.getLogger(__name__)

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
    #: For a remote shard, what its server calls the version the cached copy was downloaded at: ``etag:ETAG``
    #: or ``last-modified:DATE`` over http(s), ``hf:COMMIT`` from the Hub; None for a local file or a server
    #: that names none. A server naming another version makes Mill download the shard again.
    version: str | None = None


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
    current = _CurrentVersions(policy)
    for url in urls:
        target = _cache_path(cache_dir, url)
        name = url[len(base) :] if url.startswith(base) else url.rsplit("/", 1)[-1]
        version = _recorded_version(target)
        # A changed shard is replaced only once its new copy is whole: a failed download keeps the old one.
        if not target.exists() or not current.is_current(url, name, version, target):
            version = _download(url, target, policy=policy, hint=hint, overwrite=True)
            _record_version(target, version)
        shards.append(ShardInfo(name=name, path=target, size=target.stat().st_size, version=version))
    return tuple(shards)


class _CurrentVersions:
    """Whether cached copies of remote shards are still what the server holds, asked once per shard per run.

    The first time the server cannot answer (offline, down, slow), the cached copies are used as they are for
    the rest of the run, rather than waiting for each shard in turn.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._answering = True

    def is_current(self, url: str, name: str, recorded: str | None, target: Path) -> bool:
        """False when the server names another version than the one the cached copy was downloaded at (it is then
        downloaded again: a run on the old copy does not resume, its content hash differs)."""
        if not self._answering:
            return True
        try:
            now = remote_version(url, policy=RetryPolicy(self._policy.timeout_s, 0))
        except DataError as error:
            log.info("%s; the cached shards are used as they are", error)
            self._answering = False
            return True
        if now is None or now == recorded:
            return True
        if recorded is None:  # downloaded before versions were recorded: its content hash still identifies it
            _record_version(target, now)
            return True
        warnings.warn(
            f"shard {name} changed on the server since it was downloaded ({recorded}, now {now}): downloading it "
            "again; a run on the old copy starts afresh instead of resuming",
            MillWarning,
            stacklevel=2,
        )
        return False


def _version_file(target: Path) -> Path:
    return target.with_name(f".{target.name}.version")


def _recorded_version(target: Path) -> str | None:
    """The server's version of the cached copy at ``target`` (ETag or Last-Modified), as recorded when it was
    downloaded; None when unknown."""
    if not target.exists():
        return None
    try:
        return _version_file(target).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _record_version(target: Path, version: str | None) -> None:
    if version is None:
        _version_file(target).unlink(missing_ok=True)
    else:
        write_cache(_version_file(target), lambda tmp: tmp.write_text(version, encoding="utf-8"))


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


def _download(url: str, target: Path, *, policy: RetryPolicy, hint: str, overwrite: bool = False) -> str | None:
    """Fetch ``url`` to ``target`` unless it is there, returning the server's version of it (None when it names
    none, or the file was there); on failure raise a DataError naming the URL, plus ``hint``."""
    if target.exists() and not overwrite:
        return None
    try:
        return fetch(url, target, policy=policy)
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
        shards.append(
            ShardInfo(name=name, path=target, size=target.stat().st_size, version=_hub_revision(target, name))
        )
    return tuple(shards)


def _hub_revision(target: Path, name: str) -> str | None:
    """``hf:COMMIT``: the commit of the dataset that the hub client downloaded ``target`` (``name`` in the
    repository) at, from the metadata file it keeps in ``{local_dir}/.cache/huggingface/download/`` (its first
    line); None when there is none."""
    local_dir = target.parents[len(Path(name).parts) - 1]
    metadata = local_dir / ".cache" / "huggingface" / "download" / f"{name}.metadata"
    try:
        commit = metadata.read_text(encoding="utf-8").split("\n", 1)[0].strip()
    except (OSError, UnicodeDecodeError):
        return None
    return f"hf:{commit}" if re.fullmatch(r"[0-9a-f]{40}", commit) else None


def _remove_hub_partials(local_dir: Path) -> None:
    """Delete the ``.incomplete`` files huggingface_hub leaves under ``local_dir`` when a download fails."""
    for partial in (local_dir / ".cache" / "huggingface").rglob("*.incomplete"):
        partial.unlink(missing_ok=True)
