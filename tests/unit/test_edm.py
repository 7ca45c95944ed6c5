"""EDM formulas against their closed forms."""

import math

import pytest
import torch

from cosmos_transfer.diffusion import edm


def test_preconditioning_closed_form_values():
    sigma = torch.tensor([0.5, 2.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm.preconditioning(sigma, 0.5)
    for i, s in enumerate([0.5, 2.0, 80.0]):
        assert c_skip[i].item() == pytest.approx(0.25 / (s * s + 0.25))
        assert c_out[i].item() == pytest.approx(s * 0.5 / math.sqrt(s * s + 0.25))
        assert c_in[i].item() == pytest.approx(1.0 / math.sqrt(s * s + 0.25))
        assert c_noise[i].item() == pytest.approx(0.25 * math.log(s))
    # at sigma == sigma_data the skip and the network contribute equally: c_skip = 1/2, c_out = sd / sqrt(2)
    assert c_skip[0].item() == pytest.approx(0.5)
    assert c_out[0].item() == pytest.approx(0.5 / math.sqrt(2))


def test_preconditioning_unit_variance_and_optimal_gaussian_denoiser():
    # x0 ~ N(0, sd^2): the network input c_in * x_sigma has unit variance, and with a zero network output the
    # preconditioned denoiser c_skip * x_sigma is exactly the Bayes-optimal denoiser E[x0 | x_sigma].
    torch.manual_seed(0)
    sd, sigma = 0.5, torch.tensor(3.0)
    x0 = sd * torch.randn(200_000, dtype=torch.float64)
    x_sigma = x0 + sigma * torch.randn_like(x0)
    c_skip, c_out, c_in, _ = edm.preconditioning(sigma.double(), sd)
    assert (c_in * x_sigma).std().item() == pytest.approx(1.0, abs=0.01)
    assert c_skip.item() == pytest.approx(sd**2 / (sd**2 + sigma.item() ** 2))
    # the ideal network target (x0 - c_skip x_sigma) / c_out has unit variance too
    target = (x0 - c_skip * x_sigma) / c_out
    assert target.std().item() == pytest.approx(1.0, abs=0.01)


def test_loss_weight_is_inverse_c_out_squared():
    sigma = torch.logspace(-3, 2, 11, dtype=torch.float64)
    _, c_out, _, _ = edm.preconditioning(sigma, 0.5)
    torch.testing.assert_close(edm.loss_weight(sigma, 0.5), 1.0 / c_out**2)


def test_sample_sigma_is_lognormal_and_seeded():
    generator = torch.Generator().manual_seed(1)
    sigma = edm.sample_sigma(100_000, p_mean=-1.2, p_std=1.2, generator=generator)
    assert sigma.shape == (100_000,) and sigma.dtype == torch.float32 and bool((sigma > 0).all())
    log_sigma = sigma.log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.02)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.02)
    again = edm.sample_sigma(100_000, p_mean=-1.2, p_std=1.2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sigma, again, rtol=0, atol=0)
    scaled = edm.sample_sigma(5, p_mean=0.0, p_std=0.0, multiplier=4.0)
    torch.testing.assert_close(scaled, torch.full((5,), 4.0))


def test_video_noise_multiplier():
    assert edm.video_noise_multiplier(16) == 4.0
    assert edm.video_noise_multiplier(1) == 1.0
    with pytest.raises(ValueError, match="latent frame"):
        edm.video_noise_multiplier(0)


def test_logvar_head_official_names_and_fourier_features():
    head = edm.build_logvar_head(128)
    assert set(head.state_dict()) == {"0.freqs", "0.phases", "1.weight"}
    x = torch.tensor([-1.0, 0.0, 0.7])
    expected = math.sqrt(2) * torch.cos(x[:, None] * head[0].freqs[None] + head[0].phases[None])
    torch.testing.assert_close(head[0](x), expected)
    assert head(x).shape == (3, 1)


def test_edm_loss_closed_form_with_uncertainty():
    torch.manual_seed(0)
    x0 = torch.randn(3, 2, 2, 2, 2)
    x0_pred = x0 + 0.1 * torch.randn_like(x0)
    sigma = torch.tensor([0.2, 1.0, 5.0])
    logvar = torch.tensor([0.5, -0.3, 0.0])
    loss = edm.edm_loss(x0_pred, x0, sigma, logvar)
    error = ((x0_pred - x0) ** 2).flatten(1).mean(1)
    weighted = (sigma**2 + 0.25) / (sigma * 0.5) ** 2 * error
    assert loss.mse.item() == pytest.approx(weighted.mean().item(), rel=1e-6)
    assert loss.x0_mse.item() == pytest.approx(error.mean().item(), rel=1e-6)
    assert loss.total.item() == pytest.approx((weighted * torch.exp(-logvar) + logvar).mean().item(), rel=1e-6)
    # without uncertainty the total is the weighted MSE
    assert edm.edm_loss(x0_pred, x0, sigma).total.item() == pytest.approx(loss.mse.item())


def test_edm_loss_can_go_negative_while_mse_cannot():
    # The optimal logvar is log(mse); for a small error the total is log(mse) + 1 < 0: expected, not a bug.
    x0 = torch.zeros(2, 1, 1, 2, 2)
    x0_pred = torch.full_like(x0, 0.01)
    sigma = torch.tensor([1.0, 1.0])
    mse = edm.edm_loss(x0_pred, x0, sigma).mse
    loss = edm.edm_loss(x0_pred, x0, sigma, torch.log(mse).expand(2))
    assert loss.total.item() < 0 < loss.mse.item()
    assert loss.total.item() == pytest.approx(math.log(mse.item()) + 1, rel=1e-5)


def test_edm_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="x0_pred shape"):
        edm.edm_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2))
    with pytest.raises(ValueError, match="sigma must be"):
        edm.edm_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3))
