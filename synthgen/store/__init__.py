"""The Zarr v3 sharded dataset: layout, identity, writer with commit protocol, reader, verify."""

from synthgen.store.info import DatasetInfo, default_shard_size
from synthgen.store.reader import Dataset, open_dataset
from synthgen.store.verify import VerifyReport
from synthgen.store.writer import prepare_dataset, write_shard

__all__ = ["Dataset", "DatasetInfo", "VerifyReport", "default_shard_size", "open_dataset",
           "prepare_dataset", "write_shard"]
