"""Mill's data path: webdataset shards from a local folder, http(s) or the Hugging Face Hub, indexed once
and read in batches.

Typical use::

    dataset = open_spec_data(spec, data_dir=None, options=ReadOptions(cache_dir=cache))
    for batch in dataset.batches(batch_size=256, num_workers=8, transform=preprocess):
        ...
"""

from mill.data.dataset import ShardDataset, open_dataset, open_spec_data
from mill.data.source import ShardInfo, choose_source
from mill.data.synthetic import synthetic_dataset_spec, write_synthetic_shards

__all__ = [
    "ShardDataset",
    "ShardInfo",
    "choose_source",
    "open_dataset",
    "open_spec_data",
    "synthetic_dataset_spec",
    "write_synthetic_shards",
]
