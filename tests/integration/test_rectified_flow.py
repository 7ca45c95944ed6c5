"""Rectified flow (Cosmos-2.5) behind the objective interface: training times, noising, loss, conditioning frames,
the UniPC and Euler flow samplers (closed form on a Gaussian toy, and step for step against diffusers)."""

import math

import pytest
import torch

from cosmos_transfer.diffusion.objectives import (
    EDMObjective,
    RectifiedFlowObjective,
    shift_sigmas,
    training_sigma_table,
)
from cosmos_transfer.diffusion.samplers import flow_sigmas, sample_flow
from tests.unit.test_model import make_batch, make_model

diffusers = pytest.importorskip("diffusers", reason="diffusers (dev extra) is the oracle for the flow schedulers")


def normal_cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


# ------------------------------------------------------------------------------------------------ training times
def test_training_table_is_diffusers_flow_match_table():
    oracle = diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0)
    assert torch.equal(training_sigma_table(5.0), oracle.sigmas)


def test_training_levels_follow_nvidia_procedure_bitwise():
    # NVIDIA: u = sigmoid(randn(B)); t = scheduler.timesteps[(u * 1000).long()]; sigma = scheduler.sigmas[that index].
    objective = RectifiedFlowObjective()
    torch.manual_seed(7)
    ours = objective.draw_training_levels(64, 24, torch.device("cpu"))
    torch.manual_seed(7)
    oracle = diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0)
    index = (torch.sigmoid(torch.randn(64)) * 1000).long()
    assert torch.equal(ours, oracle.sigmas[index])


def test_training_level_distribution_matches_the_formula():
    objective = RectifiedFlowObjective(shift=5.0)
    torch.manual_seed(0)
    n = 100_000
    sigma = objective.draw_training_levels(n, 24, torch.device("cpu")).double()
    assert sigma.min() > 0 and sigma.max() <= 1
    # sigma >= shift(1 - (i+1)/1000 + 1/1000) exactly when floor(1000 u) <= i, i.e. u < (i+1)/1000:
    # P = Phi(logit((i + 1) / 1000)).
    for i in (49, 199, 499, 799, 949):
        threshold = float(shift_sigmas(torch.tensor((1000 - i) / 1000, dtype=torch.float64), 5.0))
        p = (i + 1) / 1000
        expected = normal_cdf(math.log(p / (1 - p)))
        empirical = (sigma >= threshold - 1e-7).double().mean().item()
        assert abs(empirical - expected) < 4 * math.sqrt(expected * (1 - expected) / n), (i, empirical, expected)
    # mean sigma against the formula integrated over the logit-normal density
    z = torch.linspace(-8, 8, 200_001, dtype=torch.float64)
    density = torch.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    table = training_sigma_table(5.0).double()
    values = table[(torch.sigmoid(z) * 1000).long().clamp(max=999)]
    expected_mean = torch.trapezoid(values * density, z).item()
    assert abs(sigma.mean().item() - expected_mean) < 4 * sigma.std().item() / math.sqrt(n)
    assert sigma.mean().item() > 0.7  # shift 5 puts most training at high noise (uniform times would give ~0.5)


def test_noising_target_and_loss_are_the_straight_line():
    objective = RectifiedFlowObjective()
    x0, eps = torch.randn(3, 4, 2, 2, 2), torch.randn(3, 4, 2, 2, 2)
    sigma = torch.tensor([0.0, 0.3, 1.0])
    x_t = objective.noisy(x0, eps, sigma)
    torch.testing.assert_close(x_t[0], x0[0])
    torch.testing.assert_close(x_t[2], eps[2])
    # the target is d x_t / d sigma
    delta = 1e-3
    slope = (objective.noisy(x0, eps, sigma + delta) - x_t) / delta
    torch.testing.assert_close(slope, objective.target(x0, eps), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(objective.x0_from_prediction(x_t, sigma, objective.target(x0, eps)), x0)
    v_pred = objective.target(x0, eps) + 0.1
    loss = objective.loss(v_pred, objective.target(x0, eps), sigma)
    torch.testing.assert_close(loss.total, torch.tensor(0.01))
    torch.testing.assert_close(loss.x0_mse, torch.tensor(0.01) * (sigma**2).mean())
    network_input, timestep = objective.network_input(x_t, sigma)
    assert network_input is x_t and torch.equal(timestep, sigma * 1000)
    assert torch.equal(objective.network_input(x_t, torch.tensor([0.9995]), sampling=True)[1], torch.tensor([999.0]))


@pytest.mark.parametrize("kwargs", [{"shift": 0}, {"shift": "5"}, {"time_distribution": "normal"}])
def test_bad_settings_are_named(kwargs):
    with pytest.raises(ValueError, match="RectifiedFlowObjective"):
        RectifiedFlowObjective(**kwargs)


# ------------------------------------------------------------------------------------------ conditioning frames
def test_condition_frame_probabilities():
    model = make_model(video2world=True, condition_frame_probs={0: 0.4, 1: 0.4, 2: 0.2})
    torch.manual_seed(0)
    n = 20_000
    counts = model._draw_condition_frame_counts(n, 24)
    for frames, p in ((0, 0.4), (1, 0.4), (2, 0.2)):
        share = (counts == frames).double().mean().item()
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n), (frames, share)
    # one latent frame only: nothing can be conditioned (always a frame to generate)
    assert model._draw_condition_frame_counts(100, 1).max() == 0


@pytest.mark.parametrize("probs", [{0: 0.5, 1: 0.4}, {-1: 1.0}, {0: -0.5, 1: 1.5}, {1.5: 1.0}, {}, [0.4, 0.6]])
def test_bad_condition_frame_probabilities_are_named(probs):
    with pytest.raises(ValueError, match="condition_frame_probs"):
        make_model(video2world=True, condition_frame_probs=probs)


# --------------------------------------------------------------------------------------- the model with the flow
def test_flow_training_step_is_the_velocity_mse_and_conditioning_frames_add_no_loss():
    model = make_model(video2world=True, objective=RectifiedFlowObjective(), condition_frame_probs={2: 1.0})
    assert not hasattr(model, "logvar") and model.sigma_data == 1.0
    batch = make_batch(frames=4)
    torch.manual_seed(3)
    loss, metrics = model.training_step(batch)
    # replay the same draws by hand
    torch.manual_seed(3)
    x0 = model.encode(batch["video"])
    condition = model.with_condition_frames(model.conditioner(batch), x0, torch.multinomial(
        torch.tensor([1.0], dtype=torch.float64), 2, replacement=True) * 0 + 2)
    sigma = model.objective.draw_training_levels(2, 4, x0.device)
    eps = torch.randn_like(x0)
    x_t = (1 - sigma.view(-1, 1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1, 1) * eps
    v = model.predict(x_t, sigma, condition, eps)
    torch.testing.assert_close(v[:, :, :2], (eps - x0)[:, :, :2])  # exact velocity on the two clean frames
    expected = ((v - (eps - x0)) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    assert metrics["loss"] == loss.detach() and "logvar" not in metrics
    # the network saw x_t (unscaled) with clean frames in place, and 1000 * sigma as timesteps
    seen = model.net.inputs[-1]
    torch.testing.assert_close(seen["timesteps"], sigma * 1000)
    torch.testing.assert_close(seen["x"][:, :-1, :2], x0[:, :, :2])
    torch.testing.assert_close(seen["x"][:, :-1, 2:], x_t[:, :, 2:])


def test_flow_generate_samples_both_methods_and_nvidia_integer_timesteps():
    model = make_model(video2world=False, objective=RectifiedFlowObjective())
    batch = make_batch(frames=2)
    model.net.inputs.clear()
    unipc = model.generate_samples(batch, num_steps=4, guidance=2.0, seed=1)
    timesteps = torch.stack([r["timesteps"][0] for r in model.net.inputs[::2]])
    expected = (flow_sigmas(4, 5.0)[:-1].double() * 1000).floor().float()
    assert torch.equal(timesteps, expected)
    euler = model.generate_samples(batch, num_steps=4, guidance=2.0, seed=1, sampler="euler")
    assert unipc.shape == euler.shape == model.latent_shape(batch) and torch.isfinite(unipc).all()
    assert not torch.equal(unipc, euler)
    with pytest.raises(ValueError, match="only the EDM objective"):
        model.generate_samples(batch, num_steps=2, sigma_max=80.0)
    with pytest.raises(ValueError, match="unknown method"):
        model.generate_samples(batch, num_steps=2, sampler="res2ab")


def test_explicit_edm_objective_equals_the_default():
    default, explicit = make_model(), make_model(objective=EDMObjective())
    batch = make_batch()
    torch.manual_seed(0)
    a, _ = default.training_step(batch)
    torch.manual_seed(0)
    b, _ = explicit.training_step(batch)
    assert torch.equal(a, b)
    assert torch.equal(default.generate_samples(batch, num_steps=3, seed=2),
                       explicit.generate_samples(batch, num_steps=3, seed=2))


# -------------------------------------------------------------------------------------------------- the samplers
def gaussian_velocity(mu: torch.Tensor, a: torch.Tensor):
    """Exact flow velocity E[eps - x0 | x_t] for data x0 ~ N(mu, a^2) (per element) and eps ~ N(0, 1)."""

    def velocity(x, sigma):
        s = sigma.double().view(-1, *([1] * (x.ndim - 1)))
        x = x.double()
        variance = (1 - s) ** 2 * a**2 + s**2
        centered = x - (1 - s) * mu
        e_x0 = mu + (1 - s) * a**2 / variance * centered
        e_eps = s / variance * centered
        return e_eps - e_x0

    return velocity


def trajectory_error(method, steps, shift, seed=0):
    """Largest distance between the sampler's states and the exact flow ODE solution of a Gaussian.

    Data x0 ~ N(mu, a^2) per element: the ODE from noise z stays on x(s) = (1 - s) mu + sqrt((1-s)^2 a^2 + s^2) z
    (the marginal-preserving monotone map). The last step into sigma = 0 lands on the x0 prediction, as every flow
    sampler does, so the states up to the last non-zero sigma are compared."""
    generator = torch.Generator().manual_seed(seed)
    mu = torch.randn(1, 8, dtype=torch.float64, generator=generator)
    a = 0.5 + torch.rand(1, 8, dtype=torch.float64, generator=generator)
    z = torch.randn(4, 8, dtype=torch.float64, generator=generator)
    sigmas = flow_sigmas(steps, shift, sigma_max=1.0).double()
    errors = []

    def record(i, x, x0):
        s = float(sigmas[i + 1])
        if s > 0:
            exact = (1 - s) * mu + ((1 - s) ** 2 * a**2 + s**2).sqrt() * z
            errors.append((x - exact).abs().max().item())

    out = sample_flow(gaussian_velocity(mu, a), z, sigmas=sigmas, method=method, callback=record)
    return max(errors), out


@pytest.mark.parametrize("method,steps,tolerance", [("unipc", 35, 3e-2), ("euler", 400, 2e-2)])
def test_samplers_follow_the_exact_gaussian_flow(method, steps, tolerance):
    error, out = trajectory_error(method, steps, 5.0)
    assert error < tolerance and torch.isfinite(out).all()


def test_unipc_converges_faster_than_euler():
    unipc = {n: trajectory_error("unipc", n, 1.0)[0] for n in (10, 20, 40)}
    euler = {n: trajectory_error("euler", n, 1.0)[0] for n in (10, 20)}
    assert unipc[10] < euler[10] / 3
    assert euler[10] / euler[20] < 2.5  # first order: halving the step about halves the error
    assert unipc[20] / unipc[40] > 2.5 and unipc[10] / unipc[20] > 2.5  # higher order than Euler


def run_diffusers(scheduler, velocity, x, sigmas, integer_timesteps=True):
    """diffusers' scheduler steps on our sigmas (NVIDIA's schedule): the step maths compared, not the tables."""
    scheduler.sigmas = sigmas.clone()
    timesteps = sigmas[:-1].double() * 1000
    scheduler.timesteps = timesteps.long() if integer_timesteps else timesteps.float()
    scheduler._step_index = None
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(velocity(x, torch.full((x.shape[0],), float(sigmas[i]))), t, x, return_dict=False)[0]
    return x


def toy_velocity():
    torch.manual_seed(0)
    drift = torch.randn(2, 3, 4)
    return lambda x, s: torch.tanh(x) * 0.7 + drift * s.view(-1, 1, 1)


@pytest.mark.parametrize("sigma_max", [0.999, 1.0])
def test_unipc_steps_equal_diffusers_unipc(sigma_max):
    velocity, x_T = toy_velocity(), torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(5))
    for steps in (1, 2, 3, 8):
        sigmas = flow_sigmas(steps, 5.0, sigma_max=sigma_max)
        oracle = diffusers.UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=5.0,
                                                   prediction_type="flow_prediction", solver_order=2,
                                                   solver_type="bh2", lower_order_final=True, final_sigmas_type="zero")
        oracle.set_timesteps(steps)
        expected = run_diffusers(oracle, velocity, x_T.clone(), sigmas)
        torch.testing.assert_close(sample_flow(velocity, x_T, sigmas=sigmas, method="unipc"), expected,
                                   atol=1e-5, rtol=1e-5)


def test_euler_steps_equal_diffusers_flow_match_euler():
    velocity, x_T = toy_velocity(), torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(5))
    sigmas = flow_sigmas(6, 5.0)
    oracle = diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0)
    oracle.set_timesteps(6)
    expected = run_diffusers(oracle, velocity, x_T.clone(), sigmas, integer_timesteps=False)
    torch.testing.assert_close(sample_flow(velocity, x_T, sigmas=sigmas, method="euler"), expected)


def test_schedule_is_nvidias_formula():
    # NVIDIA's FlowUniPCMultistepScheduler.set_timesteps: linspace(0.999, 0, n + 1)[:-1], shifted, then 0.
    for n, shift in ((35, 5.0), (4, 3.0)):
        s = torch.linspace(0.999, 0.0, n + 1, dtype=torch.float64)[:-1]
        expected = torch.cat([shift * s / (1 + (shift - 1) * s), torch.zeros(1, dtype=torch.float64)]).float()
        assert torch.equal(flow_sigmas(n, shift), expected)
    for bad in ({"num_steps": 0}, {"num_steps": 3, "shift": 0.0}, {"num_steps": 3, "sigma_max": 1.5}):
        with pytest.raises(ValueError, match="flow_sigmas"):
            flow_sigmas(**bad)
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        sample_flow(lambda x, s: x, torch.zeros(1, 2), sigmas=torch.tensor([2.0, 1.0, 0.0]))


def test_flow_training_lowers_the_loss():
    model = make_model(video2world=True, objective=RectifiedFlowObjective(),
                       condition_frame_probs={0: 0.4, 1: 0.4, 2: 0.2})
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-2)
    batch = make_batch(frames=4)
    torch.manual_seed(0)
    losses = []
    for _ in range(60):
        loss, _ = model.training_step(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        model.net.inputs.clear()
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10, losses


def test_objective_must_be_an_objective():
    with pytest.raises(TypeError, match="objective must be a DiffusionObjective"):
        make_model(objective="rectified_flow")


def test_high_sigma_strategy():
    objective = RectifiedFlowObjective(high_sigma_ratio=0.05)
    torch.manual_seed(0)
    n = 40_000
    sigma = objective.draw_training_levels(n, 24, torch.device("cpu"))
    # NVIDIA: mask = rand < ratio; timestep drawn uniformly from the table entries in [980, 1000]
    torch.manual_seed(0)
    oracle = diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0)
    index = (torch.sigmoid(torch.randn(n)) * 1000).long()
    mask = torch.rand(n) < 0.05
    candidates = torch.nonzero((oracle.timesteps >= 980) & (oracle.timesteps <= 1000)).flatten()
    index = torch.where(mask, candidates[torch.randint(0, len(candidates), (n,))], index)
    assert torch.equal(sigma, oracle.sigmas[index])
    assert 0.04 < mask.double().mean() < 0.06 and (sigma[mask] >= 0.98).all()
    with pytest.raises(ValueError, match="high_sigma_ratio"):
        RectifiedFlowObjective(high_sigma_ratio=1.5)
