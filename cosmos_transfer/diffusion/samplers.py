"""Deterministic samplers for EDM-parameterized diffusion models.

Every sampler integrates the probability-flow ODE  dx/dsigma = (x - D(x, sigma)) / sigma  from sigmas[0] down to
sigmas[-1] == 0, where D is the denoiser (an x0 predictor). They are pure functions of the denoiser: classifier-free
guidance, conditioning and preconditioning all live inside it (see DiffusionModel.denoise).

Methods
- "euler": first-order. With an x0 predictor the Euler step x + (t - s) * (x - x0) / s is the exact solution of the
  ODE under a constant x0 (the DDIM step), so it is also the first step of the exponential integrator below.
- "heun":  EDM's second-order Heun method (Karras et al. 2022, algorithm 1 without churn): one Euler predictor and a
  trapezoidal corrector per step, 2 denoiser calls per step except the last one.
- "res2ab": the second-order "2ab" multistep Refined Exponential Solver (Zhang et al. 2023, arXiv:2308.02157) that
  Cosmos samples with. In log-time lambda = -log(sigma) the ODE is dx/dlambda = x0(lambda) - x; its linear part is
  integrated exactly and x0 is extrapolated linearly in lambda from the current and the previous prediction
  (Adams-Bashforth), so it costs one denoiser call per step, like Euler, but is second-order accurate.

Step into sigma == 0: every method returns the denoiser's prediction at the last non-zero sigma there (the limit of
each update as t -> 0), which is what Cosmos' final "sample_clean" call does.

Number of denoiser calls for `karras_sigmas(n, ...)` (n non-zero sigmas followed by 0): n for "euler" and "res2ab",
2n - 1 for "heun".
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SAMPLER_METHODS = ("res2ab", "euler", "heun")


def karras_sigmas(
    num_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """EDM noise levels: `num_steps` values from sigma_max down to sigma_min spaced uniformly in sigma^(1/rho),
    followed by a final 0. Returns a float64 tensor of length num_steps + 1."""
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"karras_sigmas: num_steps must be an integer >= 1, got {num_steps!r}")
    if not 0.0 < sigma_min < sigma_max:
        raise ValueError(
            f"karras_sigmas: need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
        )
    if rho <= 0:
        raise ValueError(f"karras_sigmas: rho must be > 0, got {rho}")
    if num_steps == 1:
        ramp = torch.zeros(1, dtype=torch.float64)
    else:
        ramp = torch.linspace(0.0, 1.0, num_steps, dtype=torch.float64)
    inv_rho_max = sigma_max ** (1.0 / rho)
    inv_rho_min = sigma_min ** (1.0 / rho)
    sigmas = (inv_rho_max + ramp * (inv_rho_min - inv_rho_max)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).to(device)


def _check_sigmas(sigmas: torch.Tensor) -> None:
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError("sample: sigmas must be a 1-D tensor with at least 2 values (e.g. karras_sigmas(...))")
    if not torch.isfinite(sigmas).all():
        raise ValueError(f"sample: sigmas must be finite, got {sigmas.tolist()}")
    if sigmas[-1].item() != 0.0:
        raise ValueError(f"sample: sigmas must end in 0, got last value {sigmas[-1].item()}")
    if not (sigmas[:-1] > 0).all() or not (sigmas[1:] < sigmas[:-1]).all():
        raise ValueError(
            f"sample: sigmas must be positive and strictly decreasing before the final 0, got {sigmas.tolist()}"
        )


def _check_start(who: str, method: str, methods: tuple[str, ...], x_T: torch.Tensor) -> None:
    if method not in methods:
        raise ValueError(f"{who}: unknown method {method!r}; expected one of {methods}")
    if not isinstance(x_T, torch.Tensor) or x_T.ndim < 1:
        raise ValueError(f"{who}: x_T must be a tensor with a leading batch dimension")


def _model_call(model: Callable, x_T: torch.Tensor) -> tuple[Callable, torch.dtype]:
    """(call, state dtype): call(x, sigma) runs model(x, sigma) with x in x_T's dtype and sigma (a number or a 0-d
    tensor) as a [B] tensor of that dtype, and returns the result in the solver-state dtype (float32 or better)."""
    model_dtype = x_T.dtype
    state_dtype = torch.promote_types(model_dtype, torch.float32)
    ones = torch.ones(x_T.shape[0], device=x_T.device, dtype=model_dtype)

    def call(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = sigma.to(model_dtype) if isinstance(sigma, torch.Tensor) else sigma
        return model(x.to(model_dtype), sigma * ones).to(state_dtype)

    return call, state_dtype


@torch.no_grad()
def sample(denoiser: Denoiser, x_T: torch.Tensor, *, sigmas: torch.Tensor, method: str = "res2ab",
           callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Integrate from noise x_T (already scaled: x_T ~ N(0, sigmas[0]^2) around the data) to a clean sample.

    denoiser(x, sigma) -> x0 prediction; it receives x in x_T's dtype and sigma as a [B] tensor of that dtype.
    sigmas: decreasing 1-D tensor ending in 0. The solver state is kept in at least float32 (float64 stays float64).
    callback(step_index, x, x0_pred), if given, is called after each step (for progress bars / previews).
    """
    _check_start("sample", method, SAMPLER_METHODS, x_T)
    _check_sigmas(sigmas)
    x0_of, state_dtype = _model_call(denoiser, x_T)
    sigmas = sigmas.to(device=x_T.device, dtype=torch.float64)
    step = {"euler": _euler_step, "heun": _heun_step, "res2ab": _res2ab_step}[method]
    x = x_T.to(state_dtype)
    previous: tuple[torch.Tensor, torch.Tensor] | None = None  # (x0 prediction, sigma) of the last step (res2ab)
    for i in range(sigmas.numel() - 1):
        x, x0, previous = step(x0_of, x, sigmas[i], sigmas[i + 1], previous)
        if callback is not None:
            callback(i, x, x0)
    return x.to(x_T.dtype)


def _euler_step(x0_of, x, sigma, sigma_next, previous):
    x0 = x0_of(x, sigma)
    return _x0_euler(x, x0, sigma, sigma_next), x0, None


def _x0_euler(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    # x + (sigma_next - sigma) * (x - x0) / sigma, written so that sigma_next == 0 gives x0 exactly.
    ratio = (sigma_next / sigma).item()
    return x0 + ratio * (x - x0)


def _heun_step(x0_of, x, sigma, sigma_next, previous):
    x0 = x0_of(x, sigma)
    x_euler = _x0_euler(x, x0, sigma, sigma_next)
    if sigma_next.item() == 0.0:
        return x_euler, x0, None  # EDM: no corrector into sigma = 0 (the slope there is undefined)
    slope = (x - x0) / sigma.item()
    x0_next = x0_of(x_euler, sigma_next)
    slope_next = (x_euler - x0_next) / sigma_next.item()
    x_next = x + (sigma_next - sigma).item() * 0.5 * (slope + slope_next)
    return x_next, x0_next, None


def _res2ab_step(x0_of, x, sigma, sigma_next, previous):
    x0 = x0_of(x, sigma)
    if previous is None or sigma_next.item() == 0.0:
        # First step (no history yet) and the final step into sigma = 0 are exponential-Euler steps.
        return _x0_euler(x, x0, sigma, sigma_next), x0, (x0, sigma)
    x0_prev, sigma_prev = previous
    # Log-time: lambda = -log(sigma). h > 0 is this step, c2 < 0 places the previous prediction behind it.
    h = (torch.log(sigma) - torch.log(sigma_next)).item()
    c2 = (torch.log(sigma) - torch.log(sigma_prev)).item() / h
    phi1 = -torch.expm1(torch.tensor(-h, dtype=torch.float64)).item() / h  # (1 - e^-h) / h
    phi2 = (1.0 - phi1) / h  # (e^-h - 1 + h) / h^2
    # x0(lambda) ~ x0 + (lambda - lambda_s) * (x0 - x0_prev) / (lambda_s - lambda_prev), integrated exactly:
    # x_next = e^-h x + h * [(phi1 - phi2 / c2) x0 + (phi2 / c2) x0_prev]
    weight_prev = h * phi2 / c2
    weight_now = h * phi1 - weight_prev
    x_next = (sigma_next / sigma).item() * x + weight_now * x0 + weight_prev * x0_prev
    return x_next, x0, (x0, sigma)


# ---------------------------------------------------------------------------------------------- rectified flow
# The flow ODE dx/dsigma = v(x, sigma) runs from sigma = 1 (noise) to 0 (data) along x = (1 - sigma) x0 + sigma eps,
# with v = eps - x0 predicted by the network (so x0 = x - sigma * v).
#
# - "euler": x_next = x + (sigma_next - sigma) * v (diffusers' FlowMatchEulerDiscreteScheduler step).
# - "unipc": the second-order UniPC multistep method (Zhao et al. 2023, arXiv:2302.04867) in its data-prediction,
#   B(h) = e^h - 1 ("bh2") form with lower-order warm-up and a first-order last step: NVIDIA's Cosmos-2.5
#   inference (`FlowUniPCMultistepScheduler`, solver_order=2) and diffusers' UniPCMultistepScheduler with flow
#   sigmas. Each step is a predictor (UniP) from the two latest x0 predictions and, from the second step on, a
#   corrector (UniC) of the previous predictor with the new prediction: one network call per step.
FLOW_SAMPLER_METHODS = ("unipc", "euler")

FlowVelocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def flow_sigmas(num_steps: int, shift: float = 5.0, sigma_max: float = 0.999) -> torch.Tensor:
    """NVIDIA's Cosmos-2.5 sampling schedule: `num_steps` values linspace(sigma_max, 0, num_steps + 1)[:-1], shifted
    by shift * s / (1 + (shift - 1) * s), followed by 0. sigma_max 0.999 is their scheduler's largest training sigma
    (1 - 1/1000). Returns float32 (their solver's precision) of length num_steps + 1."""
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"flow_sigmas: num_steps must be an integer >= 1, got {num_steps!r}")
    if not shift > 0:
        raise ValueError(f"flow_sigmas: shift must be > 0, got {shift!r}")
    if not 0.0 < sigma_max <= 1.0:
        raise ValueError(f"flow_sigmas: sigma_max must be in (0, 1], got {sigma_max!r}")
    s = torch.linspace(sigma_max, 0.0, num_steps + 1, dtype=torch.float64)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)]).float()


def _check_flow_sigmas(sigmas: torch.Tensor) -> None:
    _check_sigmas(sigmas)
    if sigmas[0].item() > 1.0:
        raise ValueError(f"sample_flow: flow sigmas must lie in [0, 1], got first value {sigmas[0].item()}")


@torch.no_grad()
def sample_flow(velocity: FlowVelocity, x_T: torch.Tensor, *, sigmas: torch.Tensor, method: str = "unipc",
                callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Integrate the flow ODE from x_T (pure noise at sigmas[0], unscaled: x_T ~ N(0, 1)) to sigma = 0.

    velocity(x, sigma) -> v prediction; it receives x in x_T's dtype and sigma as a [B] tensor of that dtype.
    sigmas: decreasing values in [0, 1] ending in 0 (e.g. flow_sigmas(35, 5.0)). The state is kept in float32 or
    better. callback(step_index, x, x0_pred), if given, is called after each step.
    """
    _check_start("sample_flow", method, FLOW_SAMPLER_METHODS, x_T)
    _check_flow_sigmas(sigmas)
    v_of, state_dtype = _model_call(velocity, x_T)
    sigma_values = [float(s) for s in sigmas.float()]  # the solver's coefficients use float32 sigmas, as theirs

    x = x_T.to(state_dtype)
    if method == "euler":
        for i in range(len(sigma_values) - 1):
            v = v_of(x, sigma_values[i])
            x0 = x - sigma_values[i] * v
            x = x + (sigma_values[i + 1] - sigma_values[i]) * v
            if callback is not None:
                callback(i, x, x0)
        return x.to(x_T.dtype)

    # UniPC (order 2, bh2). x0 predictions m_i at sigma_i; lambda = log((1 - sigma) / sigma) grows towards the data.
    num_steps = len(sigma_values) - 1
    history: list[torch.Tensor] = []  # x0 predictions, newest last (at most 2)
    last_x: torch.Tensor | None = None  # the sample the previous predictor started from
    last_order = 0
    for i in range(num_steps):
        x0 = x - sigma_values[i] * v_of(x, sigma_values[i])
        if i > 0:  # UniC: correct the previous predictor's result x with the new prediction x0
            x = _unic(last_x, x0, history, sigma_values, i, last_order)
        history = (history + [x0])[-2:]
        order = min(2, num_steps - i, i + 1)  # warm-up: first order first; first order into the last sigma
        last_x = x
        x = _unip(x, history, sigma_values, i, order)
        last_order = order
        if callback is not None:
            callback(i, x, x0)
    return x.to(x_T.dtype)


def _unipc_coefficients(sigma_s: float, sigma_t: float) -> tuple[float, float, float, float]:
    """(h, alpha_t, h_phi_1 = e^-h - 1, B_h) for a data-prediction step from sigma_s to sigma_t (alpha = 1 - sigma)."""
    alpha_t = 1.0 - sigma_t
    h = _lambda(sigma_t) - _lambda(sigma_s)  # inf from sigma_s = 1 (pure noise) or into sigma_t = 0
    h_phi_1 = math.expm1(-h)  # -1 in the limit h -> inf: the step then lands on sigma_t x + alpha_t x0
    return h, alpha_t, h_phi_1, h_phi_1  # bh2: B(h) = e^{-h} - 1 (in the hh = -h variable)


def _lambda(sigma: float) -> float:
    """Half log-SNR log((1 - sigma) / sigma): -inf at sigma = 1, +inf at 0."""
    if sigma >= 1.0:
        return -math.inf
    if sigma <= 0.0:
        return math.inf
    return math.log(1.0 - sigma) - math.log(sigma)


def _unip(x: torch.Tensor, history: list[torch.Tensor], sigmas: list[float], i: int, order: int) -> torch.Tensor:
    """UniP predictor from sigma_i to sigma_{i+1}; history[-1] is the x0 prediction at sigma_i."""
    sigma_s, sigma_t = sigmas[i], sigmas[i + 1]
    h, alpha_t, h_phi_1, b_h = _unipc_coefficients(sigma_s, sigma_t)
    m0 = history[-1]
    x_next = (sigma_t / sigma_s) * x - (alpha_t * h_phi_1) * m0
    if order == 2:
        r = (_lambda(sigmas[i - 1]) - _lambda(sigma_s)) / h
        d1 = (history[-2] - m0) / r
        x_next = x_next - (alpha_t * b_h * 0.5) * d1  # order 2: rho_p = 1/2
    return x_next


def _unic(x_prev: torch.Tensor, x0_new: torch.Tensor, history: list[torch.Tensor], sigmas: list[float], i: int,
          order: int) -> torch.Tensor:
    """UniC corrector of the step sigma_{i-1} -> sigma_i taken from x_prev with `order`, using the new x0 at sigma_i.
    history[-1] is the x0 prediction at sigma_{i-1} (and history[-2] at sigma_{i-2})."""
    sigma_s, sigma_t = sigmas[i - 1], sigmas[i]
    h, alpha_t, h_phi_1, b_h = _unipc_coefficients(sigma_s, sigma_t)
    m0 = history[-1]
    x_corr = (sigma_t / sigma_s) * x_prev - (alpha_t * h_phi_1) * m0
    d1_t = x0_new - m0
    if order == 1:
        return x_corr - (alpha_t * b_h * 0.5) * d1_t
    # Order 2: rho_c solves [[1, 1], [r, 1]] rho = [b1, b2] with b_k from the phi functions of hh = -h.
    hh = -h
    phi = h_phi_1 / hh - 1.0
    b1 = phi / b_h
    phi = phi / hh - 0.5
    b2 = phi * 2.0 / b_h
    r = (_lambda(sigmas[i - 2]) - _lambda(sigma_s)) / h
    rho_0 = (b1 - b2) / (1.0 - r)  # Cramer's rule on the 2x2 system
    rho_1 = b1 - rho_0
    d1 = (history[-2] - m0) / r
    return x_corr - (alpha_t * b_h) * (rho_0 * d1 + rho_1 * d1_t)
