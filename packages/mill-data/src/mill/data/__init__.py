"""Mill's data path: webdataset shards from a local folder, http(s) or the Hugging Face Hub, indexed once
and read in batches.

Typical use::

    source = choose_source(args.data_dir, "imagenet1k", spec.source)
    dataset = open_dataset(source, split="test", image_member="0.webp", label_member="cls",
                           n_classes=1000, expected_count=50_000, cache_dir=cache)
    for batch in dataset.batches(batch_size=256, num_workers=8, transform=preprocess):
        ...
"""

from mill.data.dataset import ShardDataset, open_dataset
from mill.data.source import ShardInfo, choose_source
from mill.data.synthetic import write_synthetic_shards

__all__ = ["ShardDataset", "ShardInfo", "choose_source", "open_dataset", "write_synthetic_shards"]
