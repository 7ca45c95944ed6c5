"""build_dataloader under torch.distributed: two processes (gloo) read their rank and world size and get distinct
samples, the sampler's own split."""

import torch.distributed as dist
import torch.multiprocessing as mp

from cosmos_transfer.data.dataset import VideoDataset
from cosmos_transfer.data.sampler import ResumableDistributedSampler, build_dataloader
from tests.tiny_datasets import make_tiny_dataset


def _distributed_worker(rank, world_size, root, init_file, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        ds = VideoDataset(root, num_frames=3, resolution=(32, 48), text_embedding_length=16, text_embedding_dim=8)
        loader = build_dataloader(ds, batch_size=2, num_workers=0, seed=9)  # rank and world size from torch.distributed
        results[rank] = [i for batch in loader for i in batch["sample_index"].tolist()]
    finally:
        dist.destroy_process_group()


def test_build_dataloader_reads_rank_from_torch_distributed(tmp_path):
    root = make_tiny_dataset(tmp_path / "data", stems=[f"c{i}" for i in range(8)])
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_distributed_worker, args=(2, root, str(tmp_path / "init"), results), nprocs=2, join=True)
        per_rank = [list(results[r]) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 4
    assert not set(per_rank[0]) & set(per_rank[1])
    expected = ResumableDistributedSampler(8, 0, 2, seed=9).epoch_indices(0)
    assert per_rank[0] == expected
