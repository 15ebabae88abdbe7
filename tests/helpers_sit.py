"""Shared helpers for the SiT model / pipeline / scheduler / conversion tests."""

from __future__ import annotations

import torch

from d2c_hf.models.transformer_sit import SiTTransformer2DModel

TINY = dict(
    sample_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=4, num_attention_heads=2, num_classes=10
)


def tiny_sit(seed: int = 0, randomize: bool = True, **overrides) -> SiTTransformer2DModel:
    """A tiny SiT in eval mode. ``randomize`` replaces the adaLN-Zero init (which makes the output 0 and
    independent of the conditioning) by random weights, so every input matters."""
    torch.manual_seed(seed)  # test-side seeding only
    model = SiTTransformer2DModel(**{**TINY, **overrides}).eval()
    if randomize:
        randomize_(model, seed)
    return model


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> None:
    """Overwrite every floating parameter with N(0, std^2) from a local generator."""
    generator = torch.Generator().manual_seed(seed)
    for param in module.parameters():
        param.copy_(torch.randn(param.shape, generator=generator) * std)


def gaussian_velocity(x: torch.Tensor, sigma: float, mu: float = 3.0, s: float = 0.5) -> torch.Tensor:
    """Exact v = E[eps - x0 | x_sigma] for data x0 ~ N(mu, s^2) and x_sigma = (1 - sigma) x0 + sigma eps.

    With a = 1 - sigma, var = a^2 s^2 + sigma^2 and r = x - a mu:
    E[eps | x] = sigma r / var and E[x0 | x] = mu + a s^2 r / var.
    """
    a = 1.0 - sigma
    var = a * a * s * s + sigma * sigma
    r = x - a * mu
    return sigma * r / var - (mu + a * s * s * r / var)
