"""PowerEMA under FSDP2: two processes (gloo), each holding a shard, give the unsharded reference's averages."""

import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from cosmos_transfer.ema import PowerEMA


def _sharded_ema_worker(rank: int, world_size: int, port: int, result_file: str) -> None:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2))
        reference = {name: p.detach().clone() for name, p in model.named_parameters()}
        fully_shard(model)
        ema = PowerEMA(model, s=0.1)
        reference_ema = {name: t.clone() for name, t in reference.items()}
        for step in range(3):
            with torch.no_grad():
                for name, param in model.named_parameters():
                    param.to_local().add_(step + 1.0)  # same change on every shard
                    reference[name] += step + 1.0
            beta = ema.update()
            for name in reference_ema:
                reference_ema[name].lerp_(reference[name], 1 - beta)
        state = ema.state_dict()
        assert all(isinstance(state[f"shadow.{name}"], DTensor) for name in reference)
        for name in reference:
            torch.testing.assert_close(state[f"shadow.{name}"].full_tensor(), reference_ema[name])
        with ema.swapped_in():
            for name, param in model.named_parameters():
                torch.testing.assert_close(param.full_tensor(), reference_ema[name])
        for name, param in model.named_parameters():
            torch.testing.assert_close(param.full_tensor(), reference[name])
        # loading full (unsharded) tensors shards them like the parameters
        full_state = {k: (v.full_tensor() if isinstance(v, DTensor) else v) for k, v in state.items()}
        ema2 = PowerEMA(model)
        ema2.load_state_dict(full_state)
        for name in reference:
            torch.testing.assert_close(ema2.shadow[name], ema.shadow[name])
        dist.barrier()
        if rank == 0:
            with open(result_file, "w") as f:
                f.write("ok")
    finally:
        dist.destroy_process_group()


def test_sharded_ema_equals_unsharded_reference_on_two_ranks():
    with tempfile.TemporaryDirectory() as tmp:
        result_file = os.path.join(tmp, "result")
        with socket.socket() as probe:  # a free port for the rendezvous
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        mp.spawn(_sharded_ema_worker, args=(2, port, result_file), nprocs=2, join=True)
        assert open(result_file).read() == "ok"
