"""One call that runs the benchmark on a labelled image dataset: :func:`run_benchmark` (``d2c benchmark``)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.files import check_apart
from .settings import BenchmarkSettings, fingerprint

logger = logging.getLogger(__name__)

__all__ = ["run_benchmark"]


def _check_work_dir(work: Path, settings: BenchmarkSettings, identity: dict[str, Any]) -> str:
    """Record the work dir's settings and data on first use; refuse others later. Returns the results' key."""
    from ..utils.files import write_json

    key = json.loads(json.dumps({"result": settings.result_key(), "data": identity}))
    path = work / "benchmark.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != key:
            changed = sorted(
                k
                for k in set(saved["result"]) | set(key["result"])
                if saved["result"].get(k) != key["result"].get(k)
            )
            what = f"settings {changed}" if changed else "data"
            raise ValueError(
                f"the work dir {work} holds runs of other {what}: pass another --work_dir (or delete it). Arms, "
                "budgets and seeds may change; everything else must stay."
            )
    else:
        work.mkdir(parents=True, exist_ok=True)
        write_json(path, key)
    return fingerprint(key)


def _interval_strides(
    settings: BenchmarkSettings, arrays: dict[str, np.ndarray]
) -> dict[str, dict[str, int]]:
    from ..selection.strategies import select

    out: dict[str, dict[str, int]] = {}
    for budget in settings.budgets:
        for arm in settings.arms:
            if arm.strategy == "interval":
                result = select(
                    arrays["scores"], arrays["train_labels"], **budget.kwargs(), interval=arm.interval
                )
                out.setdefault(budget.label, {})[arm.key] = int(result.params["interval"])
    return out


def run_benchmark(
    dataset: Any,
    settings: BenchmarkSettings,
    *,
    work_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    name: str = "benchmark",
    image_column: str = "image",
    label_column: str = "label",
    split: str | None = None,
    reference_split: str | None = None,
    holdout: float = 0.2,
    jobs: int = 1,
    threads: int | None = None,
    train_script: str | None = None,
    report_only: bool = False,
    command: str | None = None,
) -> Path:
    """Run (or resume) the benchmark of ``settings`` on ``dataset`` and write its report; returns the
    Markdown's path.

    Args:
        dataset: a ``Dataset`` / ``DatasetDict``, a ``save_to_disk`` folder, an ``imagefolder`` or ``"digits"``
            (see :func:`.data.load_labelled_images`, which also reads ``image_column`` ... ``holdout``).
        settings: the grid and the training/evaluation settings.
        work_dir: cache of the prepared inputs and of every run's result (resumable; refuses other settings
            or data, except arms, budgets and seeds).
        output_dir, name: where ``NAME.md``, ``NAME.json`` and the figures go.
        jobs, threads: runs trained side by side, and torch/BLAS threads per run.
        train_script: a modified ``examples/train_sit.py`` (default: the packaged one).
        report_only: train nothing; report the runs already in the cache (a grid still running).
        command: the command line recorded in the report.
    """

    from ..demo import train_script_command

    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if not name or any(c in name for c in "/\\"):
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    train_script_command(train_script)  # fail before any work if a given copy is missing
    inputs = {
        "dataset": dataset if isinstance(dataset, (str, os.PathLike)) else None,
        "train_script": train_script,
    }
    for flag, folder in (("work_dir", work_dir), ("output_dir", output_dir)):
        check_apart(folder, inputs, flag)  # a cache or report written into the data it reads
    work, out = Path(work_dir), Path(output_dir)
    started = time.perf_counter()
    with _limited_threads(threads):  # this process too: the preparation, and the runs when jobs == 1
        return _run(
            dataset, settings, work=work, out=out, started=started, name=name, image_column=image_column,
            label_column=label_column, split=split, reference_split=reference_split, holdout=holdout, jobs=jobs,
            threads=threads, train_script=train_script, report_only=report_only, command=command,
        )  # fmt: skip


@contextlib.contextmanager
def _limited_threads(threads: int | None) -> Iterator[None]:
    """torch's and the BLAS libraries' threads set to ``threads`` for the block (``None``: unchanged)."""
    if threads is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(before)


def _run(
    dataset: Any,
    settings: BenchmarkSettings,
    *,
    work: Path,
    out: Path,
    started: float,
    name: str,
    image_column: str,
    label_column: str,
    split: str | None,
    reference_split: str | None,
    holdout: float,
    jobs: int,
    threads: int | None,
    train_script: str | None,
    report_only: bool,
    command: str | None,
) -> Path:
    import torch

    from .analysis import analyse
    from .data import load_labelled_images
    from .evaluator import METRIC_KEYS, SampleQuality, load_evaluator
    from .prepare import PREPARED, load_prepared_arrays, prepare
    from .report import render
    from .runs import cached_runs, plan, run_all

    data = load_labelled_images(
        dataset,
        image_column=image_column,
        label_column=label_column,
        split=split,
        reference_split=reference_split,
        holdout=holdout,
        resolution=settings.resolution,
    )
    settings_key = _check_work_dir(work, settings, data.identity)
    prepared = prepare(settings, data, work)
    arrays = load_prepared_arrays(work)
    planned = plan(settings, arrays)
    before = {p.name for p in (work / "runs").glob("*.json")} if (work / "runs").is_dir() else set()
    if report_only:
        runs = cached_runs(planned, work, settings_key)
    else:
        runs = run_all(
            planned, settings, work, settings_key, jobs=jobs, threads=threads, train_script=train_script
        )
    evaluator = load_evaluator(
        work / PREPARED / "evaluator", num_tokens=settings.num_tokens, resolution=settings.resolution
    )
    quality = SampleQuality(
        evaluator,
        arrays["reference_pixels"],
        arrays["reference_labels"],
        num_classes=len(data.class_names),
        samples_per_class=settings.samples_per_class,
        num_inference_steps=1,
    )
    real = quality.real_reference(arrays["train_pixels"], arrays["train_labels"], seed=0)
    trained = [r for r in runs if not r.get("shared_with")]
    seconds = [r["seconds"] for r in trained]
    record = {
        "settings": settings.to_json(),
        "data": data.identity,
        "prepared": prepared,
        "real_reference": {k: real[k] for k in METRIC_KEYS},
        "interval_strides": _interval_strides(settings, arrays),
        "runs": runs,
        "num_runs": len(planned),
        "num_runs_done": len(runs),
        "num_trained": len(trained),
        "num_runs_executed": sum(1 for r in trained if f"{r['tag']}.json" not in before),
        "run_seconds_total": float(sum(seconds)),
        "run_seconds_mean": float(np.mean(seconds)) if seconds else 0.0,
        "results": analyse(settings, runs, prepared["evaluator"]["reference_accuracy"]),
        "command": command or "run_benchmark(...)",
        "runtime_seconds": time.perf_counter() - started,
        "jobs": jobs,
        "threads_per_job": threads
        or (torch.get_num_threads() if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    path = render(out, name, settings, record)
    logger.info("report: %s (%d of %d runs)", path, len(runs), len(planned))
    return path
