"""The probability path both the difficulty score and the training loss use: SiT's linear interpolant.

``t = 0`` is the data and ``t = 1`` the noise (REPA / SiT convention)::

    x_t = (1 - t) x + t eps,        v = d x_t / d t = eps - x

The flow scorer (:class:`~d2c_hf.selection.denoisers.FlowAdapter`) measures a model's error on exactly the path
the training loss (:func:`~d2c_hf.train.losses.compute_loss`) trains on, so both import it from here (Select
does not import Train).
"""

from __future__ import annotations

import torch


def interpolate(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear interpolant and its velocity: ``x_t = (1 - t) x + t noise``, ``v = noise - x``.

    ``t`` is ``(B,)`` (broadcast over the other axes) or a scalar.
    """
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    t = t.reshape(-1, *([1] * (x.ndim - 1))) if t.ndim else t
    return (1 - t) * x + t * noise, noise - x


__all__ = ["interpolate"]
