"""DiffusionModel: the diffusion training model around a DiT (text2world and video2world).

    batch --tokenizer--> x0 (latents * data_scale) --noise--> x_t --network--> prediction --> loss

The maths of noising, preconditioning, loss and sampling is the objective's (diffusion/objectives.py): EDM by
default (built from the plain EDM settings below, as Cosmos-1.0 trains), or `objective=RectifiedFlowObjective()`
(Cosmos-2.5). It takes plain objects (net, tokenizer, conditioner, objective); it knows nothing of configs.
The tokenizer is frozen and kept outside the module tree: it is in no state_dict, no optimizer and no FSDP unit.

Subclasses (the control model) change only how the network is called, through two hooks:
  `_extend_condition(batch, condition, hint_latents=None)`  add inputs to the condition (e.g. the encoded control
      hints; `hint_latents` are the ones a caller encoded already, as `encode_hints(batch)` returns them),
  `_net_forward(net_input, timesteps, condition)`  run the network(s) on the preconditioned input.
The loss, the preconditioning, the conditioner and the sampling are reused as they are.

A batch may come on any device: `training_step`, `generate_samples` and `encode_hints` move it to the model's
device (`_batch_to_device`, the one place a batch moves; the trainer and inference pass batches as they are).

video2world: the network takes one extra input channel, the condition mask (1 on conditioning latent frames).
In training the first n latent frames (n uniform in [min_condition_frames, max_condition_frames], or drawn with
`condition_frame_probs` such as Transfer2.5's {0: 0.4, 1: 0.4, 2: 0.2}, per sample) are given clean; the prediction
on them is replaced by the exact one, so they add no loss.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cosmos_transfer.diffusion import edm
from cosmos_transfer.diffusion.conditioner import Condition, VideoConditioner
from cosmos_transfer.diffusion.objectives import CONDITION_FRAME_SIGMA, DiffusionObjective, EDMObjective
from cosmos_transfer.hints import batch_key, normalize_hint_key

__all__ = ["CONDITION_FRAME_SIGMA", "DiffusionModel"]


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
        condition_frame_probs: {number of latent frames: probability} for video2world training instead of the
            uniform min/max range (NVIDIA's Transfer2.5: {0: 0.4, 1: 0.4, 2: 0.2}); capped at T' - 1 frames.
        objective: the training objective; None builds EDMObjective from the EDM settings above (sigma_data, p_mean,
            p_std, adjust_video_noise, sigma_max, sigma_min, rho), which are ignored otherwise. The learned
            uncertainty (loss_add_logvar) belongs to EDM: a rectified-flow objective trains without it, as NVIDIA's.
    """

    # The condition-mask channel (video2world) counts in the net's in_channels (Cosmos-1.0); the 2.5 nets add it
    # themselves (diffusion/model_v2_5.py).
    condition_mask_in_net_channels = True
    # The control inputs the model takes (subclasses with control branches set them); `encode_hints` reads them.
    hint_keys: tuple[str, ...] | list[str] = ()

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
        condition_frame_probs: dict[int, float] | None = None,
        objective: DiffusionObjective | None = None,
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
        if objective is None:
            if sigma_data <= 0 or sigma_min <= 0 or sigma_max <= sigma_min:
                raise ValueError(
                    f"DiffusionModel: need sigma_data > 0 and 0 < sigma_min < sigma_max, got sigma_data={sigma_data}, "
                    f"sigma_min={sigma_min}, sigma_max={sigma_max}"
                )
            objective = EDMObjective(sigma_data=sigma_data, p_mean=p_mean, p_std=p_std,
                                     adjust_video_noise=adjust_video_noise, sigma_max=sigma_max,
                                     sigma_min=sigma_min, rho=rho)
        elif not isinstance(objective, DiffusionObjective):
            raise TypeError(
                f"DiffusionModel: objective must be a DiffusionObjective (EDMObjective, RectifiedFlowObjective), "
                f"got {type(objective).__name__}"
            )
        self.objective = objective
        self.condition_frame_probs = _checked_frame_probs(condition_frame_probs)
        uses_logvar = isinstance(objective, EDMObjective)
        expected_in = tokenizer.latent_channels + int(video2world and self.condition_mask_in_net_channels)
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
        if getattr(net, "logvar", None) is None and uses_logvar:
            self.logvar = edm.build_logvar_head()
        # Frozen and outside the module tree (plain attribute): moved along by _apply, never saved or optimized.
        tokenizer.requires_grad_(False)
        tokenizer.eval()
        object.__setattr__(self, "tokenizer", tokenizer)

        self.sigma_data = objective.data_scale  # the latent scale (EDM's sigma_data; 1 for rectified flow)
        self.p_mean = p_mean
        self.p_std = p_std
        self.adjust_video_noise = adjust_video_noise
        self.loss_add_logvar = loss_add_logvar and uses_logvar
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
        """A copy of `batch` with its tensors (also inside dicts and lists, e.g. `control_weight` maps) on the
        model's device; a batch already there costs nothing."""
        return _to_device(batch, self.device)

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
    def encode_hints(self, batch: dict) -> dict[str, torch.Tensor]:
        """Hint key -> hint latent of the control video `control_input_<key>` of each of the model's `hint_keys`
        (encoded by the frozen tokenizer, scaled as x0); empty for a model without control inputs."""
        batch = self._batch_to_device(batch)
        hints = {}
        for key in self.hint_keys:
            name = batch_key(key)
            if name not in batch:
                raise KeyError(
                    f"{type(self).__name__}: batch has no '{name}' (control video uint8 [B,3,T,H,W]) for hint key "
                    f"'{key}'; batch keys: {sorted(batch)}. Set the datasets' hint_keys to the model's {list(self.hint_keys)}."
                )
            hints[key] = self.encode(batch[name])
        return hints

    def hints_of(self, batch: dict, hint_latents: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The hint latents of `batch`: `hint_latents` when the caller encoded them already (checked: one per hint
        key of the model, 'edge' or 'control_input_edge'), else `encode_hints(batch)`."""
        if hint_latents is None:
            return self.encode_hints(batch)
        given = {normalize_hint_key(k): v for k, v in hint_latents.items()}
        if sorted(given) != sorted(self.hint_keys) or len(given) != len(hint_latents):
            raise ValueError(f"{type(self).__name__}: hint_latents has the keys {sorted(hint_latents)}; expected one "
                             f"latent per hint key of the model, {sorted(self.hint_keys)} (as encode_hints returns)")
        return given

    def _extend_condition(self, batch: dict, condition: Condition,
                          hint_latents: dict[str, torch.Tensor] | None = None) -> Condition:
        """Hook for subclasses: add inputs to a condition built from `batch` (training and sampling).
        hint_latents: what `encode_hints(batch)` returned, when the caller encoded them already (`hints_of`)."""
        if hint_latents:  # a model without control inputs takes none: a clear error
            self.hints_of(batch, hint_latents)
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
        if self.condition_frame_probs is not None:
            counts, probs = self.condition_frame_probs
            drawn = counts[torch.multinomial(probs, batch_size, replacement=True)]
            return drawn.clamp(max=num_latent_frames - 1)  # always leave a frame to generate
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

    def predict(self, x_t: torch.Tensor, level: torch.Tensor | float, condition: Condition,
                epsilon: torch.Tensor | None = None, *, sampling: bool = False) -> torch.Tensor:
        """The objective's prediction at x_t (EDM: x0, rectified flow: velocity), float32, x_t's shape.

        epsilon: the noise of this sample (training) or trajectory (sampling: x_T); rectified flow needs it for the
        exact velocity on conditioning frames. sampling: the objective's inference timesteps (flow: NVIDIA's)."""
        objective = self.objective
        batch_size = x_t.shape[0]
        x_t = x_t.float()
        level = self._sigma_per_sample(level, batch_size, x_t.device)
        net_input, timesteps = objective.network_input(x_t, level, sampling)
        frames = condition.condition_frames
        if self.video2world:
            if frames is None:  # text2world with a video2world net: nothing is conditioned
                frames = x_t.new_zeros(batch_size, 1, x_t.shape[2], 1, 1)
            else:
                clean_input = objective.clean_frames_input(condition.condition_latent.float())
                net_input = frames * clean_input + (1 - frames) * net_input
                timesteps = self._condition_frame_timesteps(timesteps, frames, sampling)
            mask_channel = frames.expand(batch_size, 1, *x_t.shape[2:])
            net_input = torch.cat([net_input, mask_channel], dim=1)
        net_output = self._net_forward(net_input.to(self.net_dtype), timesteps.to(self.net_dtype), condition)
        prediction = objective.prediction(x_t, level, net_output.float())
        if self.video2world and condition.condition_frames is not None:
            exact = objective.clean_frames_prediction(condition.condition_latent.float(), epsilon)
            prediction = frames * exact + (1 - frames) * prediction
        return prediction

    def _condition_frame_timesteps(self, timesteps: torch.Tensor, frames: torch.Tensor, sampling: bool) -> torch.Tensor:
        """Per-frame timesteps [B,T'] when the objective gives clean frames their own timestep (2.5 nets only)."""
        frame_timestep = getattr(self.objective, "conditional_frame_timestep", None)
        if frame_timestep is None:
            return timesteps
        clean = self.objective.network_timestep(torch.full_like(timesteps, frame_timestep), sampling)
        indicator = frames.reshape(frames.shape[0], frames.shape[2])
        return indicator * clean[:, None] + (1 - indicator) * timesteps[:, None]

    def denoise(self, x_t: torch.Tensor, sigma: torch.Tensor | float, condition: Condition,
                epsilon: torch.Tensor | None = None) -> torch.Tensor:
        """x0 estimate at x_t (float32, same shape): EDM's preconditioned denoiser D(x_sigma; sigma), or for
        rectified flow x_t - sigma * v."""
        prediction = self.predict(x_t, sigma, condition, epsilon)
        if self.objective.prediction_kind == "x0":
            return prediction
        level = self._sigma_per_sample(sigma, x_t.shape[0], x_t.device)
        return self.objective.x0_from_prediction(x_t.float(), level, prediction)

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

        objective = self.objective
        sigma = objective.draw_training_levels(batch_size, num_latent_frames, x0.device)
        epsilon = torch.randn_like(x0)
        x_t = objective.noisy(x0, epsilon, sigma)
        prediction = self.predict(x_t, sigma, condition, epsilon)
        logvar = self.uncertainty(sigma) if self.loss_add_logvar else None
        loss = objective.loss(prediction, objective.target(x0, epsilon), sigma, logvar)

        total = loss.total * self.loss_scale
        metrics = {
            "loss": total.detach(),
            "mse": loss.mse.detach(),
            objective.loss_name: loss.mse.detach(),  # the same weighted MSE under the objective's name (edm_loss...)
            "x0_mse": loss.x0_mse.detach(),
            "sigma_mean": sigma.mean().detach(),
        }
        if logvar is not None:
            metrics["logvar"] = logvar.mean().detach()
        return total, metrics

    # --------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate_samples(
        self,
        batch: dict,
        num_steps: int = 35,
        guidance: float = 5.0,
        seed: int = 0,
        sampler: str | None = None,
        *,
        sigma_max: float | None = None,
        sigma_min: float | None = None,
        condition_latent: torch.Tensor | None = None,
        latent_shape: tuple[int, ...] | None = None,
        hint_latents: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Sample x0 latents for `batch` with classifier-free guidance; `decode()` turns them into video.

        sampler: the objective's method (EDM: "res2ab" by default, "euler", "heun"; rectified flow: "unipc" by
        default, "euler"). sigma_max, sigma_min: EDM schedule overrides (rectified flow has none).
        guidance: pred = cond + guidance * (cond - uncond) on the objective's prediction (x0 or velocity; Cosmos'
        convention in both families; 0 disables guidance). The
        unconditional branch uses `neg_t5_text_embeddings` from the batch when present, else empty text.
        condition_latent: video2world only, [B,C,k,H',W'] latents (as returned by this method or `encode`) that
        condition the first k latent frames (e.g. the last frames of the previous window).
        hint_latents: a control model's hint latents of this batch, as `encode_hints(batch)` returns them (inference
        encodes them while the tokenizer visits the device); None encodes them here, once for both guidance branches.
        The initial noise is drawn on the CPU from `seed`, so a seed gives the same sample on any device.
        """
        batch = self._batch_to_device(batch)
        shape = tuple(latent_shape) if latent_shape is not None else self.latent_shape(batch)
        if hint_latents is None:
            hint_latents = self.encode_hints(batch)
        condition, uncondition = self.conditioner.condition_and_uncondition(batch)
        condition = self._extend_condition(batch, condition, hint_latents)
        uncondition = self._extend_condition(batch, uncondition, hint_latents)
        if condition_latent is not None:
            condition, uncondition = self._conditioned_on_latent(condition, uncondition, condition_latent, shape)

        objective = self.objective
        overrides = {k: v for k, v in (("sigma_max", sigma_max), ("sigma_min", sigma_min)) if v is not None}
        if overrides and not isinstance(objective, EDMObjective):
            raise ValueError(
                f"DiffusionModel.generate_samples: {', '.join(overrides)} set, but only the EDM objective has them "
                f"(this model uses {type(objective).__name__})"
            )
        generator = torch.Generator().manual_seed(seed)
        x_T = objective.initial_noise(shape, generator, **overrides).to(self.device)
        levels = objective.sampling_levels(num_steps, self.device, **overrides)

        def guided(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
            cond = self.predict(x, level, condition, x_T, sampling=True)
            if guidance == 0:
                return cond
            uncond = self.predict(x, level, uncondition, x_T, sampling=True)
            return cond + guidance * (cond - uncond)

        return objective.sample(guided, x_T, levels, method=sampler)

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
    def tokens_per_step(self, batch: dict) -> int:
        """Transformer tokens of `batch`: samples x latent frames / patch_temporal x the latent's patches."""
        b, _, t, h, w = self.latent_shape(batch)
        pt, ps = getattr(self.net, "patch_temporal", 1), self.net.patch_spatial
        return b * (t // pt) * (h // ps) * (w // ps)

    def flops_per_step(self, batch: dict) -> float:
        """FLOPs of one training step (forward + backward) of the network on `batch`, for MFU."""
        from cosmos_transfer import flops

        text_length = batch["t5_text_embeddings"].shape[1]
        return float(flops.dit_training_step_flops(self.net, self.latent_shape(batch), text_length))

    def extra_repr(self) -> str:
        return (f"objective={type(self.objective).__name__}, sigma_data={self.sigma_data}, p_mean={self.p_mean}, "
                f"p_std={self.p_std}, adjust_video_noise={self.adjust_video_noise}, video2world={self.video2world}")


def _to_device(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _checked_frame_probs(probs: dict[int, float] | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """{latent frames: probability} -> (counts, probabilities) tensors, or a clear error."""
    if probs is None:
        return None
    message = ("DiffusionModel: condition_frame_probs must map numbers of latent frames (ints >= 0) to probabilities "
               f"(>= 0, summing to 1), e.g. {{0: 0.4, 1: 0.4, 2: 0.2}}; got {probs!r}")
    if not isinstance(probs, dict) or not probs:
        raise ValueError(message)
    counts, weights = [], []
    for count, weight in probs.items():
        count = int(count) if isinstance(count, str) and count.isdigit() else count
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(message)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
            raise ValueError(message)
        counts.append(count)
        weights.append(float(weight))
    if not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
        raise ValueError(message)
    # On the CPU (where the draws are made), also when the model is built under torch.device("meta").
    return torch.tensor(counts, device="cpu"), torch.tensor(weights, dtype=torch.float64, device="cpu")

