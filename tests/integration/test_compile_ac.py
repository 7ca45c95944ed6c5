"""trainer/parallelize.py's per-block choices on the real control model (ctrl_tiny), FSDP2 over one gloo rank:
activation checkpointing "none", "full" and "selective" give the same loss and gradients (and do recompute what
they say), and torch.compile of each block (CPU inductor) matches eager to float32 rounding.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from configs.train import make_config
from cosmos_transfer.config.compose import override
from cosmos_transfer.config.lazy import instantiate
from cosmos_transfer.trainer.parallelize import find_blocks, parallelize
from tests.helpers import control_batch


@pytest.fixture
def one_rank(tmp_path):
    """A one-process gloo group (fully_shard needs one), torn down after the test."""
    if dist.is_initialized():
        pytest.fail("a process group is already initialized in this pytest process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _model(*overrides: str) -> nn.Module:
    config = override(make_config(), ["--", "experiment=ctrl_tiny", *overrides])
    torch.manual_seed(0)
    return instantiate(config.model)




# The expensive ops: matmuls and the attention kernel (forward; its backward is another op).
_EXPENSIVE = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
              torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default}


class _CountExpensiveOps(TorchDispatchMode):
    """Counts the expensive ops that run under it (in the backward pass: gradients, plus what it recomputes)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in _EXPENSIVE
        return func(*args, **(kwargs or {}))


def _step(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Loss, full gradients by name, and the number of expensive ops the backward pass ran."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same noise, noise level and text dropout in every run
    loss, _ = model.training_step(dict(batch))
    with _CountExpensiveOps() as counter:
        loss.backward()
    grads = {name: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).detach().clone()
             for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, counter.count


def _parallelized(model: nn.Module, **options) -> nn.Module:
    return parallelize(copy.deepcopy(model), device=torch.device("cpu"), param_dtype=torch.float32,
                       reduce_dtype=torch.float32, **options)


def test_activation_checkpointing_choices_give_equal_gradients(one_rank):
    model, batch = _model(), control_batch()
    results = {mode: _step(_parallelized(model, activation_checkpointing=mode), batch)
               for mode in ("none", "full", "selective")}
    loss, grads, expensive = results["none"]
    # (zero-initialized projections end the branch, so at the first step only they have non-zero gradients)
    assert all(g.abs().sum() > 0 for name, g in grads.items() if ".zero_blocks." in name)
    for mode in ("full", "selective"):
        other_loss, other_grads, _ = results[mode]
        assert torch.equal(other_loss, loss), mode
        assert other_grads.keys() == grads.keys()
        for name in grads:  # recomputation on the CPU is deterministic: bitwise the same
            assert torch.equal(other_grads[name], grads[name]), f"{mode}: {name}"
    # ... and the choices are real: "full" recomputes every forward matmul and attention in the backward pass,
    # "selective" keeps their outputs and recomputes only the cheap ops (norms, activations, modulation).
    assert results["selective"][2] == expensive < results["full"][2], {m: r[2] for m, r in results.items()}


@pytest.mark.slow
def test_compiled_blocks_match_eager(one_rank, capsys):
    """One block per network (the base's and the branch's) to keep inductor's C++ compile short on 2 cores."""
    model, batch = _model("model.net.num_blocks=1"), control_batch()
    eager = _parallelized(model)
    compiled = _parallelized(model, compile_blocks=True)
    assert all(getattr(block, "_compiled_call_impl", None) is not None for _, block in find_blocks(compiled))
    eager_loss, eager_grads, _ = _step(eager, batch)
    start = time.perf_counter()
    loss, grads, _ = _step(compiled, batch)
    first = time.perf_counter() - start
    assert torch.allclose(loss, eager_loss, rtol=1e-5, atol=0), (float(loss), float(eager_loss))
    assert grads.keys() == eager_grads.keys()
    for name, grad in grads.items():
        scale = float(eager_grads[name].abs().max()) or 1.0
        assert float((grad - eager_grads[name]).abs().max()) <= 1e-4 * scale, name
    times = {}
    for name, net in (("eager", eager), ("compiled", compiled)):  # steady-state step times, for BENCHMARKS.md
        start = time.perf_counter()
        for _ in range(3):
            _step(net, batch)
        times[name] = (time.perf_counter() - start) / 3
    with capsys.disabled():
        print(f"\n[compile] first compiled step (compile + run) {first:.1f} s; steady step: eager "
              f"{times['eager']:.3f} s, compiled {times['compiled']:.3f} s")
