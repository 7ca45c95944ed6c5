"""Bucketed batches on 2 gloo ranks under torchrun: each batch one shape and both ranks in the same bucket at every
step, no clip on two ranks within an epoch, and a resumed loader gives bitwise the batches that would have come."""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, check, subprocess_env
from tests.tiny_datasets import make_tiny_dataset


@pytest.mark.slow
def test_buckets_on_two_ranks_are_distinct_one_shape_per_step_and_resume_bitwise(tmp_path):
    root = tmp_path / "clips"
    make_tiny_dataset(root, stems=[f"land{i}" for i in range(8)], num_frames=12, size=(32, 48))
    make_tiny_dataset(root, stems=[f"port{i}" for i in range(4)], num_frames=12, size=(48, 32))
    make_tiny_dataset(root, stems=[f"short{i}" for i in range(4)], num_frames=5, size=(32, 48))
    out = tmp_path / "record.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "tests" / "buckets_run.py"), str(root), str(out)]
    check(subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT, env=subprocess_env()))
    ranks = json.loads(out.read_text())
    assert [r["state"]["rank"] for r in ranks] == [0, 1] and ranks[0]["state"]["world_size"] == 2

    first_epoch = [r["reference"][: r["epoch_batches"]] for r in ranks]
    assert len(first_epoch[0]) == len(first_epoch[1]) == 6  # 8 land -> 2 global batches of 2x2, 4 short, 4 port
    indices = [i for batches in first_epoch for b in batches for i in b["epoch_index"]]
    assert len(indices) == len(set(indices)) == 16  # every clip once, on one rank
    for step, (a, b) in enumerate(zip(*[r["reference"] for r in ranks])):
        assert ("epoch_end" in a) == ("epoch_end" in b), step
        if "epoch_end" not in a:
            assert a["shape"][1:] == b["shape"][1:], step  # the same bucket on both ranks
            assert a["shape"][0] == {(8, 32, 48): 2, (4, 32, 48): 1, (8, 48, 32): 1}[tuple(a["shape"][2:])]
    shapes = {tuple(b["shape"]) for b in first_epoch[0]}
    assert shapes == {(2, 3, 8, 32, 48), (1, 3, 4, 32, 48), (1, 3, 8, 48, 32)}
    for rank in ranks:  # resumed after 3 batches: bitwise the batches of the uninterrupted run
        assert rank["resumed"] == rank["reference"][3:]
