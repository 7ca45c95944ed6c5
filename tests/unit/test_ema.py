"""PowerEMA: update rule against its closed form, fp32 shadow, swap in/out, state, FSDP2 shards."""

import pytest
import torch
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
