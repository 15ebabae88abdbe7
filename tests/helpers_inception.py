"""A random FID Inception-v3 state dict in the layout of the public weight files (for tests)."""

from __future__ import annotations

import torch

from d2c_hf.evaluation import FIDInceptionV3


def random_inception_state_dict(seed: int = 0, with_fc: bool = True) -> dict[str, torch.Tensor]:
    """A TF-conversion-style state dict: the documented keys, random values, no num_batches_tracked.

    Batch-norm scales are 1 and running variances in [0.5, 1.5], so activations stay O(10-100)
    through all 94 conv units (pool features of magnitude ~65, logits ~95).
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in FIDInceptionV3().state_dict().items():
        if key.endswith("num_batches_tracked") or (key.startswith("fc.") and not with_fc):
            continue
        if key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=gen) + 0.5
        elif key.endswith("bn.weight"):
            state[key] = torch.ones(value.shape)
        else:
            state[key] = torch.randn(value.shape, generator=gen) * 0.05
    return state
