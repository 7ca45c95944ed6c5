"""EDM diffusion (Karras et al. 2022) as Cosmos uses it: written once here, used by every model.

    x_sigma = x0 + sigma * eps                           noising
    x0_hat  = c_skip * x_sigma + c_out * net(c_in * x_sigma, c_noise)    preconditioned denoiser
    loss    = w(sigma) * |x0_hat - x0|^2 * exp(-logvar(sigma)) + logvar(sigma)   with w = (s^2 + sd^2) / (s * sd)^2

`logvar` is a learned per-noise-level uncertainty (EDM2): it lets the total loss go below zero, which is expected
and harmless; the weighted MSE (`mse`) is logged beside it and never goes negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

SIGMA_DATA = 0.5  # standard deviation of the (scaled) latents; Cosmos scales tokenizer latents by it


def preconditioning(
    sigma: torch.Tensor, sigma_data: float = SIGMA_DATA
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM scalings (c_skip, c_out, c_in, c_noise) for noise levels `sigma` (any shape, positive)."""
    variance = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / variance
    c_out = sigma * sigma_data / variance.sqrt()
    c_in = 1.0 / variance.sqrt()
    c_noise = 0.25 * sigma.log()
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """EDM loss weight lambda(sigma) = 1 / c_out^2: makes the effective network target unit-variance."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sample_sigma(
    batch_size: int,
    *,
    p_mean: float = 0.0,
    p_std: float = 1.0,
    multiplier: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training noise levels: sigma = multiplier * exp(N(p_mean, p_std^2)), float32 [batch_size].

    Drawn on the CPU (the generator's device) and then moved, so a seed gives the same sigmas on every machine.
    """
    if p_std < 0:
        raise ValueError(f"sample_sigma: p_std must be >= 0, got {p_std}")
    normal = torch.randn(batch_size, generator=generator, dtype=torch.float32)
    sigma = multiplier * torch.exp(p_mean + p_std * normal)
    return sigma.to(device) if device is not None else sigma


def video_noise_multiplier(num_latent_frames: int) -> float:
    """Cosmos' video noise adjustment: more frames share the same content, so the noise is scaled by sqrt(T')."""
    if num_latent_frames < 1:
        raise ValueError(f"video_noise_multiplier: need at least one latent frame, got {num_latent_frames}")
    return math.sqrt(num_latent_frames)


class FourierFeatures(nn.Module):
    """cos(2*pi*(f * x) + phase) with fixed random frequencies f and phases: [B] -> [B, num_channels].

    Buffer names `freqs` and `phases` are the official ones (they are saved in Cosmos checkpoints);
    `freqs` already includes the 2*pi.
    """

    def __init__(self, num_channels: int, bandwidth: float = 1.0, normalize: bool = False):
        super().__init__()
        self.bandwidth = bandwidth
        self.register_buffer("freqs", 2 * math.pi * bandwidth * torch.randn(num_channels))
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels))
        self.gain = math.sqrt(2) if normalize else 1.0

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """New random frequencies and phases, as at construction (a model built on the meta device, then allocated)."""
        self.freqs.copy_(2 * math.pi * self.bandwidth * torch.randn(self.freqs.shape, dtype=self.freqs.dtype))
        self.phases.copy_(2 * math.pi * torch.rand(self.phases.shape, dtype=self.phases.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_dtype = x.dtype
        angles = torch.outer(x.float(), self.freqs.float()) + self.phases.float()
        return (angles.cos() * self.gain).to(in_dtype)


def build_logvar_head(num_channels: int = 128) -> nn.Sequential:
    """The uncertainty head, c_noise [B] -> logvar [B, 1]; official names `logvar.0.freqs`, `logvar.1.weight`."""
    return nn.Sequential(FourierFeatures(num_channels, normalize=True), nn.Linear(num_channels, 1, bias=False))


@dataclass
class EDMLoss:
    """Loss terms of one batch. `total` is what is backpropagated; the others are for logging."""

    total: torch.Tensor  # uncertainty-weighted loss; can be negative
    mse: torch.Tensor  # EDM-weighted MSE, mean over the batch (the loss when logvar == 0); >= 0
    x0_mse: torch.Tensor  # plain MSE of x0 in latent space, without the sigma weighting; >= 0


def edm_loss(
    x0_pred: torch.Tensor,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    logvar: torch.Tensor | None = None,
    *,
    sigma_data: float = SIGMA_DATA,
    loss_mask: torch.Tensor | None = None,
) -> EDMLoss:
    """EDM x0 loss with optional learned uncertainty.

    x0_pred, x0: [B, ...]; sigma: [B]; logvar: [B] or [B, 1] or None; loss_mask broadcastable to x0 (e.g. to
    ignore padded pixels). Per sample b: mse_b = w(sigma_b) * mean((x0_pred - x0)^2 * mask),
    total = mean_b(mse_b * exp(-logvar_b) + logvar_b) (Kendall et al.; EDM2's uncertainty weighting).
    """
    if x0_pred.shape != x0.shape:
        raise ValueError(f"edm_loss: x0_pred shape {tuple(x0_pred.shape)} != x0 shape {tuple(x0.shape)}")
    batch = x0.shape[0]
    if sigma.shape != (batch,):
        raise ValueError(f"edm_loss: sigma must be [B]={batch}, got {tuple(sigma.shape)}")
    squared_error = (x0_pred.float() - x0.float()) ** 2
    if loss_mask is not None:
        squared_error = squared_error * loss_mask
    per_sample_error = squared_error.reshape(batch, -1).mean(dim=1)
    per_sample_mse = loss_weight(sigma.float(), sigma_data) * per_sample_error
    if logvar is None:
        total = per_sample_mse.mean()
    else:
        logvar = logvar.float().reshape(batch)
        total = (per_sample_mse * torch.exp(-logvar) + logvar).mean()
    return EDMLoss(total=total, mse=per_sample_mse.mean(), x0_mse=per_sample_error.mean())
