"""Sharding and exact resume: distinct samples per rank, (seed, epoch) shuffles, loader state round trips."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cosmos_transfer.data.dataset import VideoDataset
from cosmos_transfer.data.sampler import ResumableDistributedSampler, build_dataloader
from tiny_datasets import make_tiny_dataset


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_get_distinct_samples(world_size):
    shares = [ResumableDistributedSampler(10, rank, world_size, seed=4).epoch_indices(0) for rank in range(world_size)]
    assert all(len(share) == 10 // world_size for share in shares)
    flat = [i for share in shares for i in share]
    assert len(set(flat)) == len(flat)


def test_shuffle_depends_on_seed_and_epoch_only():
    a, b = ResumableDistributedSampler(50, seed=1), ResumableDistributedSampler(50, seed=1)
    assert a.epoch_indices(0) == b.epoch_indices(0)
    assert a.epoch_indices(0) != a.epoch_indices(1)
    assert a.epoch_indices(0) != ResumableDistributedSampler(50, seed=2).epoch_indices(0)
    assert sorted(a.epoch_indices(3)) == list(range(50))
    a.set_epoch(2)
    assert list(a) == [(2, i) for i in a.epoch_indices(2)]


def test_sampler_state_round_trip_and_checks():
    sampler = ResumableDistributedSampler(20, rank=1, world_size=2, seed=3)
    sampler.set_epoch(4)
    sampler.advance(6)
    restored = ResumableDistributedSampler(20, rank=1, world_size=2, seed=3)
    restored.load_state_dict(sampler.state_dict())
    assert list(restored) == list(sampler) == [(4, i) for i in sampler.epoch_indices(4)[6:]]
    with pytest.raises(ValueError, match="world_size=4 but this run has world_size=2"):
        restored.load_state_dict({**sampler.state_dict(), "world_size": 4})


def _indices(loader, num_batches):
    it = iter(loader)
    return [next(it)["sample_index"].tolist() for _ in range(num_batches)]


def test_resumed_loader_continues_with_the_same_batches(tmp_path):
    root = make_tiny_dataset(tmp_path, stems=[f"c{i}" for i in range(7)])
    ds = VideoDataset(root, num_frames=3, resolution=(32, 48), text_embedding_length=16, text_embedding_dim=8)
    make = lambda: build_dataloader(ds, batch_size=2, num_workers=2, seed=5, rank=0, world_size=1)  # noqa: E731
    # Uninterrupted: 3 batches per epoch (7 samples, the last dropped), run over two epochs.
    reference = make()
    full, videos = [], []
    for _ in range(2):
        for batch in reference:
            full.append(batch["sample_index"].tolist())
            videos.append(batch["video"])
    assert len(full) == 6 and reference.state_dict()["epoch"] == 1
    # Interrupted after 2 batches (workers had read ahead), then resumed in a fresh loader.
    first = make()
    seen = _indices(first, 2)
    state = first.state_dict()
    assert state["epoch"] == 0 and state["consumed"] == 4
    resumed = make()
    resumed.load_state_dict(state)
    rest = [batch["sample_index"].tolist() for batch in resumed]
    after = [batch for batch in resumed]  # the next iter() starts epoch 1
    assert seen + rest + [b["sample_index"].tolist() for b in after] == full
    assert torch.equal(after[0]["video"], videos[3])  # same windows and controls too, not just the same clips


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
