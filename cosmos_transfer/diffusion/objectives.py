"""Training objectives behind one interface: EDM (Cosmos-1.0, Transfer1) and rectified flow (Cosmos-2.5).

A model asks its objective five things and nothing else about the maths:

    level  = objective.draw_training_levels(batch_size, num_latent_frames, device)   # noise level per sample [B]
    x_t    = objective.noisy(x0, epsilon, level)                                       # the network's noisy input
    net_in, net_t = objective.network_input(x_t, level)                                # scaled input, timestep [B]
    pred   = objective.prediction(x_t, level, net_output)                              # x0 (EDM) or velocity (flow)
    loss   = objective.loss(pred, objective.target(x0, epsilon), level, logvar)

plus, for sampling, `sampling_levels(num_steps)`, `initial_noise(shape, generator)` and `sample(fn, x_T, levels,
method)`, where fn(x, level) returns guided predictions of the objective's kind. Conditioning frames (video2world)
are handled by `clean_frames_input` (what the network sees for a clean frame) and `clean_frames_prediction` (the
exact prediction substituted there, so the frames add no loss and follow the ground truth while sampling).

EDM: level = sigma, x_t = x0 + sigma * eps, prediction = x0 (preconditioned, see edm.py), target = x0.
Rectified flow (NVIDIA's Cosmos-Predict2.5/Transfer2.5 `RectifiedFlow` with diffusers' `FlowMatchEulerDiscrete`
table): level = sigma in [0, 1], x_t = (1 - sigma) * x0 + sigma * eps, prediction = velocity v = eps - x0, target v,
uniform loss weight, network timestep = 1000 * sigma (the 2.5 net multiplies it by its timestep_scale 0.001).
Training sigmas are NVIDIA's: u ~ logit-normal (sigmoid of N(0,1)), mapped to the shifted 1000-entry table
sigma_i = shift * s_i / (1 + (shift - 1) * s_i), s_i = (1000 - i) / 1000, at i = floor(1000 u).
"""

from __future__ import annotations

import abc
import math

import torch

from cosmos_transfer.diffusion import edm


class DiffusionObjective(abc.ABC):
    """What a diffusion model needs from its training objective (see the module docstring)."""

    #: "x0" (EDM) or "velocity" (rectified flow): the kind of tensor `prediction` returns.
    prediction_kind: str
    #: the factor the tokenizer's normalized latents are multiplied by before noising (EDM: sigma_data 0.5).
    data_scale: float
    #: the name of its weighted MSE in the training metrics (metrics.jsonl, TensorBoard).
    loss_name: str

    @abc.abstractmethod
    def draw_training_levels(self, batch_size: int, num_latent_frames: int, device: torch.device) -> torch.Tensor:
        """Noise levels of one training batch, float32 [batch_size], drawn from the global RNG on the CPU."""

    @abc.abstractmethod
    def noisy(self, x0: torch.Tensor, epsilon: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The noisy latents x_t at per-sample levels [B]."""

    @abc.abstractmethod
    def target(self, x0: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
        """What `prediction` should equal for (x0, epsilon)."""

    @abc.abstractmethod
    def network_input(self, x_t: torch.Tensor, level: torch.Tensor, sampling: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(network input [B,C,T,H,W], network timestep [B]) for x_t at levels [B] (sampling: at inference)."""

    @abc.abstractmethod
    def clean_frames_input(self, x0: torch.Tensor) -> torch.Tensor:
        """What the network sees in place of clean conditioning frames x0."""

    @abc.abstractmethod
    def prediction(self, x_t: torch.Tensor, level: torch.Tensor, net_output: torch.Tensor) -> torch.Tensor:
        """The objective's prediction (x0 or velocity) from the network's raw output."""

    @abc.abstractmethod
    def clean_frames_prediction(self, x0: torch.Tensor, epsilon: torch.Tensor | None) -> torch.Tensor:
        """The exact prediction on clean conditioning frames x0 (epsilon: the noise of this sample/trajectory)."""

    @abc.abstractmethod
    def x0_from_prediction(self, x_t: torch.Tensor, level: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """x0 implied by a prediction at x_t (for logging and previews)."""

    @abc.abstractmethod
    def loss(self, prediction, target, level, logvar=None) -> edm.EDMLoss:
        """Loss terms (total, mse, x0_mse) of one batch."""

    @abc.abstractmethod
    def sampling_levels(self, num_steps: int, device=None, **overrides) -> torch.Tensor:
        """Decreasing noise levels for sampling, ending in 0."""

    @abc.abstractmethod
    def initial_noise(self, shape: tuple[int, ...], generator: torch.Generator, **overrides) -> torch.Tensor:
        """x_T at the first sampling level (float32, drawn on the CPU from `generator`)."""

    @abc.abstractmethod
    def sample(self, fn, x_T: torch.Tensor, levels: torch.Tensor, method: str | None = None) -> torch.Tensor:
        """Integrate from x_T to clean latents; fn(x, level [B]) -> guided prediction."""


# ----------------------------------------------------------------------------------------------------------- EDM
class EDMObjective(DiffusionObjective):
    """EDM as Cosmos-1.0 trains and samples it (the functions in edm.py and samplers.py).

    p_mean, p_std: lognormal training sigmas; adjust_video_noise: times sqrt(latent frames);
    sigma_max, sigma_min, rho: Karras sampling schedule; default_method: "res2ab" as Cosmos samples.
    """

    prediction_kind = "x0"
    loss_name = "edm_loss"  # as Cosmos-1.0 logs it

    def __init__(self, *, sigma_data: float = edm.SIGMA_DATA, p_mean: float = 0.0, p_std: float = 1.0,
                 adjust_video_noise: bool = True, sigma_max: float = 70.0, sigma_min: float = 0.002,
                 rho: float = 7.0, default_method: str = "res2ab"):
        if sigma_data <= 0 or sigma_min <= 0 or sigma_max <= sigma_min:
            raise ValueError(
                f"EDMObjective: need sigma_data > 0 and 0 < sigma_min < sigma_max, got sigma_data={sigma_data}, "
                f"sigma_min={sigma_min}, sigma_max={sigma_max}"
            )
        self.sigma_data = sigma_data
        self.data_scale = sigma_data
        self.p_mean, self.p_std = p_mean, p_std
        self.adjust_video_noise = adjust_video_noise
        self.sigma_max, self.sigma_min, self.rho = sigma_max, sigma_min, rho
        self.default_method = default_method

    def draw_training_levels(self, batch_size, num_latent_frames, device):
        multiplier = edm.video_noise_multiplier(num_latent_frames) if self.adjust_video_noise else 1.0
        return edm.sample_sigma(batch_size, p_mean=self.p_mean, p_std=self.p_std, multiplier=multiplier,
                                device=device)

    def noisy(self, x0, epsilon, level):
        return x0 + level.view(-1, 1, 1, 1, 1) * epsilon

    def target(self, x0, epsilon):
        return x0

    def network_input(self, x_t, level, sampling=False):
        _, _, c_in, c_noise = edm.preconditioning(level, self.sigma_data)
        return c_in.view(-1, 1, 1, 1, 1) * x_t, c_noise.view(-1)

    def clean_frames_input(self, x0):
        # Cosmos feeds clean frames scaled by c_in(sigma = 0.001) (its inference setting); the weights expect it.
        return (1.0 / math.sqrt(CONDITION_FRAME_SIGMA**2 + self.sigma_data**2)) * x0

    def prediction(self, x_t, level, net_output):
        c_skip, c_out, _, _ = (c.view(-1, 1, 1, 1, 1) for c in edm.preconditioning(level, self.sigma_data))
        return c_skip * x_t + c_out * net_output

    def clean_frames_prediction(self, x0, epsilon):
        return x0

    def x0_from_prediction(self, x_t, level, prediction):
        return prediction

    def loss(self, prediction, target, level, logvar=None):
        return edm.edm_loss(prediction, target, level, logvar, sigma_data=self.sigma_data)

    def sampling_levels(self, num_steps, device=None, *, sigma_max=None, sigma_min=None):
        from cosmos_transfer.diffusion.samplers import karras_sigmas

        sigma_max = self.sigma_max if sigma_max is None else sigma_max
        sigma_min = self.sigma_min if sigma_min is None else sigma_min
        return karras_sigmas(num_steps, sigma_min, sigma_max, self.rho).to(device)

    def initial_noise(self, shape, generator, *, sigma_max=None, sigma_min=None):
        sigma_max = self.sigma_max if sigma_max is None else sigma_max
        return torch.randn(shape, generator=generator, dtype=torch.float32) * sigma_max

    def sample(self, fn, x_T, levels, method=None):
        from cosmos_transfer.diffusion.samplers import sample

        return sample(fn, x_T, sigmas=levels, method=method or self.default_method)


# Noise level at which EDM presents clean conditioning frames to the network (c_in(0.001), Cosmos' setting).
CONDITION_FRAME_SIGMA = 0.001


# ---------------------------------------------------------------------------------------------- rectified flow
NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The timestep shift of SD3/Wan/Cosmos-2.5: sigma -> shift * sigma / (1 + (shift - 1) * sigma)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def training_sigma_table(shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The 1000 training sigmas, descending from 1 (diffusers' FlowMatchEulerDiscreteScheduler(shift).sigmas,
    which NVIDIA's RectifiedFlow indexes): float32 shift(s_i), s_i = (N - i) / N."""
    # On the CPU always: the training draws index it there, also when the model is built under torch.device("meta").
    steps = torch.linspace(1, num_train_timesteps, num_train_timesteps, dtype=torch.float32, device="cpu").flip(0)
    return shift_sigmas(steps / num_train_timesteps, shift)


class RectifiedFlowObjective(DiffusionObjective):
    """Rectified flow with NVIDIA's Cosmos-2.5 settings.

    shift: timestep shift of the training table and of the sampling schedule (5).
    time_distribution: "logitnormal" (sigmoid(N(0,1)), NVIDIA's 2.5 setting) or "uniform".
    conditional_frame_timestep: the network timestep (in [0, 1] units) of clean conditioning frames, or None to
        give them the sample's timestep (NVIDIA's training default, -1 there); diffusers' 2.5 pipeline uses 1e-4.
    default_method: "unipc" (NVIDIA's FlowUniPCMultistepScheduler, order 2, bh2) or "euler".
    integer_inference_timesteps: give the network floor(1000 sigma) while sampling, as NVIDIA's UniPC scheduler's
        int64 timesteps do (the solver itself uses the exact sigmas).
    high_sigma_ratio, high_sigma_timesteps: NVIDIA's "high sigma strategy" (on for the Transfer2.5-14B experiment:
        0.05, timesteps 980..1000; off for the 2B): that share of the batch gets a table timestep drawn uniformly
        from the range instead.
    """

    prediction_kind = "velocity"
    loss_name = "flow_loss"
    data_scale = 1.0  # Wan latents are normalized per channel to unit scale; no sigma_data

    def __init__(self, *, shift: float = 5.0, time_distribution: str = "logitnormal",
                 conditional_frame_timestep: float | None = None, default_method: str = "unipc",
                 integer_inference_timesteps: bool = True, high_sigma_ratio: float = 0.0,
                 high_sigma_timesteps: tuple[float, float] = (980.0, 1000.0)):
        if not (isinstance(shift, (int, float)) and shift > 0):
            raise ValueError(f"RectifiedFlowObjective: shift must be a positive number, got {shift!r}")
        if time_distribution not in ("logitnormal", "uniform"):
            raise ValueError(
                f"RectifiedFlowObjective: time_distribution must be 'logitnormal' or 'uniform', got {time_distribution!r}"
            )
        self.shift = float(shift)
        self.time_distribution = time_distribution
        self.conditional_frame_timestep = conditional_frame_timestep
        self.default_method = default_method
        self.integer_inference_timesteps = integer_inference_timesteps
        self.sigma_table = training_sigma_table(self.shift)
        if not 0.0 <= high_sigma_ratio <= 1.0:
            raise ValueError(f"RectifiedFlowObjective: high_sigma_ratio must be in [0, 1], got {high_sigma_ratio!r}")
        low, high = high_sigma_timesteps
        timesteps = self.sigma_table * NUM_TRAIN_TIMESTEPS
        self.high_sigma_indices = torch.nonzero((timesteps >= low) & (timesteps <= high)).flatten()
        if high_sigma_ratio > 0 and self.high_sigma_indices.numel() == 0:
            raise ValueError(f"RectifiedFlowObjective: no training timestep lies in high_sigma_timesteps={high_sigma_timesteps}")
        self.high_sigma_ratio = float(high_sigma_ratio)

    def draw_training_levels(self, batch_size, num_latent_frames, device):
        normal_or_uniform = (torch.randn(batch_size) if self.time_distribution == "logitnormal"
                             else torch.rand(batch_size))
        u = torch.sigmoid(normal_or_uniform) if self.time_distribution == "logitnormal" else normal_or_uniform
        index = (u * NUM_TRAIN_TIMESTEPS).long().clamp(max=NUM_TRAIN_TIMESTEPS - 1)
        if self.high_sigma_ratio > 0:
            replace = torch.rand(batch_size) < self.high_sigma_ratio
            candidates = self.high_sigma_indices
            index = torch.where(replace, candidates[torch.randint(0, candidates.numel(), (batch_size,))], index)
        return self.sigma_table[index].to(device)

    def noisy(self, x0, epsilon, level):
        sigma = level.view(-1, 1, 1, 1, 1)
        return epsilon * sigma + x0 * (1 - sigma)

    def target(self, x0, epsilon):
        return epsilon - x0

    def network_timestep(self, level: torch.Tensor, sampling: bool = False) -> torch.Tensor:
        """1000 * sigma; while sampling floor(1000 * sigma) when integer_inference_timesteps (NVIDIA's int64)."""
        if sampling and self.integer_inference_timesteps:
            return (level.double() * NUM_TRAIN_TIMESTEPS).floor().to(level.dtype)
        return level * NUM_TRAIN_TIMESTEPS

    def network_input(self, x_t, level, sampling=False):
        return x_t, self.network_timestep(level, sampling)

    def clean_frames_input(self, x0):
        return x0

    def prediction(self, x_t, level, net_output):
        return net_output

    def clean_frames_prediction(self, x0, epsilon):
        if epsilon is None:
            raise ValueError("RectifiedFlowObjective: conditioning frames need the trajectory's noise (epsilon)")
        return epsilon - x0

    def x0_from_prediction(self, x_t, level, prediction):
        return x_t - level.view(-1, 1, 1, 1, 1) * prediction

    def loss(self, prediction, target, level, logvar=None):
        """Uniform-weight velocity MSE (NVIDIA's TrainTimeWeight "uniform"); logvar is not used by this objective."""
        if prediction.shape != target.shape:
            raise ValueError(f"flow loss: prediction shape {tuple(prediction.shape)} != target {tuple(target.shape)}")
        batch = target.shape[0]
        per_sample = ((prediction.float() - target.float()) ** 2).reshape(batch, -1).mean(dim=1)
        # x0 error implied by the velocity error: x0_hat - x0 = -sigma * (v_hat - v)
        x0_error = per_sample * level.float().reshape(batch) ** 2
        mse = per_sample.mean()
        return edm.EDMLoss(total=mse, mse=mse, x0_mse=x0_error.mean())

    def sampling_levels(self, num_steps, device=None, *, shift=None):
        from cosmos_transfer.diffusion.samplers import flow_sigmas

        return flow_sigmas(num_steps, self.shift if shift is None else shift).to(device)

    def initial_noise(self, shape, generator, **overrides):
        return torch.randn(shape, generator=generator, dtype=torch.float32)  # sigma = 1: pure noise

    def sample(self, fn, x_T, levels, method=None):
        from cosmos_transfer.diffusion.samplers import sample_flow

        return sample_flow(fn, x_T, sigmas=levels, method=method or self.default_method)
