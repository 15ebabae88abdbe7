"""FID-50K the way papers report it: FID, sFID, Inception Score and precision/recall of a sample set.

``d2c fid SAMPLES REFERENCE --inception_weights FILE`` scores generated images (an ADM ``.npz``, e.g.
the one ``examples/sample_sit.py`` writes, or an image folder) against a reference: the ADM reference
batch (``VIRTUAL_imagenet256_labeled.npz``: ``mu``/``sigma`` for FID, ``mu_s``/``sigma_s`` for sFID and
10,000 images for precision/recall), a statistics file saved by this command, or a folder of real
images. It follows guided-diffusion's ``evaluations/evaluator.py`` (what DiT, SiT and REPA report):

* **FID**: Fréchet distance between Gaussians fitted to Inception pool3 features (2048-d);
* **sFID**: the same on the spatial features (first 7 channels of ``mixed_6/conv``, 17x17, 2023-d);
* **Inception Score**: ``exp(E KL(p(y|x) || p(y)))`` from the fc logits without bias, over
  consecutive parts of 5,000 samples;
* **precision / recall**: k-NN manifolds (k = 3) of the reference images' and the samples' pool
  features (Kynkäänniemi et al. 2019).

Images are read in batches (memory stays at one batch: 50,000 images of 256x256 never sit in memory),
features are extracted on the GPU when there is one, with a progress bar. The network is
:class:`~d2c_hf.evaluation.InceptionV3FeatureExtractor`, loaded from a local weights file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .adm import load_reference_npz
from .metrics import feature_statistics, frechet_distance, inception_score, precision_recall
from .sources import ImageSource, open_images

logger = logging.getLogger(__name__)

#: environment variable naming the Inception weights file when ``--inception_weights`` is not given
INCEPTION_WEIGHTS_ENV = "D2C_INCEPTION_WEIGHTS"
METRICS = ("fid", "sfid", "is", "pr")
#: the ADM evaluator's Inception Score part size
IS_SPLIT_SIZE = 5000


@dataclass
class Reference:
    """The reference side: stored statistics and/or images to compute them from.

    Attributes:
        description: where it came from (for the result record).
        mu, sigma: pool3 statistics (FID), if stored.
        mu_s, sigma_s: spatial statistics (sFID), if stored.
        images: the reference images (needed for precision/recall, or for statistics not stored).
    """

    description: dict[str, Any]
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    images: ImageSource | None = field(default=None, repr=False)


def open_reference(path: str | os.PathLike, *, resolution: int | None = None) -> Reference:
    """An ADM reference/statistics ``.npz`` (``mu``/``sigma`` [``mu_s``/``sigma_s``] [``arr_0``]) or an image folder."""
    path = Path(path).expanduser()
    if path.is_file():
        batch = load_reference_npz(path, load_images=False)
        images = open_images(path) if batch.num_images else None
        description = {"path": str(path), "kind": "npz", "num_images": batch.num_images}
        description["statistics"] = [name for name in ("mu", "mu_s") if getattr(batch, name) is not None]
        return Reference(description, batch.mu, batch.sigma, batch.mu_s, batch.sigma_s, images)
    images = open_images(path, resolution=resolution)
    return Reference(images.describe(), images=images)


def needed_outputs(metrics: tuple[str, ...], reference: Reference) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Inception outputs to extract from ``(samples, reference images)`` for ``metrics``."""
    sample_outputs: list[str] = []
    reference_outputs: list[str] = []
    if "fid" in metrics or "pr" in metrics:
        sample_outputs.append("pool")
    if "sfid" in metrics:
        sample_outputs.append("spatial")
    if "is" in metrics:
        sample_outputs.append("logits_unbiased")
    if ("fid" in metrics and reference.mu is None) or "pr" in metrics:
        reference_outputs.append("pool")
    if "sfid" in metrics and reference.mu_s is None:
        reference_outputs.append("spatial")
    return tuple(sample_outputs), tuple(reference_outputs)


def resolve_metrics(
    requested: tuple[str, ...] | None, reference: Reference, has_logits: bool
) -> tuple[str, ...]:
    """The metrics to compute. ``None`` = every metric the reference (and the weights) allow; an
    explicit request that cannot be met raises, saying what is missing."""
    missing = {}
    if reference.mu is None and reference.images is None:
        missing["fid"] = "the reference has neither mu/sigma nor images"
    if reference.mu_s is None and reference.images is None:
        missing["sfid"] = "the reference has neither mu_s/sigma_s nor images"
    if reference.images is None:
        missing["pr"] = "precision/recall need reference images (arr_0 of the reference .npz, or a folder)"
    if not has_logits:
        missing["is"] = "the Inception weights have no fc layer (no logits)"
    if requested is None:
        chosen = tuple(m for m in METRICS if m not in missing)
        for name, why in missing.items():
            logger.info("skipping %s: %s", name, why)
        if not chosen:
            raise ValueError(f"no metric can be computed: {missing}")
        return chosen
    unknown = [m for m in requested if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {METRICS}")
    impossible = {m: missing[m] for m in requested if m in missing}
    if impossible:
        reasons = "; ".join(f"{m}: {why}" for m, why in impossible.items())
        raise ValueError(f"cannot compute the requested metrics ({reasons})")
    return tuple(dict.fromkeys(requested))


def extract(
    source: ImageSource,
    extractor: Any,
    outputs: tuple[str, ...],
    *,
    batch_size: int = 100,
    num_workers: int = 0,
    desc: str = "inception",
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Run ``extractor.extract`` over ``source`` in batches: ``{output: (N, d) float32}``, with a progress bar."""
    from tqdm.auto import tqdm

    if not outputs:
        return {}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    with tqdm(total=source.num_images, unit="img", desc=desc, disable=not progress) as bar:
        for batch in source.batches(batch_size, num_workers):
            result = extractor.extract(batch, outputs)
            for name in outputs:
                parts[name].append(result[name])
            bar.update(len(batch))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def compute_metrics(
    samples: ImageSource,
    reference: Reference,
    extractor: Any,
    *,
    metrics: tuple[str, ...] | None = None,
    batch_size: int = 100,
    num_workers: int = 0,
    k: int = 3,
    is_split_size: int = IS_SPLIT_SIZE,
    fd_method: str = "eigh",
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Score ``samples`` against ``reference`` with an Inception extractor.

    Args:
        samples: the generated images.
        reference: see :func:`open_reference`.
        extractor: an :class:`~d2c_hf.evaluation.InceptionV3FeatureExtractor` (or anything with its
            ``extract(images, outputs)`` and ``model.has_logits``).
        metrics: subset of ``("fid", "sfid", "is", "pr")``; ``None`` = all that ``reference`` allows.
        batch_size, num_workers: images per forward pass; folder decoding processes.
        k: precision/recall neighbourhood size (ADM: 3).
        is_split_size: Inception Score part size (ADM: 5000).
        fd_method: ``"eigh"`` or ``"sqrtm"`` (the ADM formulation), see :func:`frechet_distance`.

    Returns:
        ``(result, reference_statistics)``: the metrics (plain floats and counts) and the reference
        statistics computed from images in this call (``mu``/``sigma``/``mu_s``/``sigma_s``; empty when
        all came from the file), e.g. to save for the next run.
    """
    has_logits = bool(getattr(getattr(extractor, "model", None), "has_logits", True))
    metrics = resolve_metrics(None if metrics is None else tuple(metrics), reference, has_logits)
    sample_outputs, reference_outputs = needed_outputs(metrics, reference)
    fake = extract(
        samples, extractor, sample_outputs, batch_size=batch_size, num_workers=num_workers,
        desc="samples", progress=progress,
    )  # fmt: skip
    real = {}
    if reference_outputs:
        real = extract(
            reference.images, extractor, reference_outputs, batch_size=batch_size, num_workers=num_workers,
            desc="reference", progress=progress,
        )  # fmt: skip
    computed: dict[str, np.ndarray] = {}
    if "pool" in real:
        computed["mu"], computed["sigma"] = feature_statistics(real["pool"], name="reference pool features")
    if "spatial" in real:
        computed["mu_s"], computed["sigma_s"] = feature_statistics(
            real["spatial"], name="reference spatial features"
        )

    def stats(name: str) -> tuple[np.ndarray, np.ndarray]:
        pair = (getattr(reference, name), getattr(reference, "sigma" + name[2:]))
        return pair if pair[0] is not None else (computed[name], computed["sigma" + name[2:]])

    result: dict[str, Any] = {}
    if "fid" in metrics:
        fake_stats = feature_statistics(fake["pool"], name="sample pool features")
        result["fid"] = frechet_distance(*fake_stats, *stats("mu"), method=fd_method)
    if "sfid" in metrics:
        fake_stats = feature_statistics(fake["spatial"], name="sample spatial features")
        result["sfid"] = frechet_distance(*fake_stats, *stats("mu_s"), method=fd_method)
    if "is" in metrics:
        score = inception_score(fake["logits_unbiased"], split_size=is_split_size, from_logits=True)
        result["inception_score"], result["inception_score_std"] = score.mean, score.std
    if "pr" in metrics:
        pr = precision_recall(real["pool"], fake["pool"], k=k)
        result["precision"], result["recall"] = pr.precision, pr.recall
    result["num_samples"] = samples.num_images
    result["num_reference_images"] = reference.images.num_images if reference.images is not None else None
    result["reference_statistics_from"] = {
        "fid": "file" if reference.mu is not None else "images",
        "sfid": "file" if reference.mu_s is not None else "images",
    }
    result["settings"] = {
        "metrics": list(metrics),
        "k": k,
        "is_split_size": is_split_size,
        "fd_method": fd_method,
        "batch_size": batch_size,
    }
    return result, computed


def save_statistics(path: str | os.PathLike, statistics: dict[str, np.ndarray]) -> Path:
    """Write ``mu``/``sigma`` (and ``mu_s``/``sigma_s``) as a reference ``.npz`` (the ADM layout), atomically."""
    from ..utils.files import atomic_write

    if not statistics:
        raise ValueError("no reference statistics were computed (they all came from the reference file)")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    return atomic_write(path, lambda handle: np.savez(handle, **statistics))


# --------------------------------------------------------------------------------------
# the whole evaluation (what `d2c fid` runs)
# --------------------------------------------------------------------------------------


def evaluate_fid(
    samples: str | os.PathLike,
    reference: str | os.PathLike,
    *,
    inception_weights: str | os.PathLike | None,
    metrics: tuple[str, ...] | None = None,
    batch_size: int = 100,
    num_workers: int = 4,
    device: str | None = None,
    resolution: int | None = None,
    reference_resolution: int | None = None,
    k: int = 3,
    is_split_size: int = IS_SPLIT_SIZE,
    fd_method: str = "eigh",
    save_reference_stats: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """FID, sFID, Inception Score and precision/recall of ``samples`` against ``reference`` (ADM protocol).

    Both sides are opened and checked (headers, file lists, which metrics the reference supports) before
    the Inception network is loaded. Returns the result record (metrics, what was read, the network's
    provenance).
    """
    from ..utils.checks import check_non_negative_int, check_positive_int
    from .inception import InceptionV3FeatureExtractor

    for name, value in (("batch_size", batch_size), ("k", k), ("is_split_size", is_split_size)):
        check_positive_int(value, name)
    check_non_negative_int(num_workers, "num_workers")
    if not inception_weights:
        raise ValueError(
            f"pass --inception_weights FILE (or set ${INCEPTION_WEIGHTS_ENV}): the FID Inception-v3 weights, "
            "downloaded once on a machine with internet access (docs/evaluation.md); nothing is downloaded here"
        )
    images = open_images(samples, resolution=resolution)
    ref = open_reference(reference, resolution=reference_resolution)
    resolve_metrics(metrics, ref, has_logits=True)  # requests the reference cannot meet fail here
    extractor = InceptionV3FeatureExtractor.from_pretrained(
        inception_weights, device=device, batch_size=batch_size
    )
    result, computed = compute_metrics(
        images, ref, extractor, metrics=metrics, batch_size=batch_size, num_workers=num_workers,
        k=k, is_split_size=is_split_size, fd_method=fd_method, progress=progress,
    )  # fmt: skip
    result["samples"] = images.describe()
    result["reference"] = ref.description
    result["inception"] = extractor.provenance
    if save_reference_stats:
        result["saved_reference_stats"] = str(save_statistics(save_reference_stats, computed))
    return result
