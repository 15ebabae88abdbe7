"""The model card of a saved ``SiTPipeline``: how to load it with and without d2c-hf, REPA's FID sampler, licence.

``SiTPipeline.save_pretrained`` writes :func:`model_card` as ``README.md``; ``examples/train_sit.py`` builds its
card from :func:`usage_section` and :func:`licence_section` with the training details and the training data's
licence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = [
    "EXAMPLE_PROMPTS",
    "REPA_FID_SAMPLING",
    "licence_section",
    "model_card",
    "text_tags",
    "usage_section",
]

#: REPA's published FID setting (README "Evaluation", FID 1.42): SDE Euler-Maruyama, 250 steps, CFG 1.8 applied
#: while sigma is in [0, 0.7]
REPA_FID_SAMPLING: dict[str, Any] = {
    "num_inference_steps": 250,
    "guidance_scale": 1.8,
    "guidance_interval": (0.0, 0.7),
}
_SDE = "FlowMatchEulerMaruyamaScheduler"
_TAGS = ["d2c", "d2c-hf", "sit", "repa", "flow-matching", "class-conditional", "image-generation"]
#: the default card's example prompts for a text-conditioned pipeline
EXAMPLE_PROMPTS = ["a photo of a dog", "a red car on a street"]


def usage_section(
    repo_id: str,
    class_labels: Sequence[int | str] | None,
    *,
    scheduler: str = _SDE,
    code_files: Sequence[str] = ("pipeline_sit.py", "transformer/d2c_hf.py", "scheduler/d2c_hf.py"),
    prompts: Sequence[str] | None = None,
) -> str:
    """Markdown "Use" section: the same REPA FID sampling call with d2c-hf and with diffusers alone.

    Args:
        repo_id: Hub repo id or local folder the snippets load.
        class_labels: labels for the example call (names or ids); ``None`` for a text-conditioned pipeline.
        prompts: a text-conditioned pipeline's example prompts (the call passes ``prompt=``; guidance runs against
            the empty caption, or ``negative_prompt=``).
        scheduler: class name of the saved scheduler; unless it is REPA's SDE sampler, the d2c-hf snippet
            switches to it and the diffusers-only snippet samples with the saved one.
        code_files: the generated code files in the folder (named in the remote-code note).
    """
    from ...version import __version__

    sde = scheduler == _SDE
    condition = (
        f"prompt={json.dumps(list(prompts))}" if prompts is not None else json.dumps(list(class_labels or []))
    )
    call = (
        f"images = pipe({condition}, "
        f"num_inference_steps={REPA_FID_SAMPLING['num_inference_steps']}, "
        f"guidance_scale={REPA_FID_SAMPLING['guidance_scale']},\n"
        f"              guidance_interval={REPA_FID_SAMPLING['guidance_interval']!r}, "
        "generator=torch.Generator().manual_seed(0)).images"
    )
    switch = "" if sde else "pipe.scheduler = FlowMatchEulerMaruyamaScheduler()  # REPA's SDE sampler\n"
    imports = "SiTPipeline" if sde else "FlowMatchEulerMaruyamaScheduler, SiTPipeline"
    sampler = (
        "This is REPA's published FID setting: its SDE sampler (Euler-Maruyama, `FlowMatchEulerMaruyamaScheduler`, "
        "saved with this pipeline), 250 steps, classifier-free guidance 1.8 applied while the noise level is in "
        "(0, 0.7)."
        if sde
        else f"This pipeline was saved with `{scheduler}`. The d2c-hf call is REPA's published FID setting (its SDE "
        "sampler, 250 steps, guidance 1.8 on the interval (0, 0.7)); the diffusers-only call uses the saved sampler."
    )
    if prompts is not None:
        sampler += (
            " These are REPA's settings for class-conditional ImageNet; with prompts, guidance runs against the "
            "empty caption the model was trained to drop to (or `negative_prompt=`): tune steps and scale for your prompts."
        )
    files = ", ".join(f"`{f}`" for f in code_files)
    return f"""## Use

With d2c-hf (the `d2c_hf` package) installed, nothing from this repository's code files is run:

```python
import torch
from d2c_hf import {imports}

pipe = SiTPipeline.from_pretrained("{repo_id}")
{switch}{call}
```

{sampler}

With diffusers alone: the repository carries the code ({files}, generated from d2c-hf {__version__}). Read it,
then allow it to run:

```python
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{repo_id}", trust_remote_code=True)
{call}
```

The transformer alone: `AutoModel.from_pretrained("{repo_id}", subfolder="transformer")` after `import d2c_hf`, or
`SiTTransformer2DModel.from_pretrained("{repo_id}", subfolder="transformer")`.
"""


def licence_section(
    license: str | None, datasets: Sequence[str] | None = None, notes: Sequence[str] = ()
) -> str:
    """Markdown "Licence" section: the weights inherit the training data's licence (``license``, e.g. the
    condensed dataset's); ``None`` says that it was not recorded. ``notes`` are added as bullets."""
    data = " and ".join(f"`{d}`" for d in datasets or ()) or "their training data"
    if license and license != "other":
        first = f"The weights were trained on {data} and inherit its licence and terms: `{license}`."
    elif license == "other":
        first = f"The weights were trained on {data} and inherit its licence and terms (see its card)."
    else:
        first = (
            "The weights inherit the licence and terms of the data they were trained on, which was not recorded "
            "when this folder was saved."
        )
    bullets = [
        first,
        *notes,
        "The code files (`pipeline_sit.py`, `*/d2c_hf.py`) are d2c-hf's, Apache-2.0.",
    ]
    return "## Licence\n\n" + "\n".join(f"- {b}" for b in bullets) + "\n"


def model_card(
    pipeline: Any,
    repo_id: str,
    *,
    license: str | None = None,
    datasets: Sequence[str] | None = None,
    title: str | None = None,
    description: str = "",
    licence_notes: Sequence[str] = (),
):
    """A ``huggingface_hub.ModelCard`` for ``pipeline`` (a ``SiTPipeline``) saved as ``repo_id``: YAML metadata
    (``library_name: diffusers``, ``license`` = the training data's, ``datasets``), :func:`usage_section` with
    two of its class names, :func:`licence_section`."""
    from huggingface_hub import ModelCard, ModelCardData

    text_model = getattr(pipeline.transformer.config, "caption_embed_dim", None) is not None
    if title is None:
        title = (
            "SiT text-to-image generator (d2c-hf)"
            if text_model
            else "SiT class-conditional image generator (d2c-hf)"
        )
    data = ModelCardData(
        library_name="diffusers",
        license=license or "other",
        datasets=list(datasets or []) or None,
        tags=text_tags() if text_model else _TAGS,
    )
    components = pipeline.components
    code_files = ["pipeline_sit.py"] + [
        f"{name}/d2c_hf.py" for name, c in components.items() if type(c).__module__.startswith("d2c_hf.")
    ]
    config = pipeline.transformer.config
    text = f"""---
{data.to_yaml()}
---

# {title}

{description or _describe(config)}

{usage_section(repo_id, None if text_model else _example_labels(pipeline), scheduler=type(pipeline.scheduler).__name__, code_files=code_files, prompts=EXAMPLE_PROMPTS if text_model else None)}
{licence_section(license, datasets, licence_notes)}"""
    return ModelCard(text)


def text_tags() -> list[str]:
    """The card tags of a text-conditioned pipeline."""
    return ["d2c", "d2c-hf", "sit", "repa", "flow-matching", "text-to-image"]


def _describe(config: Any) -> str:
    space = f"{config.in_channels} x {config.sample_size} x {config.sample_size}"
    if getattr(config, "caption_embed_dim", None) is not None:
        return (
            f"A text-conditioned SiT ({config.depth} blocks, width {config.hidden_size}, patch {config.patch_size}) "
            f"predicting the flow-matching velocity on {space} latents; captions enter through cross-attention to "
            f"{config.caption_seq_len} tokens of width {config.caption_embed_dim} from the saved `text_encoder`. "
            "Sampled with d2c-hf's `SiTPipeline` from prompts."
        )
    return (
        f"A SiT ({config.depth} blocks, width {config.hidden_size}, patch {config.patch_size}) predicting the "
        f"flow-matching velocity on {space} latents, {config.num_classes} classes, sampled with d2c-hf's "
        "`SiTPipeline`."
    )


def _example_labels(pipeline: Any) -> list[int | str]:
    """Two class names that resolve to one class each (ImageNet's "crane" names two), else ids."""
    names: list[int | str] = []
    for name in pipeline.id2label.values():
        try:
            pipeline.get_label_ids(name)
        except ValueError:
            continue
        names.append(name)
        if len(names) == 2:
            return names
    return list(range(min(2, int(pipeline.transformer.config.num_classes))))
