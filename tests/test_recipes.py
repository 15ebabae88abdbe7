"""Every documented command sequence runs end to end (tiny local models, seconds), and every command line
printed in README.md and docs/ parses with the parser it is meant for (no documented flag goes stale)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from datasets import load_from_disk

from d2c_hf.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# ------------------------------------------------------------------ documented command lines parse


def _shell_commands(text: str) -> list[str]:
    """Command lines of the fenced shell blocks (```bash, ```console, ```sh or bare ```) of a Markdown page,
    continuations joined and comments dropped."""
    out, block, lang = [], None, ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("```"):
            if block is None:
                block, lang = [], raw.strip().strip("`").strip()
            else:
                if lang in ("", "bash", "sh", "console", "shell"):
                    joined = re.sub(r"\\\n\s*", " ", "\n".join(block))
                    for line in joined.splitlines():
                        line = line.strip().removeprefix("$ ").split("  #")[0].split(" # ")[0].strip()
                        if line:
                            out.append(line)
                block = None
            continue
        if block is not None:
            block.append(raw)
    return out


def _documented(pattern: str) -> list[tuple[str, str]]:
    found = []
    for page in DOCS:
        for line in _shell_commands(page.read_text()):
            if re.search(pattern, line) and "..." not in line and "<<" not in line:
                found.append((page.name, line))
    return found


D2C_LINES = _documented(
    r"^(d2c|(\S+=\S* )*accelerate launch .*-m d2c_hf\.cli) (score|select|attach|condense|info|demo|benchmark)\b"
)
TRAIN_LINES = _documented(r"examples/train_sit\.py --")


def test_the_docs_print_the_commands_this_test_checks():
    assert len(D2C_LINES) >= 6 and len(TRAIN_LINES) >= 4  # the extraction itself works


@pytest.mark.parametrize(("page", "line"), D2C_LINES, ids=[f"{p}:{line[:50]}" for p, line in D2C_LINES])
def test_documented_d2c_command_lines_parse(page, line):
    from d2c_hf import cli

    tokens = shlex.split(line)
    start = tokens.index("d2c_hf.cli") + 1 if "d2c_hf.cli" in tokens else tokens.index("d2c") + 1
    command, argv = tokens[start], tokens[start + 1 :]
    argv = [a for a in argv if a not in ("[--store_posterior]",)]
    parser = getattr(cli, f"{command}_parser")()
    parser.parse_args(argv)  # SystemExit (an unknown or missing flag) fails the test, naming the line


@pytest.mark.parametrize(("page", "line"), TRAIN_LINES, ids=[f"{p}:{line[:50]}" for p, line in TRAIN_LINES])
def test_documented_training_command_lines_parse(page, line):
    from d2c_hf.examples import train_sit

    tokens = shlex.split(line)
    argv = tokens[tokens.index(next(t for t in tokens if t.endswith("examples/train_sit.py"))) + 1 :]
    train_sit.parse_args(argv)


# ------------------------------------------------------------------ the sequences, end to end


def _models(hub) -> list[str]:
    return ["--scorer", str(hub.dit), "--text_encoder", str(hub.t5), "--vision_encoder", str(hub.dinov2)]


def _run(hub, out, *extra: str) -> list[str]:
    return [
        "--dataset", "digits", "--max_samples", "60", "--resolution", "32", "--batch_size", "10",
        "--shard_size", "20", "--num_workers", "0", "--output_dir", str(out), *extra,
    ]  # fmt: skip


def test_scale_md_step_by_step_score_select_attach_then_info(local_hub, tmp_path, capsys):
    """docs/scale.md: d2c score [--store_posterior] -> d2c select -> d2c attach -> d2c info (a crash before)."""
    out = tmp_path / "run"
    assert (
        cli_main(["score", *_run(local_hub, out, "--scorer", str(local_hub.dit), "--store_posterior")]) == 0
    )
    assert cli_main(["select", "--output_dir", str(out), "--ratio", "0.1", "--interval", "2"]) == 0
    models = ["--text_encoder", str(local_hub.t5), "--vision_encoder", str(local_hub.dinov2), "--no_card"]
    assert cli_main(["attach", *_run(local_hub, out, *models)]) == 0
    capsys.readouterr()
    assert cli_main(["info", str(out / "condensed")]) == 0
    summary = capsys.readouterr().out
    assert "latents [Array3D" in summary and "visual_embeds [Array2D" in summary
    from d2c_hf.condensed.dataset import CondensedDataset

    condensed = CondensedDataset.load(out / "condensed")
    selection = json.loads((out / "selection.json").read_text())
    assert condensed.samples["source_index"] == selection["source_indices"]
    # the record says what the select command did (ratio, stride), and the latents were encoded once
    assert condensed.info["budget"]["ratio"] == 0.1 and condensed.info["selection"]["interval"] == 2
    assert condensed.info["distributed"]["latents_from"] == "scorer posterior"
    assert condensed.classes is not None and len(condensed.classes) == 10


def test_readme_streaming_condense_resumes(local_hub, tmp_path):
    """README "At scale": d2c condense --streaming ... ; running it again only reuses finished shards."""
    out = tmp_path / "stream"
    argv = ["condense", *_run(local_hub, out, "--streaming", "--ratio", "0.1", *_models(local_hub))]
    assert cli_main(argv) == 0
    assert cli_main(argv) == 0
    manifest = json.loads((out / "score" / "manifest.json").read_text())
    assert manifest["computed_shards"] == 0 and manifest["skipped_shards"] == 3
    assert len(load_from_disk(str(out / "scores"))) == 60


def test_readme_condense_in_one_call_then_save_and_push(local_hub, digits, tmp_path):
    """README "Condense a dataset in one call": condense(DatasetDict, ratio=...), save_to_disk, push_to_hub.
    The scorer ships its own VAE, which ``vae="auto"`` uses for scoring and latents."""
    from huggingface_hub import HfApi

    from d2c_hf import CondensedDataset, condense

    data = {"train": digits["train"].select(range(60)), "test": digits["test"].select(range(10))}
    from datasets import DatasetDict

    condensed = condense(
        DatasetDict(data),
        ratio=0.1,
        scorer=local_hub.dit,
        text_encoder=local_hub.t5,
        vision_encoder=local_hub.dinov2,
        resolution=32,
    )
    assert condensed.info["scoring"]["vae"]["subfolder"] == "vae"  # the DiT pipeline's own vae/
    saved = condensed.save_to_disk(tmp_path / "imagenet-d2c-10k")
    assert (saved / "README.md").is_file() and len(CondensedDataset.load(saved)) == len(condensed)
    api = mock.create_autospec(HfApi, instance=True)
    condensed.push_to_hub("me/imagenet-d2c-10k", api=api)
    assert api.upload_folder.call_args.kwargs["repo_type"] == "dataset"


def test_readme_step_by_step_transforms(local_hub, digits):
    """README "...or step by step, as datasets transforms" (plus the class table and the assembly)."""
    from d2c_hf import (
        CondensedDataset,
        DifficultyScorer,
        LatentEncoder,
        TextAttacher,
        VisualAttacher,
        select_indices,
    )

    ds = digits["train"].select(range(60))
    scorer = DifficultyScorer.from_pretrained(local_hub.dit)
    ds = scorer.apply(ds)
    keep = select_indices(ds["difficulty"], ds["label"], images_per_class=2, strategy="interval")
    sub = LatentEncoder.from_pretrained(local_hub.vae, resolution=32).apply(ds.select(keep))
    sub = VisualAttacher.from_pretrained(local_hub.dinov2, num_tokens=16, resolution=32).apply(sub)
    classes = TextAttacher.from_pretrained(local_hub.t5).encode_classes(ds.features["label"].names)
    condensed = CondensedDataset(samples=sub, classes=classes, info={"selection": {"strategy": "interval"}})
    assert len(condensed) == 20 and {"latents", "visual_embeds", "difficulty"} <= set(sub.column_names)


def test_readme_train_and_sample(local_hub, digits_small, tmp_path):
    """README "Train and sample": train_sit.py on a saved condensed folder, then SiTPipeline by name and id."""
    from d2c_hf import SiTPipeline
    from d2c_hf.examples import train_sit
    from helpers_condensed import build_condensed

    dataset = build_condensed(local_hub, digits_small, images_per_class=4).save_to_disk(
        tmp_path / "d2c", card=False
    )
    args = train_sit.parse_args(
        [
            "--dataset", str(dataset), "--output_dir", str(tmp_path / "sit"), "--model", "SiT-S/2",
            "--model_config_overrides", '{"depth":2,"hidden_size":32,"num_attention_heads":2}',
            "--projector_dim", "32", "--train_batch_size", "8", "--max_train_steps", "3",
            "--num_validation_images", "0", "--report_to", "none",
        ]
    )  # fmt: skip
    train_sit.main(args)
    pipe = SiTPipeline.from_pretrained(str(tmp_path / "sit"))
    images = pipe(["zero", 7], num_inference_steps=2, guidance_scale=1.5, output_type="np").images
    assert np.asarray(images).shape[0] == 2
