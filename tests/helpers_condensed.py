"""Shared builders for the Attach / CondensedDataset / card tests (tests/test_attach.py,
tests/test_condensed.py, tests/test_card.py)."""

from __future__ import annotations

import numpy as np
from datasets import Array2D, Array3D, ClassLabel, Dataset, Features, Value


def mean_brightness(dataset) -> np.ndarray:
    """A real, cheap stand-in difficulty: the mean pixel value of each image (float32)."""
    return np.asarray([np.asarray(im.convert("L"), np.float32).mean() for im in dataset["image"]], np.float32)


def with_difficulty(dataset):
    """``dataset`` plus a ``difficulty`` column (mean brightness), so condense(scorer=None) reuses it."""
    return dataset.add_column("difficulty", mean_brightness(dataset).tolist(), feature=Value("float32"))


def build_condensed(local_hub, dataset, images_per_class: int = 3, **kwargs):
    """condense() with the tiny local models and a precomputed difficulty column (no scorer)."""
    from d2c_hf.run.condense import condense

    options = dict(
        images_per_class=images_per_class,
        scorer=None,
        vae=local_hub.vae,
        text_encoder=local_hub.t5,
        vision_encoder=local_hub.dinov2,
        resolution=32,
        interval=2,
        notes=["tiny random stand-in models built by the test suite"],
    )
    options.update(kwargs)
    return condense(with_difficulty(dataset), **options)


def synthetic_condensed(num_classes: int = 30, per_class: int = 4, total_per_class: int = 40, seed: int = 0):
    """A CondensedDataset without images or models: arrays, labels and a full scores table."""
    from d2c_hf.condensed.dataset import CondensedDataset

    rng = np.random.default_rng(seed)
    n_all = num_classes * total_per_class
    all_labels = np.repeat(np.arange(num_classes), total_per_class)
    all_scores = rng.gamma(2.0, 1.0, n_all).astype(np.float32)
    picked = np.concatenate(
        [
            np.flatnonzero(all_labels == c)[np.argsort(all_scores[all_labels == c])][::10][:per_class]
            for c in range(num_classes)
        ]
    )
    picked = np.sort(picked)
    label = ClassLabel(names=[f"class {c}" for c in range(num_classes)])
    samples = Dataset.from_dict(
        {
            "label": all_labels[picked],
            "source_index": picked,
            "difficulty": all_scores[picked],
            "latents": rng.standard_normal((len(picked), 8, 4, 4)).astype(np.float16),
            "visual_embeds": rng.standard_normal((len(picked), 4, 6)).astype(np.float16),
        },
        features=Features(
            {
                "label": label,
                "source_index": Value("int64"),
                "difficulty": Value("float32"),
                "latents": Array3D((8, 4, 4), "float16"),
                "visual_embeds": Array2D((4, 6), "float16"),
            }
        ),
    )
    scores = Dataset.from_dict(
        {"source_index": np.arange(n_all), "label": all_labels, "difficulty": all_scores},
        features=Features({"source_index": Value("int64"), "label": label, "difficulty": Value("float32")}),
    )
    info = {
        "budget": {"images_per_class": per_class, "ratio": None, "total": len(picked)},
        "selection": {"strategy": "interval", "interval": 10, "seed": seed},
        "scoring": {
            "model": {
                "class": "DiTTransformer2DModel",
                "name_or_path": "facebook/DiT-XL-2-256",
                "revision": "abc123",
            }
        },
        "latents": {
            "space": "latent",
            "layout": "mean_std",
            "scaling_factor": 0.18215,
            "shift_factor": 0.0,
            "latent_channels": 4,
        },
    }
    return CondensedDataset(samples, None, info, scores=scores)
