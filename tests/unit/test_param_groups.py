"""trainer.lr_multipliers: optimizer parameter groups by parameter-name pattern (cosmos_transfer/trainer/param_groups.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cosmos_transfer.trainer import schedulers
from cosmos_transfer.trainer.param_groups import lr_param_groups, scale_group_rates


def small_model() -> nn.Module:
    model = nn.Module()
    model.embed = nn.Linear(4, 8)
    model.blocks = nn.ModuleDict({f"block{i}": nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)) for i in range(2)})
    model.head = nn.Linear(8, 4)
    return model


def group_names(model: nn.Module, groups: list[dict]) -> list[tuple[float, list[str]]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [(group["lr_multiplier"], sorted(names[id(p)] for p in group["params"])) for group in groups]


def test_no_multipliers_gives_the_parameters_unchanged():
    model = small_model()
    params = list(model.parameters())
    assert lr_param_groups(model, params, {}) == params
    assert lr_param_groups(model, params, None) == params


def test_each_parameter_takes_the_first_matching_pattern_with_the_base_group_first():
    model = small_model()
    groups = lr_param_groups(model, list(model.parameters()), {"blocks.*.1.*": 0.1, "blocks.*": 0.5, "head.weight": 2.0})
    assert group_names(model, groups) == [
        (1.0, ["embed.bias", "embed.weight", "head.bias"]),
        (0.5, ["blocks.block0.0.bias", "blocks.block0.0.weight", "blocks.block1.0.bias", "blocks.block1.0.weight"]),
        (0.1, ["blocks.block0.1.bias", "blocks.block0.1.weight", "blocks.block1.1.bias", "blocks.block1.1.weight"]),
        (2.0, ["head.weight"]),
    ]


def test_only_the_given_trainable_parameters_are_grouped():
    model = small_model()
    trainable = [p for n, p in model.named_parameters() if n.startswith("blocks.")]
    groups = lr_param_groups(model, trainable, {"*.1.*": 0.5})
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    assert group_names(model, groups)[1] == (0.5, ["blocks.block0.1.bias", "blocks.block0.1.weight",
                                                   "blocks.block1.1.bias", "blocks.block1.1.weight"])


def test_a_pattern_that_matches_nothing_is_named_in_the_error():
    model = small_model()
    with pytest.raises(ValueError, match=r"\['\*adaLN\*'\] match no trainable parameter.*embed.weight"):
        lr_param_groups(model, list(model.parameters()), {"*adaLN*": 0.1})


def test_a_non_positive_multiplier_is_refused():
    model = small_model()
    with pytest.raises(ValueError, match=r"lr_multipliers\['head.\*'\] = 0.0: a multiplier must be positive"):
        lr_param_groups(model, list(model.parameters()), {"head.*": 0.0})


def test_the_optimizer_rate_is_scaled_per_group_and_the_scheduler_scales_every_group_alike():
    model = small_model()
    groups = lr_param_groups(model, list(model.parameters()), {"head.*": 0.1})
    optimizer = torch.optim.AdamW(groups, lr=1e-2)  # as the trainer builds it: the config's lr for every group
    scale_group_rates(optimizer)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-2, pytest.approx(1e-3)]
    scheduler = schedulers.lambda_linear(optimizer, warm_up_steps=[4], f_start=[0.5])
    for _ in range(2):
        ratio = optimizer.param_groups[1]["lr"] / optimizer.param_groups[0]["lr"]
        assert ratio == pytest.approx(0.1)
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] < 1e-2  # still warming up: the factor really applied


def test_each_group_holds_one_tensor_kind_so_that_fused_adamw_runs_beside_fsdp2():
    """FSDP2's parameters are DTensors; one outside every network (the logvar head) stays a plain tensor. torch's
    fused and foreach AdamW refuse a group that mixes the two; split groups step (fused: the trainer's default)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from cosmos_transfer.trainer.param_groups import one_tensor_kind_per_group

    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = nn.Module()
        model.net = nn.Sequential(small_model().embed, nn.ReLU(), nn.Linear(8, 4))
        model.logvar = nn.Linear(4, 1)  # outside the sharded network, as DiffusionModel's
        fully_shard(model.net)
        params = list(model.parameters())
        groups = lr_param_groups(model, params, {"net.2.*": 0.5})

        def step(param_groups):
            optimizer = torch.optim.AdamW(param_groups, lr=1e-3, fused=True)
            loss = model.net(torch.ones(2, 4)).sum() + model.logvar(torch.ones(2, 4)).sum()
            loss.backward()
            optimizer.step()

        with pytest.raises(RuntimeError, match="mixed torch.Tensor and DTensor"):
            step(groups)
        split = one_tensor_kind_per_group(groups)
        kinds = [{isinstance(p, DTensor) for p in group["params"]} for group in split]
        assert kinds == [{True}, {False}, {True}]  # group 1.0: sharded, then the logvar; group 0.5: the last layer
        assert [group["lr_multiplier"] for group in split] == [1.0, 1.0, 0.5]
        assert sorted(id(p) for group in split for p in group["params"]) == sorted(id(p) for p in params)
        before = model.logvar.weight.detach().clone()
        step(split)
        assert not torch.equal(model.logvar.weight, before)
        # A plain parameter list (no multipliers) is one group, split alike.
        assert [len(g["params"]) for g in one_tensor_kind_per_group(params)] == [len(params) - 2, 2]
    finally:
        dist.destroy_process_group()
