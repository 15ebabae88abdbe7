"""The benchmark's report: ``NAME.md`` (tables, protocol, command, runtime), ``NAME.json`` (every number,
run and curve) and the figures of :mod:`.figures`, written atomically into one folder. A hand-written
``NAME_reading.md`` beside them, if present, becomes the report's *Reading* section."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .analysis import REGIME_CLASS_ACCURACY, REGIME_SEPARATION
from .evaluator import METRIC_KEYS
from .figures import METRIC_LABELS, plot_curves, plot_map
from .settings import BenchmarkSettings

__all__ = ["render", "write_report"]

CONTRAST_LABELS = {
    "fd/unguided": "ΔFD",
    "kid_mean/unguided": "ΔKID",
    "precision/unguided": "Δprecision",
    "recall/unguided": "Δrecall",
    "class_accuracy/unguided": "Δclass acc.",
    "fd_log_area/unguided": "ΔFD over log-step",
    "fd/guided": "ΔFD (guided)",
    "class_accuracy/guided": "Δclass acc. (guided)",
}


def fmt_metric(value: float | None, key: str, spread: float | None = None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    digits = 4 if key.startswith("kid") else 3
    text = f"{value:.{digits}f}"
    if spread is not None and math.isfinite(spread):
        text += f" ± {spread:.{digits}f}"
    return text


def fmt_ci(entry: Mapping[str, Any] | None, key: str) -> str:
    if not entry:
        return "—"
    digits = 4 if key.startswith("kid") else 3
    star = " *" if len(entry["per_seed"]) > 1 and (entry["low"] > 0 or entry["high"] < 0) else ""
    return f"{entry['mean']:+.{digits}f} [{entry['low']:+.{digits}f}, {entry['high']:+.{digits}f}]{star}"


def _steps(summary: Mapping[str, Any]) -> str:
    info = summary.get("steps_to_threshold")
    if info is None:
        return "—"
    n = len(info["per_seed"])
    if info["reached"] < n:
        return f"not reached by {n - info['reached']} of {n} seeds"
    return f"{info['median']:.0f}"


def main_table(cells: Mapping[str, Any]) -> str:
    header = (
        "| training set | images | seeds | "
        + " | ".join(METRIC_LABELS[k] for k in METRIC_KEYS)
        + " | FD ↓ (guided) | class acc. ↑ (guided) | steps to random's final FD ↓ | FD over log-step ↓ |"
    )
    lines = [header, "|---" * (len(METRIC_KEYS) + 7) + "|"]
    for cell in cells.values():
        s = cell["summary"]
        n = len(s["seeds"])

        def val(mode: str, k: str, s: Mapping[str, Any] = s, n: int = n) -> str:
            return fmt_metric(s[mode][k]["mean"], k, s[mode][k]["std"] if n > 1 else None)

        area = s.get("fd_log_area")
        area_text = fmt_metric(area["mean"], "fd", area["std"] if n > 1 else None) if area else "—"
        lines.append(
            f"| {cell['name']} | {s['num_images']:g} | {n} | "
            + " | ".join(val("unguided", k) for k in METRIC_KEYS)
            + f" | {val('guided', 'fd')} | {val('guided', 'class_accuracy')} | {_steps(s)} | {area_text} |"
        )
    return "\n".join(lines)


def contrast_table(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    keys = list(CONTRAST_LABELS)
    lines = [
        "| contrast | seeds | " + " | ".join(CONTRAST_LABELS[k] for k in keys) + " |",
        "|---" * (len(keys) + 2) + "|",
    ]
    for name, diff in rows:
        seeds = len(next(iter(diff.values()))["per_seed"]) if diff else 0
        lines.append(
            f"| {name} | {seeds} | " + " | ".join(fmt_ci(diff.get(k), k.split("/")[0]) for k in keys) + " |"
        )
    return "\n".join(lines)


def map_table(results: Mapping[str, Any], budget_labels: Sequence[str], key: str) -> str:
    lines = ["| strategy | " + " | ".join(budget_labels) + " |", "|---" * (len(budget_labels) + 1) + "|"]
    for row in results["map"].values():
        lines.append(
            f"| {row['name']} | "
            + " | ".join(fmt_ci(row["cells"].get(b, {}).get(key), key.split("/")[0]) for b in budget_labels)
            + " |"
        )
    return "\n".join(lines)


def verdict_text(results: Mapping[str, Any], budget_labels: Sequence[str]) -> list[str]:
    """The FD map read off its intervals (:func:`~d2c_hf.benchmark.analysis.verdicts`), as a table and a line."""
    v = results.get("verdicts")
    if not v:
        return []
    names = {arm: row["name"] for arm, row in results["map"].items()}

    def listed(arms: Sequence[str]) -> str:
        return ", ".join(names[a] for a in arms) or "—"

    rows = [
        "| budget | lowest mean ΔFD | better than random | worse than random | not resolved |",
        "|---|---|---|---|---|",
    ]
    for label in budget_labels:
        b = v["budgets"].get(label)
        if b is None:
            continue
        low = b["lowest"]
        lowest = (
            "none below random"
            if low is None
            else f"{' = '.join(names[a] for a in low['arms'])}: " + fmt_ci(low, "fd")
        )
        rows.append(
            f"| {label} | {lowest} | {listed(b['better'])} | {listed(b['worse'])} | {listed(b['unresolved'])} |"
        )
    steady = listed(v["never_worse_better_twice"]) if v["never_worse_better_twice"] else "none"
    return [
        "Read off the FD map's intervals: *better* / *worse* = the paired 95 % interval lies below / above 0, "
        f"*not resolved* = it contains 0 or has fewer than {v['min_seeds']} seeds. Tied arms kept the same subsets. "
        "With few seeds the intervals describe these seeds; they are not a test.",
        "",
        *rows,
        "",
        f"Never worse than random and better at two or more budgets: **{steady}**.",
    ]


def regime_text(check: Mapping[str, Any]) -> list[str]:
    rows = [
        "| step | FD random | FD full split | gap / pooled seed std | class acc. random | class acc. full |",
        "|---|---|---|---|---|---|",
    ]
    for r in check["checkpoints"]:
        sep = _fmt_sep(r["separation"])
        rows.append(
            f"| {r['step']} | {r['fd_random']:.3f} ± {r['fd_random_std']:.3f} | {r['fd_full']:.3f} ± "
            f"{r['fd_full_std']:.3f} | {sep} | {r['class_accuracy_random']:.3f} | {r['class_accuracy_full']:.3f} |"
        )
    f = check["final"]
    sep = _fmt_sep(f["separation"])
    verdict = "**the regime check passes**" if f["passes"] else "**the regime check fails**"
    return [
        *rows,
        "",
        f"On the final evaluation (mean over the sampling seeds, the arm tables' measurement; {len(f['seeds'])} "
        f"seeds) the full split is ahead of random at {check['budget']} by {f['fd_random'] - f['fd_full']:.3f} FD "
        f"({f['fd_random']:.3f} ± {f['fd_random_std']:.3f} vs {f['fd_full']:.3f} ± {f['fd_full_std']:.3f}), {sep} pooled "
        f"seed standard deviations, with class accuracy {f['class_accuracy_full']:.3f} (needed: "
        f"{f['class_accuracy_needed']:.3f} = {REGIME_CLASS_ACCURACY} x the classifier's accuracy on real reference "
        f"images): {verdict} (needs > {REGIME_SEPARATION:g} std and that accuracy). When it fails, data barely "
        "matters at this horizon and model size, and no selector can show much.",
        *_gaps_by_budget(check.get("by_budget", {})),
    ]


def _fmt_sep(separation: float | None) -> str:
    return "—" if separation is None else f"{separation:.1f}"


def _gaps_by_budget(gaps: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if len(gaps) < 2:
        return []
    rows = [
        f"| {label} | {len(g['seeds'])} | {g['fd_random']:.3f} ± {g['fd_random_std']:.3f} | "
        f"{g['fd_random'] - g['fd_full']:+.3f} | {_fmt_sep(g['separation'])} |"
        for label, g in gaps.items()
    ]
    return [
        "",
        "The same final gap at every budget (random minus the full split; where it is small, the amount of data "
        "no longer matters and the map's cells at that budget can show little):",
        "",
        "| budget | seeds | FD random | FD random - full split | gap / pooled seed std |",
        "|---|---|---|---|---|",
        *rows,
    ]


def protocol(settings: BenchmarkSettings, record: Mapping[str, Any]) -> list[str]:
    sit, prepared, data = settings.sit, record["prepared"], record["data"]
    rel = prepared["reliability"]
    ev = prepared["evaluator"]
    probes = [
        f"| {name} | {p['dim']} | {p['linear_probe']:.3f} | {p['knn5']:.3f} |"
        for name, p in prepared["feature_probes"].items()
    ]
    sizes = data["train_class_sizes"]
    return [
        "## Protocol",
        "",
        f"* **Data**: `{data['source']}`, {len(data['class_names'])} classes "
        f"({', '.join(data['class_names'][:12])}{', ...' if len(data['class_names']) > 12 else ''}); training split "
        f"{data['num_train']} images (class sizes {min(sizes)}-{max(sizes)}), reference {data['num_reference']} "
        f"images ({data['reference']}), never trained on. Every image is centre-cropped and resized to "
        f"{settings.resolution} px once.",
        f"* **Model**: `{sit.model}` with `{json.dumps(dict(sit.model_config_overrides))}` ({settings.num_tokens} "
        f"tokens, pixel space); {sit.max_train_steps} steps, batch {sit.train_batch_size}, AdamW lr "
        f"{sit.learning_rate}, EMA {sit.ema_decay}, class dropout 0.1; Select only (no Attach: no text or "
        "visual condition, no REPA loss), so the selector is the only thing that differs.",
        f"* **Evaluation**: the EMA model at steps {settings.eval_steps()}; SDE Euler-Maruyama, "
        f"{sit.num_inference_steps} steps, {settings.samples_per_class} images per class on average (shared "
        "as the reference's class mix), from the same noise for every model. At the last step every sampling seed "
        f"{list(settings.sampling_seeds)}, unguided and with classifier-free guidance {settings.guidance_scale}; "
        "the tables' final numbers are the mean over sampling seeds, the curves use the first.",
        f"* **Evaluator** ({ev['kind']}): {ev['what']}; FD and KID in its {ev['dim']}-d feature space, "
        f"precision/recall (k = 3), class acc. = its classifier's accuracy on the requested class (on real "
        f"reference images: {ev['reference_accuracy']:.3f}). Fitted on the whole training split, never on a subset.",
        f"* **Selection inputs**: difficulty from a DiT trained from scratch on the training split "
        f"({settings.scorer_steps} steps), {settings.num_timesteps} timesteps x {settings.num_draws} noise draws "
        f"per image, each timestep standardised over the split; split-half reliability "
        f"**{_fmt(rel.get('reliability'))}** (`DifficultyScorer.reliability`). Feature strategies select in the "
        f"mean-patch-token space of a {prepared['selection_features']}. What the feature spaces know about the "
        "classes (reference accuracy of probes fitted on the training split):",
        "",
        "| feature space | dim | linear probe | 5-NN |",
        "|---|---|---|---|",
        *probes,
        "",
        f"* **Seeds** {list(settings.seeds)}: seed s fixes the selection's own randomness, the batch order, the "
        "training noise and the initialisation, so every arm is compared with random seed by seed. Arms whose "
        "subset and seed coincide train the same model: it is trained once and shared (listed below).",
        "* **Statistics**: mean ± std over seeds (ddof 1). Δ = arm - random, paired by seed, mean with a "
        "percentile-bootstrap 95 % interval over seeds (10,000 resamples; with 3 seeds the interval is coarse and "
        "narrower than a t-interval: read it as a description of the seeds); `*` marks intervals that exclude 0. "
        "*Steps to random's final FD*: median over seeds of the first step where the arm's FD curve reaches "
        "random's final FD, interpolated in log-step. *FD over log-step*: the FD curve's mean over log(step).",
        "",
    ]


def _fmt(value: float | None) -> str:
    return "not computable" if value is None else f"{value:.3f}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(output_dir: Path, name: str, settings: BenchmarkSettings, record: Mapping[str, Any]) -> Path:
    """Write ``NAME.md`` and ``NAME.json`` (the figures are made by :func:`render`)."""
    results = record["results"]
    labels = [b.label for b in settings.budgets]
    done, total = record["num_runs_done"], record["num_runs"]
    lines = [
        f"# Which selection, at which budget? `{record['data']['source']}`",
        "",
        "Produced by `d2c benchmark` (docs/benchmark-tool.md):",
        "",
        "```bash",
        record["command"],
        "```",
        "",
        f"Runs: **{done} of {total}** in the cache ({record['num_trained']} distinct trainings; "
        f"{record['num_runs_executed']} trained by this invocation). Wall clock of this invocation "
        f"{record['runtime_seconds'] / 60:.1f} min, {record['jobs']} job(s) x {record['threads_per_job']} thread(s) "
        f"on {record['cpu_count']} CPU core(s) ({record['machine']}), torch {record['torch']}; sum of per-run "
        f"times {record['run_seconds_total'] / 60:.1f} min (mean {record['run_seconds_mean'] / 60:.1f} min per "
        f"training); preparation {record['prepared']['seconds'] / 60:.1f} min when it ran.",
        "",
    ]
    if done < total:
        lines += [
            f"**The grid is incomplete: {total - done} runs are missing.** Cells average the seeds they have "
            "(the seeds column says how many).",
            "",
        ]
    reading = output_dir / f"{name}_reading.md"
    if reading.is_file():
        lines += ["## Reading", "", reading.read_text().strip(), ""]
    lines += [
        "## The map: each strategy against random, by budget",
        "",
        "Paired FD difference (arm - random, same seed; negative = better than random), mean [95 % bootstrap "
        "interval]:",
        "",
        map_table(results, labels, "fd/unguided"),
        "",
        "Class accuracy, precision and recall (positive = better than random):",
        "",
    ]
    for key, title in (
        ("class_accuracy/unguided", "Δclass acc."),
        ("precision/unguided", "Δprecision"),
        ("recall/unguided", "Δrecall"),
    ):
        lines += [f"{title}:", "", map_table(results, labels, key), ""]
    lines += [f"![the map]({name}_map.png)", ""]
    verdict = verdict_text(results, labels)
    if verdict:
        lines += ["## What the intervals say", "", *verdict, ""]
    for budget in settings.budgets:
        block = results["budgets"][budget.label]
        if not block["cells"]:
            continue
        strides = record.get("interval_strides", {}).get(budget.label, {})
        stride_text = ", ".join(f"{k}: k = {v}" for k, v in strides.items())
        threshold = block["threshold_fd"]
        lines += [
            f"## Budget {budget.label}" + (f" (interval strides: {stride_text})" if stride_text else ""),
            "",
            "Final metrics (mean ± std over seeds; unguided unless marked)"
            + (
                f"; random's final FD, the steps column's threshold: {threshold:.3f}."
                if threshold is not None
                else "."
            ),
            "",
            main_table(block["cells"]),
            "",
            "Paired differences against random (arm - random, same seed), mean [95 % bootstrap interval]; for FD, "
            "KID and the log-step area negative is better, for the others positive:",
            "",
            contrast_table(
                [(c["name"], c["vs_random"]) for c in block["cells"].values() if c.get("vs_random")]
            ),
            "",
            f"![curves, budget {budget.label}]({name}_{budget.slug}_curves.png)",
            "",
        ]
    if "regime" in results:
        lines += [
            "## The regime check: does data matter here?",
            "",
            f"Random at the largest budget ({results['regime']['budget']}) against the full training split:",
            "",
            *regime_text(results["regime"]),
            "",
        ]
    spread = results["evaluator_spread"]
    real = record["real_reference"]
    lines += [
        "## The evaluator's own spread",
        "",
        "The same final model sampled with two noise seeds: the standard deviation of one evaluation (sqrt of the "
        "mean squared half-difference over all trainings). The tables average the sampling seeds. Effects smaller "
        "than this are not resolved.",
        "",
        "| sampling | " + " | ".join(METRIC_LABELS[k] for k in METRIC_KEYS) + " |",
        "|---" * (len(METRIC_KEYS) + 1) + "|",
        *[
            f"| {mode} | " + " | ".join(fmt_metric(spread[mode][k], k) for k in METRIC_KEYS) + " |"
            for mode in ("unguided", "guided")
        ],
        "",
        "*Real-data floor*: "
        + ", ".join(f"{METRIC_LABELS[k]} {fmt_metric(real[k], k)}" for k in METRIC_KEYS)
        + " for as many real training images, in the same class mix, scored the same way.",
        "",
        *protocol(settings, record),
    ]
    shared = sorted({(r["tag"], r["shared_with"]) for r in record["runs"] if r.get("shared_with")})
    if shared:
        lines += [
            "Runs that share a training (same subset, same seed): "
            + "; ".join(f"`{a}` = `{b}`" for a, b in shared)
            + ".",
            "",
        ]
    lines += [f"Raw numbers, per-seed values and curves: `{name}.json`.", ""]
    path = output_dir / f"{name}.md"
    _write(path, "\n".join(lines))
    _write(output_dir / f"{name}.json", json.dumps(_jsonable(record), indent=1) + "\n")
    return path


def render(output_dir: Path, name: str, settings: BenchmarkSettings, record: Mapping[str, Any]) -> Path:
    """The figures and the report of ``record``; returns the Markdown's path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    results = record["results"]
    labels = [b.label for b in settings.budgets]
    if results["map"]:
        plot_map(
            output_dir / f"{name}_map.png",
            results,
            labels,
            f"{record['data']['source']}: paired difference against random (mean [95 % interval] over seeds)",
        )
    for budget in settings.budgets:
        cells = results["budgets"][budget.label]["cells"]
        if cells:
            plot_curves(
                output_dir / f"{name}_{budget.slug}_curves.png",
                f"budget {budget.label} (mean over seeds, band ± std)",
                cells,
            )
    return write_report(output_dir, name, settings, record)
