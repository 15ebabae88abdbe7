"""Shared by the tests of examples/train_sit.py's error handling: the script, tiny condensed sets, arguments."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from datasets import Array2D, Array3D, ClassLabel, Dataset, Features, Sequence, Value

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_sit.py"
TINY = '{"depth":2,"hidden_size":32,"num_attention_heads":2}'
#: where an error may be raised from: the script or the library, never a dependency
OURS = (str(ROOT / "examples"), str(ROOT / "src" / "d2c_hf"))


def load_script(name: str):
    """examples/train_sit.py as a module (its own copy per test file, so monkeypatching stays local)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_condensed(path: Path, *, visual=True, classes=True, latents=True, channels=8, vae_space="latent"):
    """12 rows, 3 classes; latents (mean|std) 8x8x8 -> a 4x8x8 model input; visual 16 tokens x 32; text 4 x 16."""
    from d2c_hf.condensed.dataset import CondensedDataset

    rng = np.random.default_rng(0)
    names = ["cat", "dog", "fox"]
    columns = {"label": np.arange(12) % 3}
    features = {"label": ClassLabel(names=names)}
    if latents:
        half = channels // 2
        moments = [rng.normal(size=(12, half, 8, 8)), np.full((12, channels - half, 8, 8), 0.1)]
        columns["latents"] = np.concatenate(moments, 1).astype(np.float16)
        features["latents"] = Array3D((channels, 8, 8), "float16")
    if visual:
        columns["visual_embeds"] = rng.normal(size=(12, 16, 32)).astype(np.float16)
        features["visual_embeds"] = Array2D((16, 32), "float16")
    samples = Dataset.from_dict(columns, features=Features(features))
    table = None
    if classes:
        table = Dataset.from_dict(
            {
                "label": [0, 1, 2],
                "name": names,
                "prompt": [f"a photo of a {n}" for n in names],
                "text_embeds": rng.normal(size=(3, 4, 16)).astype(np.float16),
                "text_mask": np.ones((3, 4), np.int8),
            },
            features=Features(
                {
                    "label": Value("int64"),
                    "name": Value("string"),
                    "prompt": Value("string"),
                    "text_embeds": Array2D((4, 16), "float16"),
                    "text_mask": Sequence(Value("int8"), length=4),
                }
            ),
        )
    info = {"latents": {"space": vae_space, "vae": None, "scaling_factor": 0.5, "shift_factor": 0.0}}
    CondensedDataset(samples, table, info).save_to_disk(path, card=False)
    return path


def base_args(dataset, out, *extra: str) -> list[str]:
    return [
        "--dataset", str(dataset), "--output_dir", str(out), "--model", "SiT-S/2",
        "--model_config_overrides", TINY, "--projector_dim", "32", "--train_batch_size", "4",
        "--max_train_steps", "2", "--logging_steps", "1", "--checkpointing_steps", "100",
        "--num_validation_images", "0", "--vae", "none", "--report_to", "none", *extra,
    ]  # fmt: skip


def snapshot(folder: Path) -> dict[str, int] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))}


def reset_accelerate_state() -> None:
    """Forget accelerate's process-wide state, so that the next Accelerator may use another mixed precision."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
