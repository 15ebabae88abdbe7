"""Flow-matching samplers on a known 1-D Gaussian target, and REPA's Euler–Maruyama scheduler."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from d2c_hf.schedulers.scheduling_flow_match_euler_maruyama import FlowMatchEulerMaruyamaScheduler
from helpers_sit import gaussian_velocity

MU, S = 3.0, 0.5
N_SAMPLES = 100_000
# standard errors of the sample mean and std of 100k draws from N(3, 0.5^2): 0.0016 and 0.0011
MEAN_TOL = 0.01


def _sample(scheduler, num_steps: int, seed: int = 0, **step_kwargs) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(N_SAMPLES, generator=generator)
    scheduler.set_timesteps(num_steps)
    for t in scheduler.timesteps:
        sigma = float(t) / scheduler.config.num_train_timesteps
        v = gaussian_velocity(x.double(), sigma, MU, S).float()
        extra = {"generator": generator} if step_kwargs.get("stochastic") else {}
        x = scheduler.step(v, t, x, **extra).prev_sample
    return x


def test_euler_maps_noise_to_gaussian_target():
    x = _sample(FlowMatchEulerDiscreteScheduler(), 250)
    assert abs(x.mean().item() - MU) < MEAN_TOL
    # Euler is O(1/N) biased towards a smaller spread (hf-ecosystem.md §2: 0.4968 at 250 steps)
    assert 0.490 < x.std().item() < 0.5 + 0.004


def test_euler_few_steps_shows_first_order_bias():
    # the known first-order contraction of Euler at 10 steps (hf-ecosystem.md §2: std 0.4239)
    assert abs(_sample(FlowMatchEulerDiscreteScheduler(), 10).std().item() - 0.4239) < 0.004


def test_heun_maps_noise_to_gaussian_target():
    x = _sample(FlowMatchHeunDiscreteScheduler(), 50)
    assert abs(x.mean().item() - MU) < MEAN_TOL
    assert abs(x.std().item() - S) < 0.006  # second order: no visible bias at 50 steps (99 model calls)


def _sde_limit_std(last_sigma: float = 0.04, c: float = 2.0) -> float:
    """Std after the final mean step applied to the exact marginal at ``last_sigma`` (the N -> inf limit).

    At sigma the marginal is N(a mu, a^2 s^2 + sigma^2), a = 1 - sigma. v = alpha x + beta is affine with
    alpha = (sigma - a s^2) / var, and the mean step x - sigma [(1 + c/2 a) v + c/2 x] is affine in x.
    """
    a = 1.0 - last_sigma
    var = a * a * S * S + last_sigma**2
    alpha = (last_sigma - a * S * S) / var
    slope = 1.0 - last_sigma * ((1.0 + 0.5 * c * a) * alpha + 0.5 * c)
    return abs(slope) * math.sqrt(var)


def test_sde_maps_noise_to_gaussian_target():
    limit = _sde_limit_std()
    assert abs(limit - 0.4950) < 1e-3  # REPA's 0.04 mean step slightly shrinks the spread
    x = _sample(FlowMatchEulerMaruyamaScheduler(), 250, stochastic=True)
    assert abs(x.mean().item() - MU) < MEAN_TOL
    assert abs(x.std().item() - limit) < 0.005
    assert abs(x.std().item() - S) / S < 0.02


def test_sde_without_noise_or_score_is_euler():
    sde = FlowMatchEulerMaruyamaScheduler(diffusion_coefficient=0.0)
    euler = FlowMatchEulerDiscreteScheduler()
    x_sde = _sample(sde, 20)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, generator=generator)
    sigmas = np.linspace(1.0, 0.04, 20)
    euler.set_timesteps(sigmas=sigmas)
    for t in euler.timesteps:
        x = euler.step(gaussian_velocity(x.double(), float(t) / 1000).float(), t, x).prev_sample
    assert torch.allclose(x_sde, x, atol=1e-4)


def _repa_euler_maruyama(v_fn, x: torch.Tensor, num_steps: int, generator: torch.Generator) -> torch.Tensor:
    """REPA's ``euler_maruyama_sampler`` (linear path, w(t) = 2t), re-typed for the test with the noise drawn
    in the same order as the scheduler (one N(0, I) per stochastic step)."""
    t_steps = torch.cat(
        [torch.linspace(1.0, 0.04, num_steps, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)]
    )
    x = x.double()

    def drift(x_cur, t_cur):
        v = v_fn(x_cur, float(t_cur))
        alpha, d_alpha, sigma, d_sigma = 1 - t_cur, -1.0, t_cur, 1.0
        ratio = alpha / d_alpha
        var = sigma**2 - ratio * d_sigma * sigma
        score = (ratio * v - x_cur) / var
        return v - 0.5 * (2 * t_cur) * score

    for t_cur, t_next in itertools.pairwise(t_steps[:-1]):  # all but the last (mean) step
        dt = t_next - t_cur
        noise = torch.randn(x.shape, generator=generator).double()
        x = x + drift(x, t_cur) * dt + torch.sqrt(2 * t_cur) * torch.sqrt(dt.abs()) * noise
    t_cur, t_next = t_steps[-2], t_steps[-1]
    return x + (t_next - t_cur) * drift(x, t_cur)


def test_sde_scheduler_equals_repa_loop():
    x0 = torch.randn(512, generator=torch.Generator().manual_seed(3))
    expected = _repa_euler_maruyama(gaussian_velocity, x0, 30, torch.Generator().manual_seed(4))
    scheduler = FlowMatchEulerMaruyamaScheduler()
    scheduler.set_timesteps(30)
    generator = torch.Generator().manual_seed(4)
    x = x0.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(
            gaussian_velocity(x.double(), float(t) / 1000).float(), t, x, generator=generator
        ).prev_sample
    assert torch.allclose(x.double(), expected, atol=1e-4)


def test_sde_grid_and_final_mean_step():
    scheduler = FlowMatchEulerMaruyamaScheduler()
    scheduler.set_timesteps(5)
    assert torch.allclose(scheduler.timesteps, torch.tensor([1000.0, 760.0, 520.0, 280.0, 40.0]))
    assert torch.allclose(scheduler.sigmas, torch.tensor([1.0, 0.76, 0.52, 0.28, 0.04, 0.0]))
    # the last step is deterministic: identical result for different generators
    v, x = torch.randn(4), torch.randn(4)
    outputs = []
    for seed in (0, 1):
        scheduler.set_timesteps(5)
        scheduler.set_begin_index(4)
        outputs.append(
            scheduler.step(
                v, scheduler.timesteps[4], x, generator=torch.Generator().manual_seed(seed)
            ).prev_sample
        )
    assert torch.equal(*outputs)
    drift = v + (0.96 * v + x)  # v + c/2 ((1 - sigma) v + x) with c = 2 at sigma = 0.04
    assert torch.allclose(outputs[0], x - 0.04 * drift, atol=1e-6)
    scheduler.set_timesteps(1)  # a single model call: the mean step from sigma = 1
    assert scheduler.sigmas.tolist() == [1.0, 0.0]


def test_sde_reproducible_with_generator():
    a = _sample(FlowMatchEulerMaruyamaScheduler(), 10, seed=5, stochastic=True)
    b = _sample(FlowMatchEulerMaruyamaScheduler(), 10, seed=5, stochastic=True)
    c = _sample(FlowMatchEulerMaruyamaScheduler(), 10, seed=6, stochastic=True)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_sde_config_round_trip_and_swap(tmp_path):
    scheduler = FlowMatchEulerMaruyamaScheduler(last_step_sigma=0.05, diffusion_coefficient=1.0)
    scheduler.save_pretrained(tmp_path)
    loaded = FlowMatchEulerMaruyamaScheduler.from_pretrained(tmp_path)
    assert loaded.config.last_step_sigma == 0.05 and loaded.config.diffusion_coefficient == 1.0
    swapped = FlowMatchEulerMaruyamaScheduler.from_config(
        FlowMatchEulerDiscreteScheduler(num_train_timesteps=500).config
    )
    swapped.set_timesteps(3)
    assert swapped.timesteps[0].item() == 500.0


def test_sde_bad_input():
    with pytest.raises(ValueError, match="last_step_sigma"):
        FlowMatchEulerMaruyamaScheduler(last_step_sigma=0.0)
    with pytest.raises(ValueError, match="diffusion_coefficient"):
        FlowMatchEulerMaruyamaScheduler(diffusion_coefficient=-1.0)
    scheduler = FlowMatchEulerMaruyamaScheduler()
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(torch.zeros(2), torch.tensor(1000.0), torch.zeros(2))
    with pytest.raises(ValueError, match=">= 1"):
        scheduler.set_timesteps(0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        scheduler.set_timesteps(sigmas=[0.5, 0.9])
    scheduler.set_timesteps(2)
    with pytest.raises(ValueError, match="integer index"):
        scheduler.step(torch.zeros(2), 0, torch.zeros(2))
    with pytest.raises(ValueError, match="not one of scheduler.timesteps"):
        scheduler.step(torch.zeros(2), torch.tensor(123.0), torch.zeros(2))
    for t in scheduler.timesteps:
        scheduler.step(torch.zeros(2), t, torch.zeros(2))
    with pytest.raises(ValueError, match="set_timesteps again"):
        scheduler.step(torch.zeros(2), scheduler.timesteps[-1], torch.zeros(2))
