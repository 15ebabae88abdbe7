"""What every run of a benchmark shares, built once into ``WORK/prepared`` (staged, then renamed):

* the training split and the reference at the benchmark's resolution (``train/``, ``reference/``,
  and their pixels as ``.npy``);
* the difficulty scores: a class-conditional DiT trained from scratch on the training split
  (:func:`~d2c_hf.selection.train_scorer.train_scorer`), scored with several noise draws per timestep,
  each timestep standardised over the split (``scored/``), and the scores' split-half reliability;
* the selection feature space: a tiny DINOv2 trained self-supervised on the training split
  (:func:`~d2c_hf.attach.train_encoder.train_vision_encoder`, seed 0) or a named encoder; each image's
  mean patch token (``features.npy``);
* the evaluator (:mod:`.evaluator`), fitted on the training split (``evaluator/``);
* ``prepared.json``: what it was built from, the reliability, what each feature space knows about the
  classes (probes fitted on the training split, scored on the reference) and the timings.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data import LabelledSplits, to_resolution
from .evaluator import build_evaluator
from .settings import BenchmarkSettings

logger = logging.getLogger(__name__)

__all__ = ["load_prepared_arrays", "prepare"]

PREPARED = "prepared"


def _probe_accuracy(
    train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray
) -> dict[str, Any]:
    """Reference accuracy of a logistic probe and of 5-nearest neighbours on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    mu, sd = train.mean(0), train.std(0) + 1e-6
    a, b = (train - mu) / sd, (test - mu) / sd
    k = min(5, len(a))
    return {
        "linear_probe": float(LogisticRegression(max_iter=3000).fit(a, y_train).score(b, y_test)),
        "knn5": float(KNeighborsClassifier(k).fit(a, y_train).score(b, y_test)),
        "dim": int(train.shape[1]),
    }


def prepare(settings: BenchmarkSettings, data: LabelledSplits, work: Path) -> dict[str, Any]:
    """Build ``work/prepared`` unless it exists (then check it was built from the same data and settings);
    returns its record."""
    from ..attach.train_encoder import mean_patch_features, train_vision_encoder
    from ..selection.scorer import DifficultyScorer
    from ..selection.train_scorer import train_scorer
    from ..utils.files import staged_dir, write_json
    from ..utils.spaces import PIXEL_SPACE
    from .evaluator import load_evaluator

    key = {"settings": settings.prepare_key(), "data": data.identity}
    folder = work / PREPARED
    record_path = folder / "prepared.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record["key"] != json.loads(json.dumps(key)):
            raise ValueError(
                f"{folder} was prepared from other data or settings ({record['key']}); pass another work dir "
                "or delete it"
            )
        return record
    for stale in work.glob(f".{PREPARED}.tmp-*"):  # left by a preparation that was killed
        shutil.rmtree(stale, ignore_errors=True)
    res, tokens = settings.resolution, settings.num_tokens
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with staged_dir(folder, "the prepared benchmark inputs") as tmp:
        t = time.perf_counter()
        train, reference = to_resolution(data.train, res), to_resolution(data.reference, res)
        train.save_to_disk(str(tmp / "train"))
        reference.save_to_disk(str(tmp / "reference"))
        arrays = {
            "train_pixels": np.stack([np.asarray(im) for im in train["image"]]),
            "train_labels": np.asarray(train["label"], np.int64),
            "reference_pixels": np.stack([np.asarray(im) for im in reference["image"]]),
            "reference_labels": np.asarray(reference["label"], np.int64),
        }
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        timings["data"] = time.perf_counter() - t

        t = time.perf_counter()
        train_scorer(
            train,
            tmp / "models" / "scorer",
            resolution=res,
            num_steps=settings.scorer_steps,
            batch_size=settings.scorer_batch_size,
            seed=0,
        )
        timings["scorer"] = time.perf_counter() - t
        t = time.perf_counter()
        scorer = DifficultyScorer.from_pretrained(
            tmp / "models" / "scorer",
            vae=PIXEL_SPACE,
            resolution=res,
            num_timesteps=settings.num_timesteps,
            num_draws=settings.num_draws,
            standardize_timesteps=True,
            seed=0,
            batch_size=64,
        )
        scored = scorer.apply(train)
        reliability = scorer.reliability
        scored.save_to_disk(str(tmp / "scored"))
        timings["scoring"] = time.perf_counter() - t

        t = time.perf_counter()
        if settings.selection_encoder:
            encoder = Path(settings.selection_encoder).expanduser()
            if not encoder.is_dir():
                raise FileNotFoundError(f"selection_encoder {settings.selection_encoder!r} is not a folder")
            encoder_what = f"encoder {settings.selection_encoder}"
        else:
            encoder = tmp / "models" / "selection-encoder"
            train_vision_encoder(
                train, encoder, num_tokens=tokens, resolution=res, num_steps=settings.encoder_steps, seed=0
            )
            encoder_what = (
                f"tiny DINOv2 trained on the training split ({settings.encoder_steps} steps, seed 0)"
            )
        features = mean_patch_features(encoder, train, num_tokens=tokens, resolution=res)
        np.save(tmp / "features.npy", features)
        ref_features = mean_patch_features(encoder, reference, num_tokens=tokens, resolution=res)
        timings["selection_features"] = time.perf_counter() - t

        t = time.perf_counter()
        evaluator_record = build_evaluator(
            settings.evaluator,
            arrays["train_pixels"],
            arrays["train_labels"],
            tmp / "evaluator",
            train_dataset=train,
            probe_size=settings.resolved_probe_size,
            num_tokens=tokens,
            resolution=res,
            encoder_steps=settings.encoder_steps,
        )
        evaluator = load_evaluator(tmp / "evaluator", num_tokens=tokens, resolution=res)
        predicted = np.asarray(evaluator.classifier.predict(arrays["reference_pixels"]))
        evaluator_record["reference_accuracy"] = float((predicted == arrays["reference_labels"]).mean())
        timings["evaluator"] = time.perf_counter() - t

        grey = arrays["train_pixels"].astype(np.float32).mean(-1).reshape(len(train), -1) / 255.0
        grey_ref = arrays["reference_pixels"].astype(np.float32).mean(-1).reshape(len(reference), -1) / 255.0
        y, y_ref = arrays["train_labels"], arrays["reference_labels"]
        record = {
            "key": json.loads(json.dumps(key)),
            "num_train": len(train),
            "num_reference": len(reference),
            "reliability": reliability.to_dict(),
            "reliability_summary": reliability.summary(),
            "selection_features": encoder_what,
            "evaluator": evaluator_record,
            "feature_probes": {
                "grey pixels": _probe_accuracy(grey, y, grey_ref, y_ref),
                "selection features": _probe_accuracy(features, y, ref_features, y_ref),
            },
            "timings": timings,
            "seconds": time.perf_counter() - started,
        }
        write_json(tmp / "prepared.json", record)
    logger.info("prepared in %.0f s: %s", record["seconds"], record["reliability_summary"])
    return record


def load_prepared_arrays(work: Path) -> dict[str, np.ndarray]:
    """The prepared pixels and labels of both splits, the difficulty scores and the selection features."""
    from datasets import load_from_disk

    folder = work / PREPARED
    out = {
        name: np.load(folder / f"{name}.npy")
        for name in ("train_pixels", "train_labels", "reference_pixels", "reference_labels", "features")
    }
    scored = load_from_disk(str(folder / "scored"))
    out["scores"] = np.asarray(scored["difficulty"])
    return out
