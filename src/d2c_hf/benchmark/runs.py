"""Training runs of a benchmark: plan every subset, train each distinct one once, cache every result.

* :func:`plan` selects every run's subset up front (the same :func:`~d2c_hf.selection.strategies.select`
  call ``condense`` makes; cheap) and groups runs whose subset *and* seed are the same: they would train
  the very same model (e.g. D2C interval and ``min`` at one image per class both keep each class's
  easiest image), so one of them is trained and the others share its result, recorded as such.
* :func:`execute` condenses the subset (Select only: pixel "latents", no Attach), trains the SiT with
  :func:`d2c_hf.demo.train_sit_run` (log-spaced evaluations through :class:`.evaluator.SampleQuality`),
  scores the last step with every sampling seed, unguided and guided, and writes the result atomically
  as soon as the run ends (``WORK/runs/TAG.json``).
* :func:`run_all` runs what is not cached yet, ``jobs`` at a time, in seed-major order.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .evaluator import METRIC_KEYS
from .settings import BenchmarkSettings, RunSpec, run_specs

logger = logging.getLogger(__name__)

__all__ = ["Planned", "execute", "plan", "run_all"]


@dataclass(frozen=True, eq=False)  # compared by identity (it holds an array)
class Planned:
    """A run and its subset: ``indices`` (sorted positions in the training split) and their digest."""

    spec: RunSpec
    indices: np.ndarray
    digest: str

    @property
    def group(self) -> tuple[str, int]:
        return self.digest, self.spec.seed


def _select(spec: RunSpec, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    from ..selection.strategies import select

    labels = arrays["train_labels"]
    if spec.budget is None:
        return np.arange(len(labels), dtype=np.int64)
    arm = spec.arm
    return select(
        arrays["scores"] if arm.needs_scores else None,
        labels,
        **spec.budget.kwargs(),
        strategy=arm.strategy,
        interval=arm.interval,
        features=arrays["features"] if arm.needs_features else None,
        seed=spec.seed,
        **dict(arm.options),
    ).indices


def plan(settings: BenchmarkSettings, arrays: Mapping[str, np.ndarray]) -> list[Planned]:
    """Every run of ``settings`` with its subset, seed-major."""
    out = []
    for spec in run_specs(settings):
        indices = np.asarray(_select(spec, arrays), dtype=np.int64)
        out.append(Planned(spec, indices, hashlib.sha256(indices.tobytes()).hexdigest()[:16]))
    return out


def _metrics(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(values[k]) for k in METRIC_KEYS}


def _write_atomic(path: Path, record: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)


def run_path(work: Path, spec: RunSpec) -> Path:
    return work / "runs" / f"{spec.tag}.json"


def execute(
    planned: Planned,
    settings: BenchmarkSettings,
    work: Path,
    settings_key: str,
    train_script: str | None = None,
) -> dict[str, Any]:
    """Train and evaluate one run, or return its cached result; the result is written atomically."""
    from datasets import load_from_disk

    from ..demo import load_pipeline, train_sit_run
    from ..run.condense import condense
    from .evaluator import SampleQuality, load_evaluator
    from .prepare import PREPARED, load_prepared_arrays

    spec = planned.spec
    path = run_path(work, spec)
    if path.is_file():
        return json.loads(path.read_text())
    started = time.perf_counter()
    prepared = work / PREPARED
    arrays = load_prepared_arrays(work)
    evaluator = load_evaluator(
        prepared / "evaluator", num_tokens=settings.num_tokens, resolution=settings.resolution
    )
    num_classes = int(arrays["train_labels"].max()) + 1
    quality = SampleQuality(
        evaluator,
        arrays["reference_pixels"],
        arrays["reference_labels"],
        num_classes=num_classes,
        samples_per_class=settings.samples_per_class,
        num_inference_steps=settings.sit.num_inference_steps,
        seed=settings.sampling_seeds[0],
    )
    scored = load_from_disk(str(prepared / "scored"))
    scratch = work / "scratch" / spec.tag
    shutil.rmtree(scratch, ignore_errors=True)
    arm = spec.arm
    # Select only: the planned rows, as condense selects them (checked), with pixel "latents" and no Attach
    if spec.budget is None:
        budget = {"images_per_class": int(np.bincount(arrays["train_labels"]).max())}
        strategy, interval, options = "random", "auto", {}
    else:
        budget, strategy, interval = spec.budget.kwargs(), arm.strategy, arm.interval
        options = dict(arm.options)
        if arm.needs_features:
            options["features"] = arrays["features"]
    condensed = condense(
        scored,
        **budget,
        scorer=None,
        vae=None,
        strategy=strategy,
        interval=interval,
        attach=("latents",),
        resolution=settings.resolution,
        patch_size=settings.patch_size,
        seed=spec.seed,
        selection_kwargs=options,
    )
    rows = np.sort(np.asarray(condensed.samples["source_index"], np.int64))
    if not np.array_equal(rows, planned.indices):
        raise RuntimeError(
            f"run {spec.tag}: condense selected other rows than planned; please report this as a bug"
        )
    condensed.save_to_disk(scratch / "set", card=False)
    logger.info("run %s: %d images", spec.tag, len(rows))
    out = train_sit_run(
        scratch / "set",
        scratch / "run",
        settings.sit,
        use_text=False,
        use_visual=False,
        seed=spec.seed,
        quality=quality,
        train_script=train_script,
        evaluate_at=settings.eval_steps(),
    )
    t = time.perf_counter()
    pipeline = load_pipeline(out["pipeline_dir"])
    first = settings.sampling_seeds[0]
    final = {f"unguided_seed{first}": _metrics(out["curve"][-1])}
    for s in settings.sampling_seeds[1:]:
        final[f"unguided_seed{s}"] = _metrics(quality.evaluate(pipeline, seed=s))
    for s in settings.sampling_seeds:
        final[f"guided_seed{s}"] = _metrics(
            quality.evaluate(pipeline, seed=s, guidance_scale=settings.guidance_scale)
        )
    labels = arrays["train_labels"][rows]
    result = {
        "tag": spec.tag,
        "budget": None if spec.budget is None else spec.budget.to_json(),
        "budget_label": "full" if spec.budget is None else spec.budget.label,
        "arm": arm.key,
        "seed": spec.seed,
        "num_images": len(rows),
        "class_counts": np.bincount(labels, minlength=num_classes).tolist(),
        "subset_digest": planned.digest,
        "settings_key": settings_key,
        "shared_with": None,
        "curve": [{"step": c["step"], **_metrics(c)} for c in out["curve"]],
        "final": final,
        "final_loss": out.get("final_loss"),
        "train_seconds": out["train_seconds"],
        "eval_seconds": out["eval_seconds"] + time.perf_counter() - t,
        "seconds": time.perf_counter() - started,
    }
    shutil.rmtree(scratch, ignore_errors=True)
    _write_atomic(path, result)
    logger.info(
        "run %s done in %.0f s: %s",
        spec.tag,
        result["seconds"],
        ", ".join(f"{k}={result['curve'][-1][k]:.4g}" for k in METRIC_KEYS),
    )
    return result


def _share(record: Mapping[str, Any], planned: Planned, work: Path) -> None:
    """Write ``planned``'s record from the run that trained the same subset with the same seed."""
    spec = planned.spec
    shared = dict(record)
    shared.update(
        tag=spec.tag,
        budget=None if spec.budget is None else spec.budget.to_json(),
        budget_label="full" if spec.budget is None else spec.budget.label,
        arm=spec.arm.key,
        shared_with=record["tag"],
    )
    _write_atomic(run_path(work, spec), shared)
    logger.info("run %s: same subset and seed as %s, result shared", spec.tag, record["tag"])


def _worker_init(threads: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)  # numpy's BLAS too: two jobs' thread pools would fight over the cores
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _worker(
    planned: Planned, settings: BenchmarkSettings, work: str, key: str, script: str | None
) -> dict[str, Any]:
    return execute(planned, settings, Path(work), key, script)


def run_all(
    planned: Sequence[Planned],
    settings: BenchmarkSettings,
    work: Path,
    settings_key: str,
    *,
    jobs: int = 1,
    threads: int | None = None,
    train_script: str | None = None,
) -> list[dict[str, Any]]:
    """Every planned run (cached ones read back, shared subsets trained once), ``jobs`` at a time."""
    groups: dict[tuple[str, int], list[Planned]] = {}
    for p in planned:
        path = run_path(work, p.spec)
        if path.is_file():
            cached = json.loads(path.read_text())
            if cached["settings_key"] != settings_key:
                raise ValueError(
                    f"{path} was made with other settings or data; pass another work dir (or delete it)"
                )
            if cached["subset_digest"] != p.digest:
                raise ValueError(f"{path} trained another subset than planned now; pass another work dir")
        groups.setdefault(p.group, []).append(p)

    def settle(group: list[Planned]) -> None:
        done = next(
            (
                json.loads(run_path(work, p.spec).read_text())
                for p in group
                if run_path(work, p.spec).is_file()
            ),
            None,
        )
        if done is not None:
            for p in group:
                if not run_path(work, p.spec).is_file():
                    _share(done, p, work)

    todo = []
    for group in groups.values():
        settle(group)
        if not any(run_path(work, p.spec).is_file() for p in group):
            todo.append(group[0])
    position = {id(p): i for i, p in enumerate(planned)}
    todo.sort(key=lambda p: position[id(p)])  # seed-major, as planned
    logger.info(
        "%d runs (%d distinct trainings), %d to train now, %d at a time",
        len(planned),
        len(groups),
        len(todo),
        jobs,
    )
    if jobs <= 1 or len(todo) <= 1:
        for p in todo:
            execute(p, settings, work, settings_key, train_script)
            settle(groups[p.group])
    else:
        threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        context = multiprocessing.get_context("spawn")  # no fork after torch's thread pools started
        with concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_worker_init, initargs=(threads,)
        ) as pool:
            futures = {
                pool.submit(_worker, p, settings, str(work), settings_key, train_script): p for p in todo
            }
            for future in concurrent.futures.as_completed(futures):
                future.result()  # re-raise a failed run here
                settle(groups[futures[future].group])
    return [json.loads(run_path(work, p.spec).read_text()) for p in planned]


def cached_runs(planned: Sequence[Planned], work: Path, settings_key: str) -> list[dict[str, Any]]:
    """The runs already in the cache (for a report while the grid is still running)."""
    out = []
    for p in planned:
        path = run_path(work, p.spec)
        if path.is_file():
            record = json.loads(path.read_text())
            if record["settings_key"] == settings_key:
                out.append(record)
    return out
