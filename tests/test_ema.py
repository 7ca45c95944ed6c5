"""PowerEMA: update rule against its closed form, fp32 shadow, swap in/out, state, FSDP2 shards."""

import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from cosmos_transfer.ema import PowerEMA, power_ema_beta, power_ema_gamma


def test_gamma_solves_the_edm2_relation():
    for s in (0.025, 0.05, 0.1, 0.2):
        gamma = power_ema_gamma(s)
        assert s**2 * (gamma + 2) ** 2 * (gamma + 3) == pytest.approx(gamma + 1, rel=1e-9)
    assert power_ema_gamma(0.1) == pytest.approx(6.94, abs=0.01)  # EDM2's sigma_rel 0.10 <-> gamma 6.94
    with pytest.raises(ValueError, match="s must be"):
        power_ema_gamma(0.5)


def test_update_rule_matches_power_function_average():
    # After updates 0..k with values v_j, the EMA is sum_j w_j v_j with w_j = ((j+1)^(g+1) - j^(g+1)) / (k+1)^(g+1).
    model = nn.Linear(1, 1, bias=False)
    ema = PowerEMA(model, s=0.1)
    gamma = ema.gamma
    values = [3.0, -1.0, 0.5, 2.0, 7.0, -4.0, 1.5]
    for k, value in enumerate(values):
        with torch.no_grad():
            model.weight.fill_(value)
        beta = ema.update()
        assert beta == pytest.approx(power_ema_beta(k, gamma))
        weights = [((j + 1) ** (gamma + 1) - j ** (gamma + 1)) / (k + 1) ** (gamma + 1) for j in range(k + 1)]
        expected = sum(w * v for w, v in zip(weights, values))
        assert ema.shadow["weight"].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert power_ema_beta(0, gamma) == 0.0  # the first update copies the weights
    assert ema.num_updates == len(values)


def test_fp32_shadow_of_low_precision_trainable_parameters_only():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)).to(torch.bfloat16)
    model[0].requires_grad_(False)
    ema = PowerEMA(model)
    assert set(ema.shadow) == {"1.weight", "1.bias"}
    assert all(t.dtype == torch.float32 for t in ema.shadow.values())
    ema.update()
    torch.testing.assert_close(ema.shadow["1.weight"], model[1].weight.float())


def test_swap_in_and_restore_even_after_an_error():
    torch.manual_seed(0)
    model = nn.Linear(3, 3)
    ema = PowerEMA(model)
    ema.update()
    with torch.no_grad():
        model.weight.add_(1.0)
    training_weight = model.weight.detach().clone()
    with ema.swapped_in():
        torch.testing.assert_close(model.weight, ema.shadow["weight"])
        with pytest.raises(RuntimeError, match="swapped in"):
            ema.update()
    torch.testing.assert_close(model.weight, training_weight)
    with pytest.raises(ZeroDivisionError):
        with ema.swapped_in(offload_to_cpu=True):
            1 / 0
    torch.testing.assert_close(model.weight, training_weight)


def test_state_dict_roundtrip_and_wrapper_names():
    model = nn.Linear(3, 2)
    compiled_like = nn.Module()
    compiled_like._orig_mod = model  # names as torch.compile would produce them
    ema = PowerEMA(compiled_like)
    ema.update()
    state = ema.state_dict()
    assert set(state) == {"num_updates", "shadow.weight", "shadow.bias"}
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    other = PowerEMA(nn.Linear(3, 2))
    other.load_state_dict({k: v.clone() for k, v in state.items()})
    torch.testing.assert_close(other.shadow["weight"], ema.shadow["weight"])
    assert other.num_updates == 1
    with pytest.raises(KeyError, match="missing keys"):
        other.load_state_dict({"num_updates": torch.tensor(1)})


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
