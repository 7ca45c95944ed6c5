"""DiffusionModel: the EDM training model around a GeneralDIT (text2world and video2world).

    batch --tokenizer--> x0 (latents * sigma_data) --noise--> x_sigma --denoise--> x0_hat --> EDM loss

It takes plain objects (net, tokenizer, conditioner) and plain EDM settings; it knows nothing of configs.
The tokenizer is frozen and kept outside the module tree: it is in no state_dict, no optimizer and no FSDP unit.

Subclasses (the control model) change only how the network is called, through two hooks:
  `_extend_condition(batch, condition)`  add inputs to the condition (e.g. encoded control hints),
  `_net_forward(net_input, timesteps, condition)`  run the network(s) on the preconditioned input.
The loss, the preconditioning, the conditioner and the sampling are reused as they are.

video2world: the network takes one extra input channel, the condition mask (1 on conditioning latent frames).
In training the first n latent frames (n uniform in [min_condition_frames, max_condition_frames], per sample)
are given clean; the prediction on them is replaced by the truth, so they add no loss.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cosmos_transfer.diffusion import edm
from cosmos_transfer.diffusion.conditioner import Condition, VideoConditioner

# Noise level at which conditioning frames are presented to the network: they are clean, and Cosmos feeds clean
# conditioning frames scaled by c_in(0.001) (its inference setting), which the official weights expect.
CONDITION_FRAME_SIGMA = 0.001


class DiffusionModel(nn.Module):
    """EDM diffusion model.

    Args:
        net: the denoising network, `forward(x, timesteps, crossattn_emb, crossattn_mask, fps, padding_mask)`.
            If it has a `logvar` submodule (official checkpoints keep it in the net) that is the uncertainty head;
            otherwise the model builds its own (`self.logvar`).
        tokenizer: frozen video tokenizer (latent_channels, spatial/temporal compression, encode/decode,
            latent_num_frames).
        conditioner: batch -> Condition (text dropout for classifier-free guidance).
        sigma_data: data standard deviation of the scaled latents (0.5).
        p_mean, p_std: lognormal training sigma distribution (Cosmos-Transfer1: 0, 1).
        adjust_video_noise: multiply training sigmas by sqrt(latent frames).
        loss_add_logvar: add the learned-uncertainty term to the loss.
        loss_scale: constant factor on the backpropagated loss.
        video2world: the net takes the condition-mask channel and training conditions on the first latent frames.
        min_condition_frames, max_condition_frames: range of conditioning latent frames drawn in training.
        sigma_max, sigma_min, rho: default sampling schedule (Karras); 70 / 0.002 / 7 as Cosmos samples.
        video_key: batch key of the uint8 video [B,3,T,H,W]; `latent` in the batch (cached) skips encoding.
    """

    def __init__(
        self,
        net: nn.Module,
        tokenizer: nn.Module,
        conditioner: VideoConditioner | None = None,
        *,
        sigma_data: float = edm.SIGMA_DATA,
        p_mean: float = 0.0,
        p_std: float = 1.0,
        adjust_video_noise: bool = True,
        loss_add_logvar: bool = True,
        loss_scale: float = 1.0,
        video2world: bool = False,
        min_condition_frames: int = 0,
        max_condition_frames: int = 2,
        sigma_max: float = 70.0,
        sigma_min: float = 0.002,
        rho: float = 7.0,
        video_key: str = "video",
    ):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"DiffusionModel: net must be an nn.Module, got {type(net).__name__}")
        for attribute in ("latent_channels", "encode", "decode", "latent_num_frames", "spatial_compression"):
            if not hasattr(tokenizer, attribute):
                raise TypeError(
                    f"DiffusionModel: tokenizer {type(tokenizer).__name__} lacks '{attribute}' "
                    "(see the Tokenizer contract in docs/ARCHITECTURE.md)"
                )
        if not 0 <= min_condition_frames <= max_condition_frames:
            raise ValueError(
                "DiffusionModel: need 0 <= min_condition_frames <= max_condition_frames, "
                f"got {min_condition_frames}, {max_condition_frames}"
            )
        if sigma_data <= 0 or sigma_min <= 0 or sigma_max <= sigma_min:
            raise ValueError(
                f"DiffusionModel: need sigma_data > 0 and 0 < sigma_min < sigma_max, got sigma_data={sigma_data}, "
                f"sigma_min={sigma_min}, sigma_max={sigma_max}"
            )
        expected_in = tokenizer.latent_channels + int(video2world)
        if getattr(net, "in_channels", expected_in) != expected_in:
            raise ValueError(
                f"DiffusionModel: the net takes in_channels={net.in_channels} but the tokenizer gives "
                f"{tokenizer.latent_channels} latent channels" + (" plus 1 condition-mask channel (video2world)"
                                                                  if video2world else "")
                + f"; set the net's in_channels={expected_in} (e.g. model.net.in_channels={expected_in})"
            )
        if getattr(net, "out_channels", tokenizer.latent_channels) != tokenizer.latent_channels:
            raise ValueError(
                f"DiffusionModel: the net predicts out_channels={net.out_channels} but the tokenizer has "
                f"{tokenizer.latent_channels} latent channels; set model.net.out_channels={tokenizer.latent_channels}"
            )
        self.net = net
        self.conditioner = conditioner if conditioner is not None else VideoConditioner()
        if getattr(net, "logvar", None) is None:
            self.logvar = edm.build_logvar_head()
        # Frozen and outside the module tree (plain attribute): moved along by _apply, never saved or optimized.
        tokenizer.requires_grad_(False)
        tokenizer.eval()
        object.__setattr__(self, "tokenizer", tokenizer)

        self.sigma_data = sigma_data
        self.p_mean = p_mean
        self.p_std = p_std
        self.adjust_video_noise = adjust_video_noise
        self.loss_add_logvar = loss_add_logvar
        self.loss_scale = loss_scale
        self.video2world = video2world
        self.min_condition_frames = min_condition_frames
        self.max_condition_frames = max_condition_frames
        self.sigma_max = sigma_max
        self.sigma_min = sigma_min
        self.rho = rho
        self.video_key = video_key

    # ----------------------------------------------------------------------------------------------- plumbing
    def _apply(self, fn, recurse: bool = True):
        # .to()/.cuda()/.float() also move the tokenizer, which is deliberately not a registered submodule.
        super()._apply(fn, recurse)
        self.tokenizer._apply(fn)
        return self

    @property
    def logvar_head(self) -> nn.Module:
        """The uncertainty head: the net's (official layout) or the model's own."""
        net_logvar = getattr(self.net, "logvar", None)
        return net_logvar if net_logvar is not None else self.logvar

    @property
    def device(self) -> torch.device:
        for tensor in self.net.parameters():
            return tensor.device
        return torch.device("cpu")

    @property
    def net_dtype(self) -> torch.dtype:
        for tensor in self.net.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer updates (everything with requires_grad; the tokenizer is never among them)."""
        return [p for p in self.parameters() if p.requires_grad]

    def _batch_to_device(self, batch: dict) -> dict:
        device = self.device
        return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    # -------------------------------------------------------------------------------------------- tokenizer
    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video (uint8 0..255, or float already in [-1, 1]) [B,3,T,H,W] -> x0 latents (scaled by sigma_data)."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"DiffusionModel.encode: video must be [B,3,T,H,W], got {tuple(video.shape)}")
        if video.dtype == torch.uint8:
            video = video.float() / 127.5 - 1.0
        elif not video.is_floating_point():
            raise ValueError(f"DiffusionModel.encode: video must be uint8 0..255 or float in [-1,1], got {video.dtype}")
        return self.tokenizer.encode(video).float() * self.sigma_data

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """x0 latents (as returned by encode / generate_samples) -> float video in [-1, 1]."""
        return self.tokenizer.decode(latent / self.sigma_data)

    def latent_from_batch(self, batch: dict) -> torch.Tensor:
        """x0 of a batch: the cached `latent` (tokenizer output) when present, else the encoded video."""
        if batch.get("latent") is not None:
            latent = batch["latent"]
            if latent.ndim != 5 or latent.shape[1] != self.tokenizer.latent_channels:
                raise ValueError(
                    f"DiffusionModel: cached 'latent' must be [B,{self.tokenizer.latent_channels},T',H',W'], "
                    f"got {tuple(latent.shape)}"
                )
            return latent.float() * self.sigma_data
        if self.video_key not in batch:
            raise KeyError(f"DiffusionModel: batch has neither 'latent' nor '{self.video_key}'; keys: {sorted(batch)}")
        return self.encode(batch[self.video_key])

    def latent_shape(self, batch: dict) -> tuple[int, ...]:
        """[B, C, T', H', W'] of the latents of `batch` (from `latent`, or from the video's shape)."""
        if batch.get("latent") is not None:
            return tuple(batch["latent"].shape)
        if self.video_key not in batch:
            raise KeyError(f"DiffusionModel: batch has neither 'latent' nor '{self.video_key}'; keys: {sorted(batch)}")
        b, _, t, h, w = batch[self.video_key].shape
        s = self.tokenizer.spatial_compression
        if h % s or w % s:
            raise ValueError(f"DiffusionModel: video size {h}x{w} is not a multiple of the tokenizer's {s}")
        return (b, self.tokenizer.latent_channels, self.tokenizer.latent_num_frames(t), h // s, w // s)

    # ------------------------------------------------------------------------------------------- conditions
    def _extend_condition(self, batch: dict, condition: Condition) -> Condition:
        """Hook for subclasses: add inputs to a condition built from `batch` (training and sampling)."""
        return condition

    def with_condition_frames(self, condition: Condition, latent: torch.Tensor, num_frames: torch.Tensor) -> Condition:
        """Condition on the first `num_frames[b]` latent frames of `latent` [B,C,T',H',W'] (video2world)."""
        if not self.video2world:
            raise ValueError("DiffusionModel: conditioning on latent frames needs video2world=True")
        frame_index = torch.arange(latent.shape[2], device=latent.device)
        frames = frame_index[None, :] < num_frames.to(latent.device)[:, None]  # [B, T']
        indicator = frames.to(latent.dtype)[:, None, :, None, None]
        return condition.replace(condition_latent=latent, condition_frames=indicator)

    def _draw_condition_frame_counts(self, batch_size: int, num_latent_frames: int) -> torch.Tensor:
        high = min(self.max_condition_frames, num_latent_frames - 1)  # always leave a frame to generate
        low = min(self.min_condition_frames, high)
        return torch.randint(low, high + 1, (batch_size,))

    # --------------------------------------------------------------------------------------------- denoiser
    def _net_forward(self, net_input: torch.Tensor, timesteps: torch.Tensor, condition: Condition) -> torch.Tensor:
        """Hook for subclasses: the network call on the preconditioned input (c_in * x, plus mask channel)."""
        kwargs = {k: (v.to(net_input.dtype) if v is not None and v.is_floating_point() else v)
                  for k, v in condition.network_kwargs().items()}
        return self.net(net_input, timesteps, **kwargs)

    def _sigma_per_sample(self, sigma: torch.Tensor | float, batch_size: int, device: torch.device) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=device).reshape(-1)
        if sigma.numel() == 1:
            return sigma.expand(batch_size)
        if sigma.numel() != batch_size:
            raise ValueError(f"DiffusionModel.denoise: sigma must be a scalar or [B]={batch_size}, got {sigma.numel()}")
        return sigma

    def denoise(self, x_sigma: torch.Tensor, sigma: torch.Tensor | float, condition: Condition) -> torch.Tensor:
        """Preconditioned denoiser D(x_sigma; sigma) -> x0 estimate (float32, same shape as x_sigma)."""
        batch_size = x_sigma.shape[0]
        x_sigma = x_sigma.float()
        sigma = self._sigma_per_sample(sigma, batch_size, x_sigma.device)
        c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1, 1, 1) for c in edm.preconditioning(sigma, self.sigma_data))
        net_input = c_in * x_sigma
        frames = condition.condition_frames
        if self.video2world:
            if frames is None:  # text2world with a video2world net: nothing is conditioned
                frames = x_sigma.new_zeros(batch_size, 1, x_sigma.shape[2], 1, 1)
            else:
                clean_scale = 1.0 / math.sqrt(CONDITION_FRAME_SIGMA**2 + self.sigma_data**2)  # c_in of that sigma
                net_input = frames * (clean_scale * condition.condition_latent.float()) + (1 - frames) * net_input
            mask_channel = frames.expand(batch_size, 1, *x_sigma.shape[2:])
            net_input = torch.cat([net_input, mask_channel], dim=1)
        net_output = self._net_forward(net_input.to(self.net_dtype), c_noise.view(-1).to(self.net_dtype), condition)
        x0 = c_skip * x_sigma + c_out * net_output.float()
        if self.video2world and condition.condition_frames is not None:
            x0 = frames * condition.condition_latent.float() + (1 - frames) * x0
        return x0

    def uncertainty(self, sigma: torch.Tensor) -> torch.Tensor:
        """Learned log-variance [B] of the loss at noise levels sigma [B]."""
        _, _, _, c_noise = edm.preconditioning(sigma.float(), self.sigma_data)
        head = self.logvar_head
        dtype = next(head.parameters()).dtype
        return head(c_noise.to(dtype)).float().view(-1)

    # --------------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One EDM training step: (loss to backpropagate, detached scalar metrics)."""
        batch = self._batch_to_device(batch)
        x0 = self.latent_from_batch(batch)
        batch_size, num_latent_frames = x0.shape[0], x0.shape[2]
        condition = self._extend_condition(batch, self.conditioner(batch))
        if self.video2world:
            counts = self._draw_condition_frame_counts(batch_size, num_latent_frames)
            condition = self.with_condition_frames(condition, x0, counts)

        multiplier = edm.video_noise_multiplier(num_latent_frames) if self.adjust_video_noise else 1.0
        sigma = edm.sample_sigma(batch_size, p_mean=self.p_mean, p_std=self.p_std, multiplier=multiplier,
                                 device=x0.device)
        epsilon = torch.randn_like(x0)
        x_sigma = x0 + sigma.view(-1, 1, 1, 1, 1) * epsilon
        x0_pred = self.denoise(x_sigma, sigma, condition)
        logvar = self.uncertainty(sigma) if self.loss_add_logvar else None
        loss = edm.edm_loss(x0_pred, x0, sigma, logvar, sigma_data=self.sigma_data)

        total = loss.total * self.loss_scale
        metrics = {
            "loss": total.detach(),
            "mse": loss.mse.detach(),
            "edm_loss": loss.mse.detach(),  # Cosmos' name for the same weighted MSE
            "x0_mse": loss.x0_mse.detach(),
            "sigma_mean": sigma.mean().detach(),
        }
        if logvar is not None:
            metrics["logvar"] = logvar.mean().detach()
        return total, metrics

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Same as training_step, so that FSDP's root pre/post-forward hooks run around the step."""
        return self.training_step(batch)

    # --------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate_samples(
        self,
        batch: dict,
        num_steps: int = 35,
        guidance: float = 5.0,
        seed: int = 0,
        sampler: str = "res2ab",
        *,
        sigma_max: float | None = None,
        sigma_min: float | None = None,
        condition_latent: torch.Tensor | None = None,
        latent_shape: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """Sample x0 latents for `batch` with classifier-free guidance; `decode()` turns them into video.

        guidance: x0 = cond + guidance * (cond - uncond) (Cosmos' convention; 0 disables guidance). The
        unconditional branch uses `neg_t5_text_embeddings` from the batch when present, else empty text.
        condition_latent: video2world only, [B,C,k,H',W'] latents (as returned by this method or `encode`) that
        condition the first k latent frames (e.g. the last frames of the previous window).
        The initial noise is drawn on the CPU from `seed`, so a seed gives the same sample on any device.
        """
        from cosmos_transfer.diffusion.samplers import karras_sigmas, sample

        batch = self._batch_to_device(batch)
        shape = tuple(latent_shape) if latent_shape is not None else self.latent_shape(batch)
        condition, uncondition = self.conditioner.condition_and_uncondition(batch)
        condition = self._extend_condition(batch, condition)
        uncondition = self._extend_condition(batch, uncondition)
        if condition_latent is not None:
            condition, uncondition = self._conditioned_on_latent(condition, uncondition, condition_latent, shape)

        sigma_max = self.sigma_max if sigma_max is None else sigma_max
        sigma_min = self.sigma_min if sigma_min is None else sigma_min
        generator = torch.Generator().manual_seed(seed)
        x_T = (torch.randn(shape, generator=generator, dtype=torch.float32) * sigma_max).to(self.device)
        sigmas = karras_sigmas(num_steps, sigma_min, sigma_max, self.rho).to(self.device)

        def guided_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            x0_cond = self.denoise(x, sigma, condition)
            if guidance == 0:
                return x0_cond
            x0_uncond = self.denoise(x, sigma, uncondition)
            return x0_cond + guidance * (x0_cond - x0_uncond)

        return sample(guided_denoiser, x_T, sigmas=sigmas, method=sampler)

    def _conditioned_on_latent(
        self, condition: Condition, uncondition: Condition, condition_latent: torch.Tensor, shape: tuple[int, ...]
    ) -> tuple[Condition, Condition]:
        if not self.video2world:
            raise ValueError("DiffusionModel.generate_samples: condition_latent needs a video2world model")
        b, c, t, h, w = shape
        k = condition_latent.shape[2]
        if condition_latent.shape != (b, c, k, h, w) or k > t:
            raise ValueError(
                f"DiffusionModel.generate_samples: condition_latent must be [B,C,k,H',W'] = [{b},{c},k<={t},{h},{w}], "
                f"got {tuple(condition_latent.shape)}"
            )
        full = condition_latent.new_zeros(shape)
        full[:, :, :k] = condition_latent
        full = full.to(self.device, torch.float32)
        counts = torch.full((b,), k)
        # Both branches see the conditioning frames: guidance acts on the text only (as Cosmos-Transfer1 does).
        return self.with_condition_frames(condition, full, counts), self.with_condition_frames(uncondition, full, counts)

    # ------------------------------------------------------------------------------------------------ flops
    def flops_per_step(self, batch: dict) -> float:
        """FLOPs of one training step (forward + backward) of the network on `batch`, for MFU."""
        from cosmos_transfer import flops

        text_length = batch["t5_text_embeddings"].shape[1]
        return float(flops.dit_training_step_flops(self.net, self.latent_shape(batch), text_length))

    def extra_repr(self) -> str:
        return (f"sigma_data={self.sigma_data}, p_mean={self.p_mean}, p_std={self.p_std}, "
                f"adjust_video_noise={self.adjust_video_noise}, video2world={self.video2world}")

