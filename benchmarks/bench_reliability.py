"""How reliable is the difficulty score, and what does reliability cost? (issue 12; docs/scoring.md)

On the bundled digits (the demo's setting: 1,437 training images at 16 px, pixel space, scorers trained
from scratch with :func:`d2c_hf.train_scorer` exactly as ``d2c demo`` trains its own), for each scorer:

1. **Pools of draws.** The per-(image, timestep, draw) denoising errors of the real scorer
   (:meth:`DifficultyScorer.draw_errors`, the code every score runs through) for several estimators: the
   paper's evenly spaced grid at T = 10, 50 and 100, antithetic pairs and stratified timesteps at T = 10,
   each with ``D_max`` independent draws per timestep. Cached (``--cache``), so a rerun only computes what
   is missing.
2. **Reliability against cost.** For every estimator and every number of draws D <= D_max / 2:
   * *test-retest*: the within-class Spearman correlation between two independent estimates (draws
     ``[0, D)`` against ``[D, 2D)``): the reliability itself, what two scorings of the same data agree on;
   * *split-half*: what a run with D draws reports about itself (``reliability_from_halves``: even against
     odd draws, Spearman–Brown corrected), to check that the free estimate predicts the real one;
   * the same with per-timestep standardisation (each timestep's errors z-scored over the data, fitted on
     each estimate's own errors as a run does);
   * cost: forward passes per image, T x D (x 2 antithetic).
3. **Which timesteps carry the image.** From the T = 10 pool: per timestep, the image-specific (signal)
   standard deviation of the error (the within-class covariance of two independent halves of the draws),
   the per-draw noise standard deviation, the reliability of that timestep's error alone, and its share of
   the within-class variance of the raw mean.
4. **The cheapest setting** that reaches 0.8 and 0.9 (test-retest), per scorer.

    python benchmarks/bench_reliability.py                        # 400- and 2,000-step scorers (~1 h on 2 cores)
    python benchmarks/bench_reliability.py --scorer-steps 400 --json rel.json
    python benchmarks/bench_reliability.py --quick                # seconds: a smoke test of the whole script
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Pool:
    """One estimator, with ``max_draws`` independent draws per timestep."""

    num_timesteps: int
    max_draws: int
    grid: str = "midpoints"
    antithetic: bool = False

    @property
    def name(self) -> str:
        extra = ("-antithetic" if self.antithetic else "") + (
            "" if self.grid == "midpoints" else f"-{self.grid}"
        )
        return f"T{self.num_timesteps}{extra}"

    def passes(self, draws: int) -> int:
        return self.num_timesteps * draws * (2 if self.antithetic else 1)


FULL_POOLS = (
    Pool(10, 16),
    Pool(100, 2),
    Pool(50, 2),
    Pool(10, 4, antithetic=True),
    Pool(10, 4, grid="stratified"),
)
QUICK_POOLS = (Pool(2, 4), Pool(2, 2, antithetic=True), Pool(2, 2, grid="stratified"))


# --------------------------------------------------------------------------------------
# data, scorers, pools (cached)
# --------------------------------------------------------------------------------------


def digits(resolution: int, max_rows: int | None):
    from d2c_hf.data.digits import load_digits_dataset

    train = load_digits_dataset(image_size=resolution)["train"]
    return train.select(range(max_rows)) if max_rows else train


def scorer_folder(cache: Path, train, steps: int, resolution: int, seed: int) -> tuple[Path, float]:
    """The demo's scorer recipe (``d2c_hf.demo``: batch 64, lr default) trained for ``steps`` steps, cached."""
    from d2c_hf.selection.train_scorer import train_scorer

    folder = cache / f"scorer-{steps}-r{resolution}-s{seed}-n{len(train)}"
    record = folder / "bench_train_seconds.json"
    if record.is_file():
        return folder, json.loads(record.read_text())["seconds"]
    start = time.perf_counter()
    train_scorer(train, folder, resolution=resolution, num_steps=steps, batch_size=64, seed=seed)
    seconds = time.perf_counter() - start
    record.write_text(json.dumps({"seconds": seconds}))
    return folder, seconds


def pool_errors(cache: Path, folder: Path, train, pool: Pool, batch_size: int) -> tuple[np.ndarray, float]:
    """``(N, T, max_draws)`` float32 errors of ``pool`` and the seconds they took (cached)."""
    from d2c_hf.selection.noise import pixel_keys
    from d2c_hf.selection.scorer import DifficultyScorer
    from d2c_hf.utils.images import preprocess_images

    path = cache / f"{folder.name}-{pool.name}-D{pool.max_draws}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["errors"], float(z["seconds"])
    scorer = DifficultyScorer.from_pretrained(
        folder,
        num_timesteps=pool.num_timesteps,
        timestep_grid=pool.grid,
        antithetic=pool.antithetic,
        num_draws=pool.max_draws,
        batch_size=batch_size,
        max_forward_batch=4096,
        device="cpu",
    )
    labels = np.asarray(train["label"], np.int64)
    out = np.empty((len(train), pool.num_timesteps, pool.max_draws), np.float32)
    start = time.perf_counter()
    for a in range(0, len(train), batch_size):
        rows = train.select(range(a, min(a + batch_size, len(train))))
        pixels, _ = preprocess_images(rows["image"], scorer.resolution)
        x0 = scorer.encode(pixels)
        errors = scorer.draw_errors(x0, labels[a : a + len(rows)], pixel_keys(pixels), range(pool.max_draws))
        out[a : a + len(rows)] = errors.cpu().numpy()
    seconds = time.perf_counter() - start
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, errors=out, seconds=seconds)
    tmp.replace(path)
    return out, seconds


# --------------------------------------------------------------------------------------
# analyses
# --------------------------------------------------------------------------------------


def scores_of(errors: np.ndarray, standardize: bool) -> np.ndarray:
    """``(N, T, D)`` errors -> ``(N,)`` scores (raw mean, or mean z-score fitted on these errors)."""
    from d2c_hf.selection.reliability import Standardization

    per_timestep = errors.mean(axis=2)
    if standardize:
        return Standardization.fit(per_timestep).apply(per_timestep)
    return per_timestep.mean(axis=1)


def reliability_curve(errors: np.ndarray, labels: np.ndarray, pool: Pool) -> list[dict[str, Any]]:
    """Test-retest and split-half reliability for D = 1, 2, 4, ... <= max_draws / 2, raw and standardised."""
    from d2c_hf.selection.reliability import Standardization, reliability_from_halves, score_reliability

    rows = []
    draws = 1
    while 2 * draws <= pool.max_draws:
        first, second = errors[:, :, :draws], errors[:, :, draws : 2 * draws]
        row: dict[str, Any] = {"pool": pool.name, "draws": draws, "passes": pool.passes(draws)}
        for standardize in (False, True):
            key = "std" if standardize else "raw"
            retest = score_reliability(scores_of(first, standardize), scores_of(second, standardize), labels)
            row[f"retest_{key}"] = retest.reliability
            row[f"retest_{key}_spread"] = retest.spread
            if draws >= 2:
                half = draws // 2
                halves = np.stack(
                    [first[:, :, 0 : 2 * half : 2].mean(2), first[:, :, 1 : 2 * half : 2].mean(2)], axis=2
                )
                stats = Standardization.fit(first.mean(2)) if standardize else None
                split = reliability_from_halves(halves, labels, num_draws=draws, standardization=stats)
                row[f"split_{key}"] = split.reliability
        rows.append(row)
        draws *= 2
    return rows


def within_class(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Values minus their class mean."""
    out = values.astype(np.float64).copy()
    for c in np.unique(labels):
        out[labels == c] -= out[labels == c].mean(axis=0)
    return out


def timestep_signal(errors: np.ndarray, labels: np.ndarray, timesteps: list[Any]) -> list[dict[str, Any]]:
    """Per timestep: signal and noise SDs (within class), its own reliability, its share of the raw mean."""
    from d2c_hf.selection.reliability import score_reliability

    half = errors.shape[2] // 2
    a = within_class(errors[:, :, :half].mean(2), labels)  # (N, T)
    b = within_class(errors[:, :, half : 2 * half].mean(2), labels)
    single = within_class(errors[:, :, 0], labels)
    signal_var = (a * b).mean(axis=0)  # cov of independent estimates = image-specific variance
    noise_var = np.maximum(single.var(axis=0) - signal_var, 0.0)  # per draw
    total = within_class(errors.mean(2).mean(1), labels)
    full = within_class(errors.mean(2), labels)
    # cov(e_t, mean) / (T var(mean)): each timestep's share of the within-class variance of the raw mean (sums to 1)
    share = (full * total[:, None]).mean(axis=0) / max(total.var(), 1e-30) / errors.shape[1]
    rows = []
    for i, t in enumerate(timesteps):
        own = score_reliability(errors[:, i, :half].mean(1), errors[:, i, half : 2 * half].mean(1), labels)
        rows.append(
            {
                "timestep": t,
                "mean_error": float(errors[:, i].mean()),
                "signal_sd": float(np.sqrt(max(signal_var[i], 0.0))),
                "noise_sd_per_draw": float(np.sqrt(noise_var[i])),
                f"reliability_{half}_draws": own.reliability,
                "share_of_raw_variance": float(share[i]),
            }
        )
    return rows


def cheapest(curve: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The measured setting with the fewest forward passes whose test-retest reliability reaches ``target``."""
    hits = []
    for row in curve:
        for key in ("raw", "std"):
            value = row.get(f"retest_{key}")
            if value is not None and value >= target:
                hits.append((row["passes"], key != "raw", row["pool"], row["draws"], key, value))
    if not hits:
        return None
    passes, _, pool, draws, key, value = min(hits)
    return {
        "pool": pool,
        "draws": draws,
        "standardized": key == "std",
        "passes": passes,
        "reliability": value,
    }


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------


def run(
    cache: Path,
    scorer_steps: list[int],
    pools: tuple[Pool, ...],
    *,
    resolution: int = 16,
    max_rows: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    import datasets

    from d2c_hf.selection.scorer import DifficultyScorer

    datasets.disable_progress_bars()
    cache.mkdir(parents=True, exist_ok=True)
    train = digits(resolution, max_rows)
    labels = np.asarray(train["label"], np.int64)
    results: dict[str, Any] = {
        "rows": len(train),
        "resolution": resolution,
        "threads": torch.get_num_threads(),
        "scorers": [],
    }
    for steps in scorer_steps:
        folder, train_seconds = scorer_folder(cache, train, steps, resolution, seed)
        print(f"scorer {steps} steps: {train_seconds:.0f} s", flush=True)
        entry: dict[str, Any] = {"steps": steps, "train_seconds": train_seconds, "pools": {}, "curve": []}
        for pool in pools:
            errors, seconds = pool_errors(cache, folder, train, pool, batch_size)
            print(f"scorer {steps}: pool {pool.name} x {pool.max_draws} draws: {seconds:.0f} s", flush=True)
            entry["pools"][pool.name] = {
                "seconds": seconds,
                "passes_per_image": pool.passes(pool.max_draws),
                "pairs_per_s": len(train) * pool.passes(pool.max_draws) / seconds,
            }
            entry["curve"].extend(reliability_curve(errors, labels, pool))
            if (
                pool.grid == "midpoints"
                and not pool.antithetic
                and pool.num_timesteps == min(p.num_timesteps for p in pools)
            ):
                grid = DifficultyScorer.from_pretrained(
                    folder, num_timesteps=pool.num_timesteps, device="cpu"
                ).timesteps
                entry["timesteps"] = timestep_signal(errors, labels, grid)
        entry["cheapest"] = {str(t): cheapest(entry["curve"], t) for t in (0.8, 0.9)}
        results["scorers"].append(entry)
    return results


def fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def report(results: dict[str, Any]) -> str:
    lines = [f"digits: {results['rows']} rows at {results['resolution']} px, {results['threads']} threads"]
    for entry in results["scorers"]:
        lines.append(f"\n## scorer trained {entry['steps']} steps ({entry['train_seconds']:.0f} s)\n")
        lines.append(
            "| estimator | draws | passes/image | test-retest raw | split-half raw | test-retest std. | split-half std. |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for row in entry["curve"]:
            lines.append(
                f"| {row['pool']} | {row['draws']} | {row['passes']} | {fmt(row.get('retest_raw'))} | "
                f"{fmt(row.get('split_raw'))} | {fmt(row.get('retest_std'))} | {fmt(row.get('split_std'))} |"
            )
        if entry.get("timesteps"):
            lines.append(
                "\n| timestep | mean error | signal SD | noise SD / draw | own reliability | share of raw variance |"
            )
            lines.append("|---|---|---|---|---|---|")
            for row in entry["timesteps"]:
                own = next(v for k, v in row.items() if k.startswith("reliability_"))
                lines.append(
                    f"| {row['timestep']} | {row['mean_error']:.4f} | {row['signal_sd']:.4f} | "
                    f"{row['noise_sd_per_draw']:.4f} | {fmt(own)} | {row['share_of_raw_variance']:.2f} |"
                )
        lines.append("")
        for target, best in entry["cheapest"].items():
            lines.append(f"cheapest to reach {target}: {best}")
        for name, pool in entry["pools"].items():
            lines.append(
                f"pool {name}: {pool['seconds']:.0f} s, {pool['pairs_per_s']:.0f} (image, timestep) pairs/s"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache", default="benchmarks/.cache/reliability", help="scorers and pools (resumable)"
    )
    parser.add_argument("--scorer-steps", type=int, nargs="+", default=[400, 2000])
    parser.add_argument("--quick", action="store_true", help="a 5-step scorer, 40 rows, T=2: seconds")
    parser.add_argument(
        "--pools",
        nargs="+",
        default=None,
        help="only these estimators (e.g. T10 T100 T10-antithetic); default all",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        results = run(Path(args.cache), [5], QUICK_POOLS, max_rows=40, batch_size=16)
    else:
        pools = tuple(p for p in FULL_POOLS if args.pools is None or p.name in args.pools)
        if not pools:
            raise SystemExit(f"--pools: none of {args.pools} is one of {[p.name for p in FULL_POOLS]}")
        results = run(Path(args.cache), args.scorer_steps, pools, batch_size=args.batch_size)
    print(report(results), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
