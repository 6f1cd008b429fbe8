"""ShardStream under torch.distributed: 2 processes, gloo backend, 127.0.0.1 only."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from synthgen.engines import get_engine
from synthgen.runner import generate
from synthgen.stream import ShardStream
from tests.helpers import free_port

WORLD = 2


def _worker(rank: int, path: str, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        stream = ShardStream(path, fields=("fixed_labels",), seed=3, batch_size=2)
        assert stream.rank_world == (rank, WORLD)
        stream.set_epoch(1)  # rank 0's shard list is broadcast to every rank
        indices = [int(i) for batch in DataLoader(stream, batch_size=None, num_workers=1) for i in batch["index"]]
        counts = [torch.tensor(0) for _ in range(WORLD)]
        dist.all_gather(counts, torch.tensor(len(indices)))  # a collective per rank: hangs if counts differ
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"indices": indices,
                                                                 "counts": [int(c) for c in counts]}))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_run(tmp_path: Path) -> None:
    path = tmp_path / "ddp.zarr"
    generate(get_engine("random-shapes", size=32), str(path), 21, seed=1, shard_size=4, backend="local",
             progress=False)
    mp.spawn(_worker, args=(str(path), free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert results[0]["counts"] == results[1]["counts"] == [10, 10]
    stream = ShardStream(str(path), fields=("fixed_labels",), seed=3)
    stream.set_epoch(1)
    order = stream.epoch_order().tolist()
    merged = [results[r]["indices"][i] for i in range(10) for r in range(WORLD)]
    assert merged == order[:20]
