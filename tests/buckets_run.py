"""Bucketed loading on 2 gloo ranks, launched by tests/integration/test_buckets_distributed.py under torchrun:

    torchrun --nproc_per_node=2 tests/buckets_run.py DATASET_ROOT OUT.json

Each rank reads 10 batches (more than an epoch) from build_bucket_dataloader (rank and world size from
torch.distributed), then again from a loader resumed after 3 batches; rank 0 writes every rank's record.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch.distributed as dist  # noqa: E402

from cosmos_transfer.data.buckets import BucketedVideoDataset, build_bucket_dataloader  # noqa: E402

BUCKETS = ["32x48x8:2", "32x48x4:1", "48x32x8:1"]


def record(batch) -> dict:
    return {"epoch_index": [int(i) for i in batch["sample_index"]], "shape": list(batch["video"].shape),
            "digest": hashlib.sha256(batch["video"].numpy().tobytes() + batch["control_input_edge"].numpy().tobytes()
                                     ).hexdigest()}


def read(loader, count: int) -> list[dict]:
    out, iterator = [], iter(loader)
    while len(out) < count:
        try:
            out.append(record(next(iterator)))
        except StopIteration:
            iterator = iter(loader)
            out.append({"epoch_end": True})
    return out


def main() -> None:
    root, out_path = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    dataset = BucketedVideoDataset(root, BUCKETS, text_embedding_length=16, text_embedding_dim=8)

    def loader():
        return build_bucket_dataloader(dataset, seed=2, num_workers=1)

    reference = read(loader(), 12)
    first = loader()
    iterator = iter(first)
    for _ in range(3):
        next(iterator)
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    mine = {"reference": reference, "resumed": read(resumed, 9), "state": state,
            "epoch_batches": len(first.batch_sampler.epoch_batches(0))}
    gathered = [None, None]
    dist.all_gather_object(gathered, mine)
    if dist.get_rank() == 0:
        with open(out_path, "w") as file:
            json.dump(gathered, file)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
