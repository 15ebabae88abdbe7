"""The dataset card of a condensed dataset: its README text and its figures.

* :func:`render_card` writes the README a user reads on the Hub: what D2C is, the exact
  configuration and provenance, the realised per-class counts, how to load the data and
  train on it, licence notes (the default scorer, DiT-XL/2, is CC BY-NC) and the citation.
  The YAML header (``huggingface_hub.DatasetCardData``) carries the ``configs:`` block that
  makes ``load_dataset(repo)`` and ``load_dataset(repo, "classes")`` work.
* :func:`make_figures` draws, with matplotlib's Agg backend and fixed sizes (byte-identical
  PNGs for the same data and library versions):

  - ``difficulty.png``: the difficulty distribution of the *whole* scored dataset per class
    with the selected samples marked (small multiples up to 20 classes; beyond that a
    pooled histogram and the within-class difficulty percentiles of the selected samples);
  - ``montage.png``: selected samples of up to 10 classes, ordered easiest -> hardest;
  - ``counts.png``: realised images per class against the requested budget.

Both take a condensed dataset (:class:`CondensedLike`); the full score distribution comes
from its ``scores`` table (``source_index``, ``label``, ``difficulty`` of every scored row).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..utils.columns import column_numpy, feature_summary
from ..utils.hub import is_local_path

logger = logging.getLogger(__name__)


class CondensedLike(Protocol):
    """What the card reads of a condensed dataset (:class:`d2c_hf.condensed.dataset.CondensedDataset` provides it).

    The card is a view over these public attributes; it imports nothing of the product, and the product
    draws its card when it is saved, so the two never import each other.
    """

    info: dict[str, Any]
    samples: Any
    classes: Any
    scores: Any
    counts: np.ndarray
    num_classes: int
    class_names: list[str]

    def __len__(self) -> int: ...


PAPER_URL = "https://arxiv.org/abs/2507.05914"
DIT_LICENSE_URL = "https://github.com/facebookresearch/DiT/blob/main/LICENSE.txt"
CITATION = """@article{huang2025d2c,
  title   = {Accelerating Diffusion Model Training under Minimal Budgets: A Condensation-Based Perspective},
  author  = {Huang, Rui and Shao, Shitong and Zhou, Zikai and Zhao, Pukun and Guo, Hangyu and Ye, Tian
             and Bai, Lichen and Yang, Shuo and Xie, Zeke},
  journal = {arXiv preprint arXiv:2507.05914},
  year    = {2025}
}"""

#: figure name -> file name (inside the ``figures/`` folder of a saved dataset)
FIGURES = {"difficulty": "difficulty.png", "montage": "montage.png", "counts": "counts.png"}
SMALL_MULTIPLES_MAX_CLASSES = 20
MONTAGE_MAX_CLASSES = 10
MONTAGE_MAX_IMAGES = 10
MONTAGE_TILE = 64
_DPI = 100
_SELECTED = "#d62728"
_ALL = "#9e9e9e"


# --------------------------------------------------------------------------------------
# helpers over info
# --------------------------------------------------------------------------------------


def iter_models(obj: Any, role: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every model provenance record (``{"class", "name_or_path", ...}``, from
    :func:`d2c_hf.utils.hub.model_provenance`) nested anywhere in ``obj``, with its key path."""
    if isinstance(obj, Mapping):
        if "class" in obj and "name_or_path" in obj:
            yield role, dict(obj)
            return
        for key, value in obj.items():
            yield from iter_models(value, f"{role}.{key}" if role else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from iter_models(value, f"{role}[{i}]")


def describe_model(record: Mapping[str, Any] | None) -> str:
    """One-line Markdown description of a provenance record (Hub id + revision, or a hash)."""
    if not record:
        return "none"
    name = record.get("name_or_path")
    if record.get("revision"):
        where = f"`{name}` @ `{str(record['revision'])[:12]}`"
    elif name and not is_local_path(name):
        where = f"`{name}`"
    elif name:
        where = f"local folder `{Path(name).name}`"
    else:
        where = f"in-memory `{record.get('class')}`"
    if record.get("sha256"):
        where += f" (weights sha256 `{str(record['sha256'])[:12]}`)"
    return f"{where} ({record.get('class')})"


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) if len(value) <= 8 else f"{len(value)} values"
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _size_category(n: int) -> str:
    for bound, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < bound:
            return label
    return "1M<n<10M"


# --------------------------------------------------------------------------------------
# the card text
# --------------------------------------------------------------------------------------


def card_data(condensed: CondensedLike, configs: list[dict[str, Any]] | None = None):
    """The card's YAML header (``huggingface_hub.DatasetCardData``) with its ``configs:`` block."""
    from huggingface_hub import DatasetCardData

    info = condensed.info
    return DatasetCardData(
        license=info.get("license", "other"),
        pretty_name=info.get("pretty_name") or _title(condensed),
        tags=["d2c", "dataset-condensation", "diffusion", "image-generation", "d2c-hf"],
        task_categories=["unconditional-image-generation"],
        size_categories=[_size_category(len(condensed))],
        configs=configs or condensed.hub_configs(),
    )


def _title(condensed: CondensedLike) -> str:
    source = (condensed.info.get("source") or {}).get("name")
    base = f"{source} " if source else ""
    return f"{base}D2C condensed ({len(condensed):,} images)"


def render_card(
    condensed: CondensedLike,
    *,
    figures: Mapping[str, str] | None = None,
    repo_id: str | None = None,
    configs: list[dict[str, Any]] | None = None,
) -> str:
    """The full README (YAML header + Markdown) of a condensed dataset.

    Args:
        condensed: the dataset (its ``info``, tables and counts are described).
        figures: figure name -> path relative to the README (e.g. ``"figures/difficulty.png"``);
            each is embedded as an image. Only pass figures that exist.
        repo_id: the Hub id used in the code examples (default ``"<user>/<dataset>"``).
        configs: the ``configs:`` YAML entries (default: the Hub layout's).
    """
    from huggingface_hub import DatasetCard

    info = condensed.info
    figures = dict(figures or {})
    repo = repo_id or "<user>/<dataset>"
    counts = condensed.counts
    num_classes = condensed.num_classes
    budget = info.get("budget") or {}
    ipc = budget.get("images_per_class")
    source = info.get("source") or {}
    parts = []
    if "latents" in condensed.samples.column_names:
        parts.append("VAE latent posteriors")
    if "visual_embeds" in condensed.samples.column_names:
        parts.append("vision-encoder patch tokens")
    if condensed.classes is not None and "text_embeds" in condensed.classes.column_names:
        parts.append("T5 class-prompt embeddings")
    if "caption_embeds" in condensed.samples.column_names:
        parts.append("caption token embeddings")
    captioned = info.get("text_to_image") or None
    attached = ""
    if parts:
        joined = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
        attached = f", with {joined} attached"
    version = info.get("d2c_hf_version")
    src = f" of `{source['name']}`" if source.get("name") else ""
    lines: list[str] = [f"# {info.get('pretty_name') or _title(condensed)}", ""]
    lines += [
        f"A **D2C-condensed** subset{src}: {len(condensed):,} images"
        + (f" out of {source['num_rows']:,}" if source.get("num_rows") is not None else "")
        + (f" in {num_classes} caption groups" if captioned else f" in {num_classes} classes")
        + (f" ({ipc} per {'group' if captioned else 'class'} requested)" if ipc is not None else "")
        + f", chosen by diffusion difficulty and {info.get('selection', {}).get('strategy', 'interval')} sampling"
        + f"{attached}. Made with d2c-hf"
        + (f" {version}." if version else "."),
        "",
        *reliability_warning(info.get("scoring") or {}),
        "## What is D2C?",
        "",
        f"[D2C (Diffusion Dataset Condensation)]({PAPER_URL}) shrinks a class-labelled image dataset to a tiny "
        "training set on which a diffusion transformer trains about 100x faster. *Select*: a pretrained "
        "class-conditional diffusion model scores every image by its mean denoising loss (higher = harder), and "
        "interval sampling keeps every k-th image of each class in order of difficulty. *Attach*: each kept "
        "image gets its VAE latent posterior and the patch tokens of a self-supervised vision encoder (targets "
        "of a REPA alignment loss), and each class a T5 embedding of a prompt such as 'a photo of a tench'.",
        "",
    ]
    if captioned:
        lines += [
            "This is a **captioned** (text-to-image) set: the difficulty of each image is the denoising loss of a "
            "text-to-image model conditioned on the image's caption, the images were grouped by their captions "
            "(or images) and the groups play the part of classes (`label` is the group). See *Captions and "
            "groups* below.",
            "",
        ]
    lines += _contents_section(condensed)
    lines += _config_section(condensed)
    if captioned:
        lines += _captions_section(condensed)
    lines += _counts_section(condensed, counts, ipc, figures)
    lines += _usage_section(condensed, repo)
    lines += _licence_section(condensed)
    lines += ["## Citation", "", "```bibtex", CITATION, "```", ""]
    body = "\n".join(lines)
    data = card_data(condensed, configs)
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _contents_section(condensed: CondensedLike) -> list[str]:
    descriptions = {
        "image": "the selected image, unchanged from the source dataset",
        "label": "class id",
        "source_index": "row of the image in the source dataset (split)",
        "difficulty": "diffusion difficulty: mean denoising MSE over the timestep grid (higher = harder)",
        "latents": "raw VAE posterior mean and std, concatenated on channels (see *Use it*)",
        "visual_embeds": "vision-encoder patch tokens (no CLS / register tokens), one per transformer token",
        "name": "class display name (first synonym, made unique)",
        "prompt": "the prompt encoded for this class",
        "text_embeds": "T5 encoder `last_hidden_state` of the prompt",
        "text_mask": "attention mask of the prompt tokens (1 = token, 0 = padding)",
        "caption": "the caption the image was scored with (and its embeddings encode)",
        "caption_embeds": "T5 encoder `last_hidden_state` of the caption, padded to a fixed length",
        "caption_mask": "attention mask of the caption tokens (1 = token, 0 = padding)",
    }
    if condensed.info.get("text_to_image"):
        descriptions["label"] = "group id (the caption group that plays the part of a class)"
    for name in condensed.info.get("attach") or []:  # a registered part records its column's description
        record = condensed.info.get(name) or {}
        if record.get("column"):
            descriptions.setdefault(record["column"], record.get("description", ""))
    lines = [
        "## Contents",
        "",
        "| config | split | rows | column | feature | meaning |",
        "|---|---|---|---|---|---|",
    ]
    tables = [("default", condensed.samples)]
    if condensed.classes is not None:
        tables.append(("classes", condensed.classes))
    if condensed.scores is not None:
        tables.append(("scores", condensed.scores))
    for config, table in tables:
        for i, (column, feature) in enumerate(table.features.items()):
            meaning = descriptions.get(column, "")
            if config == "scores" and column == "difficulty":
                meaning = "difficulty of every scored image (selected or not), for re-selection and plots"
            head = (f"`{config}`", "`train`", f"{len(table):,}") if i == 0 else ("", "", "")
            lines.append(
                f"| {' | '.join(head)} | `{column}` | `{_md_escape(feature_summary(feature))}` | {meaning} |"
            )
    lines.append("")
    return lines


def _config_section(condensed: CondensedLike) -> list[str]:
    info = condensed.info
    selection = info.get("selection") or {}
    budget = info.get("budget") or {}
    scoring = info.get("scoring") or {}
    latents = info.get("latents") or {}
    visual = info.get("visual") or {}
    text = info.get("text") or {}
    source = info.get("source") or {}
    rows: list[tuple[str, str]] = [
        ("source dataset", f"{source.get('name') or '—'} (split `{source.get('split') or '—'}`)"),
        ("source rows / classes", f"{_fmt(source.get('num_rows'))} / {condensed.num_classes}"),
        ("source fingerprint", f"`{source.get('fingerprint')}`" if source.get("fingerprint") else "—"),
        ("budget", _budget_str(budget)),
        ("realised fraction", _fraction_str(selection.get("realised_ratio"))),
        ("selection strategy", f"`{selection.get('strategy', '—')}`"),
        ("interval k", _fmt(selection.get("interval"))),
        ("seed", _fmt(info.get("seed", selection.get("seed")))),
    ]
    for role, record in iter_models(scoring):
        rows.append((f"scorer {role}", describe_model(record)))
    if "prediction_type" in scoring:
        rows.append(
            (
                "scoring",
                f"{scoring.get('prediction_type')} prediction in {scoring.get('space', '?')} space, "
                f"{scoring.get('num_timesteps')} timesteps ({scoring.get('timestep_grid', 'grid')}), "
                f"seed {scoring.get('seed')}, {scoring.get('resolution')}px, {scoring.get('dtype')}",
            )
        )
    timesteps = (scoring.get("noising") or {}).get("timesteps", scoring.get("timesteps"))
    if isinstance(timesteps, str):
        rows.append(("scoring timesteps", f"{timesteps} (one random timestep per bin, per image and draw)"))
    elif timesteps is not None:
        rows.append(("scoring timesteps", ", ".join(_fmt(t) for t in timesteps)))
    if "prediction_type" in scoring:
        rows.append(("difficulty estimator", estimator_text(scoring)))
    if "reliability" in scoring:
        rows.append(("score reliability", _md_escape(reliability_text(scoring))))
    if scoring.get("reused_column"):
        rows.append(("scoring", "reused the dataset's existing `difficulty` column"))
    if latents:
        rows.append(("latents", f"{latents.get('space')} space, `{latents.get('layout')}`"))
        rows.append(
            ("VAE", describe_model(latents.get("vae")) if latents.get("vae") else "none (pixel space)")
        )
        rows.append(
            (
                "latent scaling / shift",
                f"{_fmt(latents.get('scaling_factor'))} / {_fmt(latents.get('shift_factor'))}",
            )
        )
    rows.append(("resolution", _fmt(info.get("resolution", latents.get("resolution")))))
    if visual:
        rows.append(("vision encoder", describe_model(visual.get("encoder"))))
        rows.append(
            (
                "visual tokens",
                f"{visual.get('num_tokens')} tokens ({visual.get('grid')}x{visual.get('grid')}) x "
                f"{visual.get('hidden_size')}, input {visual.get('input_size')}px, patch {visual.get('patch_size')}, "
                f"{visual.get('num_prefix_tokens')} CLS/register tokens dropped",
            )
        )
    if text:
        rows.append(("text encoder", describe_model(text.get("text_encoder"))))
        rows.append(("prompt template", f"`{text.get('prompt_template')}`, {text.get('max_length')} tokens"))
    versions = info.get("library_versions") or {}
    if versions:
        rows.append(("libraries", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))))
    rows.append(("format version", _fmt(info.get("format_version"))))
    lines = ["## Configuration and provenance", "", "| item | value |", "|---|---|"]
    lines += [f"| {_md_escape(k)} | {_md_escape(v)} |" for k, v in rows]
    lines += ["", "The complete record is in `d2c_info.json` next to this card.", ""]
    return lines


#: caption examples shown per group, and groups shown, in the card
CAPTION_EXAMPLES, CAPTION_GROUPS_SHOWN = 3, 20


def _captions_section(condensed: CondensedLike) -> list[str]:
    """A captioned set: where the captions and groups come from, and a few captions of each group."""
    record = condensed.info.get("text_to_image") or {}
    groups = record.get("groups") or {}
    sizes = groups.get("sizes") or []
    lines = [
        "## Captions and groups",
        "",
        f"Captions from column `{record.get('caption_column')}` (`caption_choice={record.get('caption_choice')}`"
        + (
            ", one caption per image drawn by a hash of the seed and the image"
            if record.get("caption_choice") == "random"
            else ""
        )
        + f"). {groups.get('num_groups')} groups from `{groups.get('source')}` ({groups.get('method', '')}, seed "
        f"{groups.get('seed')}); group sizes in the scored data: min {min(sizes, default='—')}, max "
        f"{max(sizes, default='—')}.",
    ]
    if record.get("text_encoder"):
        lines.append(
            f"Caption embeddings: {describe_model(record['text_encoder'])}, {record.get('max_length')} tokens."
        )
    lines += ["", "| group | images scored | selected | example captions |", "|---|---|---|---|"]
    labels = column_numpy(condensed.samples, "label")
    captions = condensed.samples["caption"] if "caption" in condensed.samples.column_names else []
    counts = condensed.counts
    for g in range(min(condensed.num_classes, CAPTION_GROUPS_SHOWN)):
        rows = np.flatnonzero(labels == g)[:CAPTION_EXAMPLES]
        examples = "; ".join(f"“{_md_escape(captions[int(i)])}”" for i in rows) if len(captions) else ""
        scored = sizes[g] if g < len(sizes) else "—"
        lines.append(f"| {g} | {scored} | {int(counts[g])} | {examples} |")
    if condensed.num_classes > CAPTION_GROUPS_SHOWN:
        lines.append(f"| ... | | | {condensed.num_classes - CAPTION_GROUPS_SHOWN} more groups |")
    lines.append("")
    return lines


def _fraction_str(realised: float | None) -> str:
    return "—" if realised is None else f"{realised:.2%} of the scored rows"


def _budget_str(budget: Mapping[str, Any]) -> str:
    parts = []
    if budget.get("images_per_class") is not None:
        parts.append(f"{budget['images_per_class']} images per class")
    if budget.get("ratio") is not None:
        parts.append(f"ratio {budget['ratio']}")
    if budget.get("total") is not None:
        parts.append(f"{budget['total']:,} images realised")
    return ", ".join(parts) or "—"


def _counts_section(
    condensed: CondensedLike, counts: np.ndarray, ipc: int | None, figures: Mapping[str, str]
) -> list[str]:
    names = condensed.class_names
    lines = ["## Realised counts", ""]
    if counts.size:
        lines.append(
            f"{int(counts.sum()):,} images; per class min {int(counts.min())}, median {float(np.median(counts)):g}, "
            f"max {int(counts.max())}."
        )
    if ipc is not None:
        short = np.flatnonzero(counts < ipc)
        if short.size:
            listing = ", ".join(f"{names[i]} ({int(counts[i])})" for i in short[:20])
            more = f" and {short.size - 20} more" if short.size > 20 else ""
            lines.append(
                f"{short.size} classes hold fewer than the requested {ipc} images (too few images in the "
                f"source class): {listing}{more}."
            )
        else:
            lines.append(f"Every class reached the requested {ipc} images.")
    lines.append("")
    if len(counts) <= 50:
        lines += ["| class | name | images |", "|---|---|---|"]
        lines += [f"| {i} | {_md_escape(names[i])} | {int(c)} |" for i, c in enumerate(counts)]
        lines.append("")
    captions = {
        "counts": "Realised images per class.",
        "difficulty": "Difficulty of every scored image (grey) and of the selected ones (red).",
        "montage": "Selected images per class, easiest (left) to hardest (right).",
    }
    for name in ("counts", "difficulty", "montage"):
        if name in figures:
            lines += [f"![{name}]({figures[name]})", "", f"*{captions[name]}*", ""]
    return lines


def _usage_section(condensed: CondensedLike, repo: str) -> list[str]:
    latents = condensed.info.get("latents") or {}
    scale, shift = latents.get("scaling_factor", 1.0), latents.get("shift_factor", 0.0)
    lines = [
        "## Use it",
        "",
        "With d2c-hf (whole float16 columns read through Arrow, no per-row Python objects):",
        "",
        "```python",
        "from d2c_hf import CondensedDataset",
        "",
        f'condensed = CondensedDataset.load("{repo}")',
        'arrays = condensed.training_arrays(device="cuda")  # latents, labels, visual_embeds, text_embeds, text_mask',
        "```",
        "",
        "With plain `datasets`:",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'samples = load_dataset("{repo}", split="train")',
        f'classes = load_dataset("{repo}", "classes", split="train")',
        'latents = samples.with_format("numpy", columns=["latents"], dtype="float16")[:]["latents"]',
        "```",
        "",
        "For a *local copy* of this folder use `CondensedDataset.load(folder)`, or name its files: "
        '`load_dataset("parquet", data_files={"train": "folder/data/train-*.parquet"}, split="train")`. '
        "`load_dataset(folder)` caches a local folder under its name, not its files, so it can return "
        "another same-named folder's rows (datasets 5.2).",
        "",
        "Train a SiT with the REPA recipe on it:",
        "",
        "```bash",
        f"accelerate launch examples/train_sit.py --dataset {repo} --model SiT-XL/2 \\",
        "    --max_train_steps 40000 --output_dir sit-xl-d2c",
        "```",
        "",
    ]
    if latents.get("space") == "latent":
        mean_ch = latents.get("latent_channels") or 4
        lines += [
            f"A training latent is `z = ((mean + std * n) - {_fmt(shift)}) * {_fmt(scale)}` with `n ~ N(0, I)`, "
            f"where `mean, std = latents[:{mean_ch}], latents[{mean_ch}:]`.",
            "",
        ]
    return lines


def _is_official_dit(name: str | None) -> bool:
    """Meta's DiT checkpoints (``facebook/DiT-XL-2-256`` and its conversions), CC BY-NC."""
    lowered = str(name or "").lower()
    return "facebook/dit" in lowered or "dit-xl" in lowered


def estimator_text(scoring: Mapping[str, Any]) -> str:
    """How the difficulty was estimated: timesteps x draws (antithetic, standardised) and the cost."""
    draws = int(scoring.get("num_draws", 1))
    text = f"{scoring.get('num_timesteps')} timesteps x {draws} noise draw{'s' if draws > 1 else ''}"
    if scoring.get("antithetic"):
        text += " (antithetic pairs eps, -eps)"
    passes = scoring.get("forward_passes_per_image")
    if passes is not None:
        text += f" = {passes} forward passes per image"
    text += (
        "; each timestep's error standardised over the data before averaging (`difficulty` is a mean z-score)"
        if scoring.get("standardize_timesteps")
        else "; `difficulty` is the mean denoising error"
    )
    return text


def reliability_text(scoring: Mapping[str, Any]) -> str:
    """The reliability line of the card (and of ``d2c info``)."""
    from ..selection.reliability import Reliability

    record = scoring.get("reliability")
    if not record:
        return "not measured"
    return Reliability.from_dict(record).summary()


def reliability_warning(scoring: Mapping[str, Any]) -> list[str]:
    """A warning paragraph when the score's reliability is below the run's threshold (else nothing)."""
    from ..selection.reliability import RAISE_ADVICE, Reliability, projection

    record, threshold = scoring.get("reliability"), scoring.get("warn_reliability")
    if not record or threshold is None:
        return []
    report = Reliability.from_dict(record)
    if not report.computable or report.reliability >= threshold:
        return []
    return [
        f"> **Warning: the selection is close to random.** The difficulty score's reliability is "
        f"{report.reliability:.2f} (below {threshold:.2f}): two independent scorings of this data would rank the "
        f"images of a class very differently, so interval sampling over them is in effect random sampling. To "
        f"condense again, {RAISE_ADVICE}{projection(report)}. See the *score reliability* row below.",
        "",
    ]


def _licence_section(condensed: CondensedLike) -> list[str]:
    info = condensed.info
    imagenet = "imagenet" in json.dumps(info.get("source") or {}).lower()
    bullets = [
        "The images are a subset of the source dataset and keep its licence and terms of use"
        + (" (ImageNet: non-commercial research terms)." if imagenet else ".")
    ]
    models = list(iter_models({k: info.get(k) for k in ("scoring", "latents", "visual", "text", "caption")}))
    if any(_is_official_dit(record.get("name_or_path")) for _, record in models):
        bullets.append(
            "The difficulty scores come from Meta's DiT-XL/2, whose weights and code are licensed "
            f"[CC BY-NC 4.0]({DIT_LICENSE_URL}) (non-commercial)."
        )
    local = [(role, record) for role, record in models if is_local_path(record.get("name_or_path"))]
    if local:
        listing = "; ".join(f"{role}: {describe_model(record)}" for role, record in local)
        bullets.append(
            "Some models were loaded from local folders rather than the Hub and are identified only by a hash of "
            f"their weights: {listing}."
        )
    bullets += [f"**Note:** {note}" for note in info.get("notes") or []]
    return ["## Licence and caveats", "", *(f"- {b}" for b in bullets), ""]


# --------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------


def _figure(figsize: tuple[float, float]):
    """A figure drawn on matplotlib's Agg canvas without pyplot (no global state, no backend switch)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=_DPI)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=_DPI, format="png", metadata={"Software": None})
    return path


def make_figures(condensed: CondensedLike, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Draw the card's figures into ``output_dir``; returns figure name -> path.

    ``difficulty`` needs the scores of the whole scored dataset (``condensed.scores``) or at
    least a ``difficulty`` column in the samples; ``montage`` needs the ``image`` column.
    Figures that cannot be drawn from what the dataset holds are skipped (logged).
    """
    import matplotlib

    # text.parse_math off: class names are text, never mathtext ("$x_$" would not draw otherwise)
    with matplotlib.rc_context({"font.size": 8, "text.parse_math": False}):
        return _make_figures(condensed, Path(output_dir))


def _make_figures(condensed: CondensedLike, output_dir: Path) -> dict[str, Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    out["counts"] = _save(_counts_figure(condensed), output_dir / FIGURES["counts"])
    columns = condensed.samples.column_names
    if condensed.scores is not None or "difficulty" in columns:
        out["difficulty"] = _save(_difficulty_figure(condensed), output_dir / FIGURES["difficulty"])
    else:
        logger.info("no difficulty scores: skipping the difficulty figure")
    if "image" in columns and len(condensed):
        out["montage"] = _save(_montage_figure(condensed), output_dir / FIGURES["montage"])
    return out


def _counts_figure(condensed: CondensedLike):
    counts = condensed.counts
    ipc = (condensed.info.get("budget") or {}).get("images_per_class")
    many = len(counts) > 50
    fig = _figure((8, 3))
    ax = fig.subplots()
    x = np.arange(len(counts))
    ax.bar(x, np.sort(counts)[::-1] if many else counts, width=1.0 if many else 0.8, color="#1f77b4")
    top = max(int(counts.max(initial=0)), ipc or 0, 1)
    ax.set_ylim(0, 1.25 * top)
    if ipc is not None:
        ax.axhline(ipc, color=_SELECTED, lw=1, ls="--", label=f"requested: {ipc}")
        ax.legend(loc="upper right", frameon=False)
    if many:
        ax.set_xlabel("classes, sorted by realised count")
    else:
        ax.set_xticks(x, [str(n)[:14] for n in condensed.class_names], rotation=60, ha="right")
    ax.set_ylabel("images")
    ax.set_title(f"Realised images per class ({int(counts.sum()):,} in total)")
    fig.tight_layout()
    return fig


def _scores_arrays(condensed: CondensedLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(all difficulty, all labels, selected difficulty, selected labels) as numpy arrays."""

    samples = condensed.samples
    sel_labels = column_numpy(samples, "label")
    sel_scores = column_numpy(samples, "difficulty") if "difficulty" in samples.column_names else None
    if condensed.scores is not None:
        all_scores = column_numpy(condensed.scores, "difficulty")
        all_labels = column_numpy(condensed.scores, "label")
        if sel_scores is None and "source_index" in samples.column_names:
            position = {int(s): i for i, s in enumerate(column_numpy(condensed.scores, "source_index"))}
            sel_scores = all_scores[[position[int(s)] for s in column_numpy(samples, "source_index")]]
    else:
        all_scores, all_labels = sel_scores, sel_labels
    return all_scores, all_labels, sel_scores, sel_labels


def _difficulty_figure(condensed: CondensedLike):
    all_scores, all_labels, sel_scores, sel_labels = _scores_arrays(condensed)
    finite = all_scores[np.isfinite(all_scores)]
    edges = np.histogram_bin_edges(finite, bins=30) if finite.size else np.linspace(0, 1, 31)
    names = condensed.class_names
    num_classes = condensed.num_classes
    if num_classes <= SMALL_MULTIPLES_MAX_CLASSES:
        ncols = min(5, num_classes)
        nrows = -(-num_classes // ncols)
        fig = _figure((2.2 * ncols, 1.7 * nrows))
        axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False)
        for c, ax in enumerate(axes.flat):
            if c >= num_classes:
                ax.axis("off")
                continue
            values = all_scores[all_labels == c]
            chosen = sel_scores[sel_labels == c]
            ax.hist(values, bins=edges, color=_ALL)
            top = ax.get_ylim()[1]
            ax.vlines(chosen, 0, top, color=_SELECTED, lw=0.8)
            ax.set_ylim(0, top)
            ax.set_title(f"{str(names[c])[:18]} ({chosen.size}/{values.size})", fontsize=7)
            ax.tick_params(labelsize=6)
        fig.supxlabel("difficulty (mean denoising MSE; higher = harder)")
        fig.suptitle("Difficulty per class: all scored images (grey), selected (red lines)")
    else:
        fig = _figure((9, 3.2))
        left, right = fig.subplots(1, 2)
        left.hist(all_scores, bins=edges, color=_ALL, density=True, label=f"all ({all_scores.size:,})")
        left.hist(
            sel_scores,
            bins=edges,
            color=_SELECTED,
            density=True,
            alpha=0.6,
            label=f"selected ({sel_scores.size:,})",
        )
        left.set_xlabel("difficulty (higher = harder)")
        left.set_ylabel("density")
        left.legend()
        left.set_title("Pooled over classes")
        right.hist(
            _within_class_percentiles(all_scores, all_labels, sel_scores, sel_labels),
            bins=20,
            range=(0, 1),
            color=_SELECTED,
        )
        right.set_xlabel("within-class difficulty percentile of the selected images")
        right.set_ylabel("images")
        right.set_title("Where in each class the selection lies")
        fig.suptitle(f"Difficulty over {num_classes} classes")
    fig.tight_layout()
    return fig


def _within_class_percentiles(all_scores, all_labels, sel_scores, sel_labels) -> np.ndarray:
    """Fraction of the class's scored images that are easier than each selected image."""
    out = np.empty(sel_scores.shape, np.float64)
    for c in np.unique(sel_labels):
        ref = np.sort(all_scores[all_labels == c])
        mask = sel_labels == c
        out[mask] = np.searchsorted(ref, sel_scores[mask], side="left") / max(len(ref), 1)
    return out


def _montage_figure(condensed: CondensedLike):
    from ..utils.images import center_crop, decode_image

    samples = condensed.samples
    labels = column_numpy(samples, "label")
    order_key = (
        column_numpy(samples, "difficulty")
        if "difficulty" in samples.column_names
        else np.arange(len(labels))
    )
    present = np.unique(labels)
    rows_classes = present[
        np.linspace(0, len(present) - 1, min(MONTAGE_MAX_CLASSES, len(present))).round().astype(int)
    ]
    picks: list[list[int]] = []
    for c in rows_classes:
        members = np.flatnonzero(labels == c)
        members = members[np.argsort(order_key[members], kind="stable")]
        keep = np.linspace(0, len(members) - 1, min(MONTAGE_MAX_IMAGES, len(members))).round().astype(int)
        picks.append(members[np.unique(keep)].tolist())
    ncols = max(len(p) for p in picks)
    tile = MONTAGE_TILE
    canvas = np.full((len(picks) * (tile + 2), ncols * (tile + 2), 3), 255, np.uint8)
    flat = sorted({i for p in picks for i in p})
    images = dict(zip(flat, samples.select_columns(["image"]).select(flat)["image"]))
    for r, row in enumerate(picks):
        for k, idx in enumerate(row):
            thumb = center_crop(decode_image(images[idx], idx), tile)
            canvas[r * (tile + 2) : r * (tile + 2) + tile, k * (tile + 2) : k * (tile + 2) + tile] = thumb
    fig = _figure((max(3.0, 0.75 * ncols + 1.5), 0.75 * len(picks) + 0.6))
    ax = fig.subplots()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks(
        [r * (tile + 2) + tile / 2 for r in range(len(picks))],
        [str(condensed.class_names[c])[:20] for c in rows_classes],
    )
    ax.set_xticks([])
    ax.set_xlabel("easiest  →  hardest" if "difficulty" in samples.column_names else "selected images")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("Selected images")
    fig.tight_layout()
    return fig
