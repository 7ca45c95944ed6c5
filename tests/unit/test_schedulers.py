import json

import pytest
import torch

from cosmos_transfer.trainer.schedulers import LambdaLinearMultiplier, constant, lambda_linear


def _lrs(scheduler, optimizer, steps):
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def _optimizer(lr=2.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_lambda_linear_warms_up_linearly_then_holds():
    optimizer = _optimizer()
    scheduler = lambda_linear(optimizer, warm_up_steps=[4], f_start=[0.0], f_max=[1.0], f_min=[1.0])
    assert _lrs(scheduler, optimizer, 7) == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0])


def test_lambda_linear_decays_towards_f_min_and_switches_cycles():
    f = LambdaLinearMultiplier(warm_up_steps=[2, 0], f_start=[0.0, 1.0], f_max=[1.0, 0.5], f_min=[0.0, 0.5],
                               cycle_lengths=[10, 100])
    assert f(0) == 0.0 and f(1) == 0.5
    # After warm-up, a straight line from f_max (cycle start) to f_min (cycle end), as Cosmos' scheduler.
    assert f(5) == pytest.approx(1.0 - 5 / 10)
    assert f(10) == pytest.approx(0.5) and f(500) == pytest.approx(0.5)  # second cycle, then stays in the last one


def test_scheduler_state_is_plain_json_and_round_trips():
    optimizer = _optimizer()
    scheduler = lambda_linear(optimizer, warm_up_steps=[10], f_start=[0.1])
    _lrs(scheduler, optimizer, 3)
    state = json.loads(json.dumps(scheduler.state_dict()))
    optimizer2 = _optimizer()
    scheduler2 = lambda_linear(optimizer2, warm_up_steps=[10], f_start=[0.1])
    scheduler2.load_state_dict(state)
    optimizer2.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"]
    assert _lrs(scheduler2, optimizer2, 4) == _lrs(scheduler, optimizer, 4)


def test_constant_and_bad_arguments():
    optimizer = _optimizer(lr=0.3)
    assert _lrs(constant(optimizer), optimizer, 3) == [0.3, 0.3, 0.3]
    with pytest.raises(ValueError, match="one entry per cycle"):
        lambda_linear(_optimizer(), warm_up_steps=[1, 2], f_start=[0.0])
    with pytest.raises(ValueError, match="cycle_lengths"):
        lambda_linear(_optimizer(), cycle_lengths=[0])
