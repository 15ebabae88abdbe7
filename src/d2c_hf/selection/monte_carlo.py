"""Select, the estimate itself: a denoiser's mean error over (timestep, noise draw) pairs, and its two halves.

:class:`MonteCarlo` holds the estimator's options and computes, for a batch of clean inputs ``x0``, the
errors ``mean_{C,H,W} (target(x0, eps) - denoise(x_t, t, condition))^2`` for every timestep of the grid and
every noise draw, with the common random numbers of :mod:`.noise`. The model enters only through
``denoise(x_t, t, condition) -> prediction`` (float32, ``x0``'s shape), and the conditioning through
``conditions``, one entry per row of the batch (class ids ``(B,)``, or a tuple of per-row tensors such as
caption embeddings and their mask): the estimate does not know what conditions the model, so every scorer
(class-conditional today) shares it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from .estimator import STRATIFIED
from .noise import sample_bin_offsets, sample_noise

#: ``denoise(x_t, t, condition) -> prediction``: ``x_t`` ``(N, C, h, w)``, ``t`` ``(N,)`` in the adapter's
#: units, ``condition`` the rows of ``conditions`` for these pairs; returns ``(N, C, h, w)`` float32.
Denoise = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


class ScoredBatch(NamedTuple):
    """One batch's scores: ``difficulty`` ``(B,)`` and ``per_timestep`` ``(B, T)`` float32 (means over the
    draws), and ``halves`` ``(B, T, 2)`` float32 or ``None`` (what the reliability needs; see
    :meth:`MonteCarlo.score`)."""

    difficulty: np.ndarray
    per_timestep: np.ndarray
    halves: np.ndarray | None


def take_rows(conditions: Any, index: torch.Tensor) -> Any:
    """``conditions[index]`` for a per-row tensor or a tuple of them."""
    if isinstance(conditions, tuple):
        return tuple(c[index] for c in conditions)
    return conditions[index]


@dataclass(frozen=True)
class MonteCarlo:
    """The estimator's options (checked by :func:`~.estimator.check_estimator`) and the estimate.

    Attributes:
        num_timesteps: T.
        timestep_grid: ``"midpoints"``, ``"stratified"`` or an explicit tuple of timesteps.
        num_draws: D, independent noise draws per timestep.
        antithetic: pair every draw ``eps`` with ``-eps``.
        seed: seed of the common random numbers.
        max_forward_batch: most (sample, timestep) pairs per ``denoise`` call; ``None`` = all at once.
    """

    num_timesteps: int
    timestep_grid: str | tuple[float, ...]
    num_draws: int
    antithetic: bool
    seed: int
    max_forward_batch: int | None = None

    def draw_errors(
        self,
        denoise: Denoise,
        adapter: Any,
        x0: torch.Tensor,
        conditions: Any,
        keys: np.ndarray,
        draws: Sequence[int] | range,
    ) -> torch.Tensor:
        """The per-(sample, timestep, draw) denoising errors.

        For draw d the noise is :func:`~.noise.sample_noise` ``(..., draw=d)`` (with ``antithetic``, also
        its negation: the error is the mean of the two), and the timesteps are the grid, or with
        ``timestep_grid="stratified"`` one per bin from :func:`~.noise.sample_bin_offsets` ``(..., draw=d)``.
        All ``B * T * S`` pairs (S = draws, times 2 if antithetic) go through ``denoise`` in
        ``ceil(B * T * S / max_forward_batch)`` calls; one draw without antithetic builds exactly the
        pairs, in the same order, as a one-draw score always has.

        Returns:
            ``(B, T, len(draws))`` float32 on ``x0``'s device.
        """
        draws = [int(d) for d in draws]
        batch, steps = len(x0), self.num_timesteps
        device = x0.device
        signs = 2 if self.antithetic else 1
        per_sample = len(draws) * signs * steps  # pairs per sample, ordered (draw, sign, timestep)
        shape = tuple(x0.shape[1:])
        noise = torch.empty((batch, len(draws), signs, steps, *shape), dtype=torch.float32)
        times = []
        for j, d in enumerate(draws):
            eps = sample_noise(keys, self.seed, steps, shape, draw=d)  # (B, T, C, h, w)
            noise[:, j, 0] = eps
            if signs == 2:
                noise[:, j, 1] = eps.neg()
            if self.timestep_grid == STRATIFIED:
                t = adapter.stratified(sample_bin_offsets(keys, self.seed, steps, d))  # (B, T)
            else:
                t = adapter.timesteps.cpu().expand(batch, steps)
            times.append(t.unsqueeze(1).expand(batch, signs, steps))
        timesteps = torch.stack(times, dim=1).reshape(batch * per_sample).to(device)
        noise = noise.to(device).flatten(0, 3)  # (B*S*T, ...), sample-major
        sample = torch.arange(batch, device=device).repeat_interleave(per_sample)
        errors = torch.empty(batch * per_sample, dtype=torch.float32, device=device)
        chunk = self.max_forward_batch or batch * per_sample
        with torch.inference_mode():
            for start in range(0, batch * per_sample, chunk):
                part = slice(start, start + chunk)
                x, eps, t = x0[sample[part]], noise[part], timesteps[part]
                prediction = denoise(adapter.interpolate(x, eps, t), t, take_rows(conditions, sample[part]))
                target = adapter.target(x, eps, t)
                errors[part] = (prediction - target).square().mean(dim=(1, 2, 3))
        errors = errors.view(batch, len(draws), signs, steps)
        errors = errors.mean(dim=2) if signs == 2 else errors[:, :, 0]
        return errors.permute(0, 2, 1)  # (B, T, draws)

    def score(
        self,
        denoise: Denoise,
        adapter: Any,
        x0: torch.Tensor,
        conditions: Any,
        keys: np.ndarray,
        probe: np.ndarray | None = None,
    ) -> ScoredBatch:
        """Score a batch and keep what the reliability needs.

        ``difficulty`` and ``per_timestep`` average the ``num_draws`` draws (each with its antithetic
        mirror); ``halves`` ``(B, T, 2)`` holds the per-timestep errors of two independent estimates: the
        even and the odd draws (``floor(D / 2)`` each) when ``num_draws >= 2``, or, with one draw and a
        ``probe`` mask ``(B,)`` bool (the rows a planned probe re-scores), the estimate and a fresh draw
        (draw 1) for the probed rows, NaN for the others. ``None`` when neither applies.
        """
        steps, draws = self.num_timesteps, self.num_draws
        track = draws >= 2 or probe is not None
        if len(x0) == 0:
            empty = np.zeros((0, steps), np.float32)
            return ScoredBatch(
                np.zeros(0, np.float32), empty, np.zeros((0, steps, 2), np.float32) if track else None
            )
        errors = self.draw_errors(denoise, adapter, x0, conditions, keys, range(draws))  # (B, T, D)
        per_timestep = errors.mean(dim=2) if draws > 1 else errors[:, :, 0]
        difficulty = per_timestep.mean(dim=1)
        halves = None
        if draws >= 2:
            half = draws // 2
            halves = (
                torch.stack(
                    [errors[:, :, 0 : 2 * half : 2].mean(dim=2), errors[:, :, 1 : 2 * half : 2].mean(dim=2)],
                    dim=2,
                )
                .cpu()
                .numpy()
            )
        elif track:
            halves = np.full((len(x0), steps, 2), np.nan, np.float32)
            halves[:, :, 0] = per_timestep.cpu().numpy()
            if probe.any():
                where = torch.as_tensor(np.flatnonzero(probe), device=x0.device)
                fresh = self.draw_errors(  # draw 1: fresh noise
                    denoise, adapter, x0[where], take_rows(conditions, where), keys[probe], [draws]
                )
                halves[probe, :, 1] = fresh[:, :, 0].cpu().numpy()
        return ScoredBatch(difficulty.cpu().numpy(), per_timestep.cpu().numpy(), halves)


__all__ = ["Denoise", "MonteCarlo", "ScoredBatch", "take_rows"]
