# Copyright 2025 The d2c-hf authors. Apache-2.0.
"""REPA's Euler–Maruyama SDE sampler as a diffusers scheduler (the sampler behind REPA's FID 1.42).

Flow-matching convention (REPA's linear path, diffusers' ``FlowMatchEulerDiscreteScheduler``)::

    x_sigma = (1 - sigma) x_0 + sigma eps,       the model predicts v = eps - x_0

For this path the score follows from the velocity: ``E[eps | x] = (1 - sigma) v + x``, so

    score(x, sigma) = -((1 - sigma) v + x) / sigma

and the reverse-time SDE integrated from sigma = 1 (noise) to 0 (data), with diffusion ``w(sigma) = c sigma``, is

    dx = [v - 1/2 w(sigma) score] dsigma + sqrt(w(sigma)) dW
       = [v + c/2 ((1 - sigma) v + x)] dsigma + sqrt(c sigma) dW            (dsigma < 0)

REPA's released code (``samplers.py``: ``compute_diffusion(t) = 2 * t``) uses ``c = 2``; the paper writes
``w = sigma`` (``c = 1``; the author called that a typo, REPA issue #52). Its grid is
``linspace(1, last_step_sigma=0.04, N)`` followed by 0: N - 1 Euler–Maruyama steps

    x <- x + drift * dsigma + sqrt(w(sigma)) sqrt(|dsigma|) z,     z ~ N(0, I)

and a final deterministic *mean* step from 0.04 to 0 (``x <- x + drift * dsigma``), N model calls in total.

Classifier-free guidance: the drift is affine in ``v`` with the same ``x`` for the conditional and null
branches, so guiding ``v`` (as :class:`~d2c_hf.pipelines.sit.pipeline_sit.SiTPipeline` does) is exactly REPA's
guidance of the combined drift.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

__all__ = ["FlowMatchEulerDiscreteSchedulerOutput", "FlowMatchEulerMaruyamaScheduler"]


class FlowMatchEulerMaruyamaScheduler(SchedulerMixin, ConfigMixin):
    """Euler–Maruyama sampler of the flow-matching reverse SDE (REPA's ``euler_maruyama_sampler``).

    Drop-in for ``FlowMatchEulerDiscreteScheduler`` in a velocity-model pipeline: the model is called at
    ``timesteps = sigma * num_train_timesteps`` and :meth:`step` returns ``prev_sample``. Sampling is random;
    pass a ``torch.Generator`` (or one per sample) to :meth:`step` for reproducible results.

    Args:
        num_train_timesteps: scale of ``timesteps`` (``timestep = sigma * num_train_timesteps``), as the
            diffusers flow-matching schedulers.
        last_step_sigma: sigma at which the stochastic steps stop and the final deterministic mean step to
            sigma = 0 starts (REPA: 0.04). In ``(0, 1)``.
        diffusion_coefficient: ``c`` in the diffusion ``w(sigma) = c * sigma`` (REPA's code: 2; the paper: 1).
            ``0`` removes both the noise and the score term: the drift is ``v`` and the sampler is Euler's
            method (the probability-flow ODE) on this grid.
    """

    _compatibles: ClassVar[list[str]] = ["FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        last_step_sigma: float = 0.04,
        diffusion_coefficient: float = 2.0,
    ) -> None:
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be a positive int, got {num_train_timesteps!r}")
        if not 0.0 < last_step_sigma < 1.0:
            raise ValueError(f"last_step_sigma must be in (0, 1), got {last_step_sigma}")
        if diffusion_coefficient < 0:
            raise ValueError(f"diffusion_coefficient must be >= 0, got {diffusion_coefficient}")
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.sigmas = torch.tensor([1.0, 0.0])
        self.timesteps = self.sigmas[:-1] * num_train_timesteps
        self._sigmas_f64 = np.array([1.0, 0.0])
        self._step_index: int | None = None
        self._begin_index: int | None = None

    # -- diffusers scheduler protocol ---------------------------------------------------------------

    @property
    def step_index(self) -> int | None:
        """Index of the next step (increases by one after each :meth:`step`)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """First step index, set by a pipeline with :meth:`set_begin_index` (img2img-style starts)."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def scale_model_input(
        self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Identity (flow-matching models take ``x_sigma`` as is); kept for generic denoising loops."""
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | np.ndarray | None = None,
    ) -> None:
        """Set the sampling grid: ``linspace(1, last_step_sigma, N)`` then 0 (REPA), or explicit ``sigmas``.

        Args:
            num_inference_steps: N, the number of model calls (N - 1 stochastic steps + 1 mean step), >= 1.
            device: where ``timesteps`` and ``sigmas`` live.
            sigmas: optional strictly decreasing noise levels in ``(0, 1]`` (one per model call); 0 is appended.
                The last one is where the deterministic mean step starts.
        """
        if sigmas is None:
            if num_inference_steps is None or int(num_inference_steps) != num_inference_steps:
                raise ValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}")
            if num_inference_steps < 1:
                raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
            grid = np.linspace(1.0, self.config.last_step_sigma, int(num_inference_steps), dtype=np.float64)
        else:
            grid = np.asarray(sigmas, dtype=np.float64).reshape(-1)
            if num_inference_steps is not None and len(grid) != num_inference_steps:
                raise ValueError(f"got {len(grid)} sigmas but num_inference_steps={num_inference_steps}")
            if len(grid) < 1 or not np.all((grid > 0) & (grid <= 1)) or np.any(np.diff(grid) >= 0):
                raise ValueError("sigmas must be a non-empty, strictly decreasing sequence in (0, 1]")
        self.num_inference_steps = len(grid)
        sigmas_t = torch.from_numpy(np.append(grid, 0.0)).to(dtype=torch.float32)
        self.sigmas = sigmas_t.to(device)  # (N + 1,)
        self._sigmas_f64 = np.append(grid, 0.0)  # exact grid for the update (scalars, no device sync)
        self.timesteps = (sigmas_t[:-1] * self.config.num_train_timesteps).to(device)  # (N,)
        self._step_index = None
        self._begin_index = None

    def index_for_timestep(
        self, timestep: float | torch.Tensor, schedule_timesteps: torch.Tensor | None = None
    ) -> int:
        schedule_timesteps = self.timesteps if schedule_timesteps is None else schedule_timesteps
        indices = (
            schedule_timesteps == torch.as_tensor(timestep, device=schedule_timesteps.device)
        ).nonzero()
        if len(indices) == 0:
            raise ValueError(
                f"timestep {timestep} is not one of scheduler.timesteps; call set_timesteps first"
            )
        return int(indices[1 if len(indices) > 1 else 0].item())

    def _init_step_index(self, timestep: float | torch.Tensor) -> None:
        if self._begin_index is None:
            self._step_index = self.index_for_timestep(timestep)
        else:
            self._step_index = self._begin_index

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> FlowMatchEulerDiscreteSchedulerOutput | tuple:
        """One Euler–Maruyama step from ``sigma_i`` to ``sigma_{i+1}`` (a mean step on the last one).

        Args:
            model_output: ``v = eps - x_0`` predicted at ``(sample, sigma_i)``, any shape (e.g. ``(B, C, H, W)``).
            timestep: the current element of ``scheduler.timesteps`` (``sigma_i * num_train_timesteps``).
            sample: ``x_{sigma_i}``, same shape as ``model_output``.
            generator: RNG(s) for the noise ``z`` (one per sample allowed, as :func:`randn_tensor`).

        Returns:
            ``prev_sample`` = ``x_{sigma_{i+1}}`` in ``model_output``'s dtype (computed in float32).
        """
        if isinstance(timestep, int) or (torch.is_tensor(timestep) and not timestep.is_floating_point()):
            raise ValueError(
                "Pass an element of scheduler.timesteps to step(), not an integer index from enumerate(timesteps)."
            )
        if self.num_inference_steps is None:
            raise ValueError("Call set_timesteps(num_inference_steps) before step().")
        if self._step_index is None:
            self._init_step_index(timestep)
        index = self._step_index
        if index >= self.num_inference_steps:
            raise ValueError(
                f"step() was called {index + 1} times but the grid has {self.num_inference_steps} steps; "
                "call set_timesteps again to sample anew."
            )
        sigma, sigma_next = float(self._sigmas_f64[index]), float(self._sigmas_f64[index + 1])
        dt = sigma_next - sigma
        c = float(self.config.diffusion_coefficient)

        x = sample.to(torch.float32)
        v = model_output.to(torch.float32)
        drift = v + (0.5 * c) * ((1.0 - sigma) * v + x)  # v - 1/2 w(sigma) score(x, sigma)
        prev_sample = x + dt * drift
        if index < self.num_inference_steps - 1 and c > 0:  # all but the last (mean) step are stochastic
            noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
            prev_sample = prev_sample + math.sqrt(c * sigma) * math.sqrt(abs(dt)) * noise

        self._step_index = index + 1
        prev_sample = prev_sample.to(model_output.dtype)
        if not return_dict:
            return (prev_sample,)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev_sample)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
