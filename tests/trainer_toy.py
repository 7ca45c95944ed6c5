"""A tiny model and dataset that follow the trainer's contracts (docs/ARCHITECTURE.md), for the trainer tests.

ToyDiffusionModel denoises small uint8 "videos": its network keeps its blocks in `net.blocks` (an nn.ModuleDict),
a frozen "tokenizer" stays out of the optimizer and of state_dict, and `training_step` draws its noise from the global
torch RNG, so exact resume is only possible when the trainer restores every RNG state.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class ToyBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class ToyNet(nn.Module):
    def __init__(self, in_dim: int, dim: int, num_blocks: int, unused_layer: bool = False) -> None:
        super().__init__()
        self.x_embedder = nn.Linear(in_dim + 1, dim)
        self.blocks = nn.ModuleDict({f"block{i}": ToyBlock(dim) for i in range(num_blocks)})
        self.final_layer = nn.Linear(dim, in_dim)
        if unused_layer:  # trainable but never in the graph: it gets no gradient and so no optimizer state
            self.unused = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h = self.x_embedder(torch.cat([x, sigma.log()[:, None]], dim=1))
        for block in self.blocks.values():
            h = block(h)
        return self.final_layer(h)


class ToyTokenizer(nn.Module):
    """Frozen: a fixed projection of the flattened video (never trained, never checkpointed)."""

    def __init__(self, in_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, latent_dim, bias=False)
        self.requires_grad_(False)


class ToyDiffusionModel(nn.Module):
    def __init__(
        self,
        frames: int = 2,
        size: int = 4,
        dim: int = 32,
        num_blocks: int = 2,
        nan_after_steps: int = -1,
        unused_layer: bool = False,
        outside_param: bool = False,
        frozen_block0: bool = False,
    ) -> None:
        super().__init__()
        self.shape = (3, frames, size, size)
        self.in_dim = 3 * frames * size * size
        self.net = ToyNet(self.in_dim, dim, num_blocks, unused_layer)
        if frozen_block0:  # a frozen part of the network, as a control post-training's base
            self.net.blocks.block0.requires_grad_(False)
        self.tokenizer = ToyTokenizer(self.in_dim, 8)
        self.nan_after_steps = nan_after_steps
        self.steps = 0
        # Trainable, outside the network, as DiffusionModel's logvar head: a plain tensor beside FSDP2's DTensors.
        self.logvar = nn.Linear(4, 1) if outside_param else None

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        return type(state)((k, v) for k, v in state.items() if not k.startswith(prefix + "tokenizer."))

    def trainable_parameters(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        return params + (list(self.logvar.parameters()) if self.logvar is not None else [])

    @property
    def device(self) -> torch.device:
        return self.net.final_layer.weight.device

    def _x0(self, batch) -> torch.Tensor:
        # The batch comes as the loader gave it: the model moves it to its device (the trainer does not).
        return batch["video"].to(self.device).float().flatten(1) / 127.5 - 1.0

    def training_step(self, batch):
        x0 = self._x0(batch)
        sigma = torch.exp(torch.randn(x0.shape[0], device=x0.device) * 0.5)
        noisy = x0 + sigma[:, None] * torch.randn_like(x0)
        pred = self.net(noisy / (1 + sigma[:, None] ** 2).sqrt(), sigma)
        mse = (pred - x0).pow(2).mean()
        self.steps += 1
        loss = mse
        if self.logvar is not None:  # the EDM uncertainty term
            logvar = self.logvar(torch.ones(1, 4, device=x0.device)).squeeze()
            loss = mse * torch.exp(-logvar) + logvar
        if 0 <= self.nan_after_steps < self.steps:
            loss = loss * float("nan")
        return loss, {"loss": loss.detach(), "mse": mse.detach(), "edm_loss": mse.detach()}

    def flops_per_step(self, batch) -> float:
        params = sum(p.numel() for p in self.net.parameters())
        return 6.0 * params * batch["video"].shape[0]

    def tokens_per_step(self, batch) -> int:
        return batch["video"].shape[0]

    @torch.no_grad()
    def generate_samples(self, batch, num_steps: int = 4, guidance: float = 0.0, seed: int = 0, sampler=None):
        generator = torch.Generator(device="cpu").manual_seed(seed)
        b = batch["video"].shape[0]
        x = torch.randn(b, self.in_dim, generator=generator).to(self.device) * 2.0
        for sigma in torch.linspace(2.0, 0.1, num_steps):
            s = torch.full((b,), float(sigma), device=x.device)
            x = self.net(x / (1 + s[:, None] ** 2).sqrt(), s)
        return x

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent.clamp(-1, 1).view(latent.shape[0], *self.shape)


class ToyVideoDataset(Dataset):
    """Deterministic samples: a smooth pattern per index plus a control input; accepts (epoch, index) keys."""

    def __init__(self, length: int = 32, frames: int = 2, size: int = 4) -> None:
        self.length, self.frames, self.size = length, frames, size

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key):
        index = key[1] if isinstance(key, tuple) else key
        generator = torch.Generator().manual_seed(index)
        base = torch.rand(3, 1, 1, 1, generator=generator)
        ramp = torch.linspace(0, 1, self.size)
        video = (base * 0.5 + 0.25 * ramp[None, None, :, None] + 0.25 * ramp[None, None, None, :])
        video = video.expand(3, self.frames, self.size, self.size)
        video = (video.clamp(0, 1) * 255).round().to(torch.uint8)
        return {
            "video": video,
            "control_input_edge": 255 - video,
            "fps": torch.tensor(8.0),
            "sample_index": torch.tensor(index),
            "num_skipped": torch.tensor(0),
        }
