"""Mill's data path: webdataset shards from a local folder, http(s) or the Hugging Face Hub, indexed once
and read in batches.

Typical use::

    dataset = open_spec_data(spec, data_dir=None, options=ReadOptions(cache_dir=cache))
    for batch in dataset.batches(batch_size=256, num_workers=8, transform=preprocess):
        ...

The names below are imported on first use (PEP 562), so that ``import mill.data`` costs nothing: the
commands that never read a shard (``mill ls``, ``mill collect``, ``mill --help``) stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mill.data.dataset import ShardDataset, open_dataset, open_spec_data
    from mill.data.source import ShardInfo, choose_source
    from mill.data.synthetic import synthetic_dataset_spec, write_synthetic_shards

_WHERE = {
    "ShardDataset": "mill.data.dataset",
    "open_dataset": "mill.data.dataset",
    "open_spec_data": "mill.data.dataset",
    "ShardInfo": "mill.data.source",
    "choose_source": "mill.data.source",
    "write_synthetic_shards": "mill.data.synthetic",
    "synthetic_dataset_spec": "mill.data.synthetic",
}

__all__ = [
    "ShardDataset",
    "ShardInfo",
    "choose_source",
    "open_dataset",
    "open_spec_data",
    "synthetic_dataset_spec",
    "write_synthetic_shards",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
