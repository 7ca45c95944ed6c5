"""Sharding and exact resume: distinct samples per rank, (seed, epoch) shuffles, loader state round trips."""

import pytest
import torch

from cosmos_transfer.data.dataset import VideoDataset
from cosmos_transfer.data.sampler import ResumableDistributedSampler, build_dataloader
from tests.tiny_datasets import make_tiny_dataset


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
