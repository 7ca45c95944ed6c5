"""Samplers on toy problems whose exact denoiser (and, for one Gaussian, exact ODE solution) is known in closed form."""

import math

import pytest
import torch

from cosmos_transfer.diffusion.samplers import SAMPLER_METHODS, karras_sigmas, sample

SIGMA_MAX = 80.0


@pytest.fixture(autouse=True)
def one_thread():
    """These toys run thousands of tiny ops: one intra-op thread avoids thread hand-off costs (20x on a busy host)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
MEAN = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
STD = torch.tensor([0.5, 0.2, 1.0], dtype=torch.float64)


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x0 + sigma * n] for x0 ~ N(MEAN, STD^2) per coordinate."""
    sigma = sigma.view(-1, 1).to(torch.float64)
    return (MEAN + STD**2 / (STD**2 + sigma**2) * (x.to(torch.float64) - MEAN)).to(x.dtype)


def gaussian_ode_solution(x_T: torch.Tensor) -> torch.Tensor:
    # The probability-flow ODE keeps (x - MEAN) / sqrt(STD^2 + sigma^2) constant.
    return MEAN + (x_T - MEAN) * STD / torch.sqrt(STD**2 + SIGMA_MAX**2)


MIX_MEANS = torch.tensor([-1.0, 1.5], dtype=torch.float64)
MIX_WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
MIX_STD = 0.3


def mixture_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Exact denoiser of a 1-D two-component Gaussian mixture (posterior-weighted component denoisers)."""
    sigma = sigma.view(-1, 1)
    var = MIX_STD**2 + sigma**2
    log_resp = torch.log(MIX_WEIGHTS) - 0.5 * (x - MIX_MEANS) ** 2 / var - 0.5 * torch.log(var)
    resp = torch.softmax(log_resp, dim=-1)
    return (resp * (MIX_MEANS + MIX_STD**2 / var * (x - MIX_MEANS))).sum(-1, keepdim=True)


def _noise(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * SIGMA_MAX


def test_karras_sigmas_endpoints_and_order():
    sigmas = karras_sigmas(10, 0.002, 80.0, rho=7)
    assert sigmas.shape == (11,)
    assert sigmas[0].item() == pytest.approx(80.0)
    assert sigmas[-2].item() == pytest.approx(0.002)
    assert sigmas[-1].item() == 0.0
    assert (sigmas[1:] < sigmas[:-1]).all()
    # uniform spacing in sigma^(1/rho)
    inv = sigmas[:-1] ** (1 / 7)
    assert torch.allclose(inv[1:] - inv[:-1], (inv[1] - inv[0]).expand(9), atol=1e-12)
    assert karras_sigmas(1, 0.002, 80.0).tolist() == [80.0, 0.0]


@pytest.mark.parametrize("method", SAMPLER_METHODS)
def test_converges_to_exact_gaussian_ode_solution(method):
    x_T = _noise(2048, 3)
    exact = gaussian_ode_solution(x_T)
    errors = []
    for steps in (20, 40, 80):
        out = sample(gaussian_denoiser, x_T, sigmas=karras_sigmas(steps, 0.002, SIGMA_MAX), method=method)
        errors.append((out - exact).abs().mean().item())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.05, errors


@pytest.mark.parametrize("method", SAMPLER_METHODS)
def test_gaussian_samples_have_the_data_distribution(method):
    x_T = _noise(8000, 3, seed=1)
    steps = 80 if method == "euler" else 40  # first order: Euler's spread is still ~7% short at 40 steps
    out = sample(gaussian_denoiser, x_T, sigmas=karras_sigmas(steps, 0.002, SIGMA_MAX), method=method)
    assert torch.allclose(out.mean(0), MEAN, atol=0.04)
    assert torch.allclose(out.std(0), STD, rtol=0.05)


def test_second_order_methods_beat_euler_and_res2ab_is_second_order():
    x_T = _noise(1024, 1, seed=2)
    reference = sample(mixture_denoiser, x_T, sigmas=karras_sigmas(1000, 0.002, SIGMA_MAX), method="heun")

    def error(method: str, steps: int) -> float:
        out = sample(mixture_denoiser, x_T, sigmas=karras_sigmas(steps, 0.002, SIGMA_MAX), method=method)
        return (out - reference).abs().mean().item()

    for steps in (20, 40):
        assert error("res2ab", steps) <= error("euler", steps)
        assert error("heun", steps) <= error("euler", steps)
    # Doubling the steps divides a second-order error by about 4, a first-order one by about 2.
    assert error("res2ab", 20) / error("res2ab", 40) > 3.0
    assert 1.5 < error("euler", 20) / error("euler", 40) < 2.6


def test_denoiser_calls_dtype_and_sigma_shape():
    calls = []

    def denoiser(x, sigma):
        calls.append((x.dtype, sigma.dtype, tuple(sigma.shape), sigma[0].item()))
        return torch.zeros_like(x)

    x_T = torch.randn(2, 4, 3, dtype=torch.bfloat16)
    sigmas = karras_sigmas(5, 0.002, 80.0)
    for method, expected_calls in (("euler", 5), ("res2ab", 5), ("heun", 9)):
        calls.clear()
        out = sample(denoiser, x_T, sigmas=sigmas, method=method)
        assert out.dtype == torch.bfloat16 and out.shape == x_T.shape
        assert len(calls) == expected_calls
        assert all(c[0] == torch.bfloat16 and c[1] == torch.bfloat16 and c[2] == (2,) for c in calls)
        assert calls[0][3] == pytest.approx(80.0, rel=1e-2)
        # the denoiser's output at the last non-zero sigma is returned
        assert torch.equal(out, torch.zeros_like(out))


def test_callback_sees_every_step():
    seen = []
    sample(gaussian_denoiser, _noise(4, 3), sigmas=karras_sigmas(6, 0.01, SIGMA_MAX), method="res2ab",
           callback=lambda i, x, x0: seen.append(i))
    assert seen == list(range(6))


@pytest.mark.parametrize(
    "sigmas, message",
    [
        (torch.tensor([80.0, 1.0]), "end in 0"),
        (torch.tensor([1.0, 80.0, 0.0]), "strictly decreasing"),
        (torch.tensor([80.0]), "at least 2"),
        (torch.tensor([math.nan, 0.0]), "finite"),
    ],
)
def test_bad_sigmas_are_rejected(sigmas, message):
    with pytest.raises(ValueError, match=message):
        sample(gaussian_denoiser, _noise(2, 3), sigmas=sigmas)


def test_bad_method_and_bad_schedule_arguments():
    with pytest.raises(ValueError, match="unknown method 'ddim'"):
        sample(gaussian_denoiser, _noise(2, 3), sigmas=karras_sigmas(4), method="ddim")
    with pytest.raises(ValueError, match="num_steps"):
        karras_sigmas(0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        karras_sigmas(10, sigma_min=5.0, sigma_max=1.0)
