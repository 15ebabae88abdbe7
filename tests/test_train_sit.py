"""examples/train_sit.py: REPA defaults, training, exact resume, 2 processes, the saved pipeline, bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Array3D, ClassLabel, Dataset, Features
from safetensors.torch import load_file

from helpers_condensed import build_condensed

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_sit.py"
TINY = '{"depth":2,"hidden_size":32,"num_attention_heads":2}'


def load_script():
    spec = importlib.util.spec_from_file_location("train_sit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_sit = load_script()


def tiny_args(dataset, output_dir, *extra: str):
    return train_sit.parse_args(
        [
            "--dataset", str(dataset), "--output_dir", str(output_dir), "--model", "SiT-S/2",
            "--model_config_overrides", TINY, "--projector_dim", "32", "--train_batch_size", "16",
            "--logging_steps", "5", "--num_validation_images", "0", "--report_to", "none", *extra,
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def digits_condensed(local_hub, digits_small, tmp_path_factory):
    """Condensed digits (10 per class, latents 4x8x8, 16 visual tokens x 32, text 16 x 16), saved."""
    path = tmp_path_factory.mktemp("train") / "digits"
    build_condensed(local_hub, digits_small, images_per_class=10).save_to_disk(path, card=False)
    return path


def pixel_dataset(path: Path, bad_row: int | None = None) -> Path:
    """A pixel-space condensed set (mean|std of 3x8x8 'images', no classes/visual); one row inf if asked."""
    from d2c_hf.condensed.dataset import CondensedDataset

    rng = np.random.default_rng(0)
    latents = np.concatenate([rng.uniform(-1, 1, (24, 3, 8, 8)), np.zeros((24, 3, 8, 8))], 1).astype(
        np.float16
    )
    if bad_row is not None:
        latents[bad_row] = np.inf
    samples = Dataset.from_dict(
        {"label": np.arange(24) % 3, "latents": latents},
        features=Features(
            {"label": ClassLabel(names=["a", "b", "c"]), "latents": Array3D((6, 8, 8), "float16")}
        ),
    )
    info = {"latents": {"space": "pixel", "vae": None, "scaling_factor": 1.0, "shift_factor": 0.0}}
    CondensedDataset(samples, None, info).save_to_disk(path, card=False)
    return path


def test_parse_args_defaults_follow_the_repa_recipe():
    args = train_sit.parse_args(["--dataset", "x"])
    assert args.model == "SiT-XL/2" and args.encoder_depth is None  # -> 8 for XL (default_encoder_depth)
    assert (args.learning_rate, args.adam_beta1, args.adam_beta2) == (1e-4, 0.9, 0.999)
    assert (args.adam_weight_decay, args.adam_epsilon, args.max_grad_norm) == (0.0, 1e-8, 1.0)
    assert (args.ema_decay, args.train_batch_size, args.proj_coeff, args.cfg_prob) == (0.9999, 256, 0.5, 0.1)
    assert (args.weighting, args.projector_dim, args.max_train_steps) == ("uniform", 2048, 400_000)
    assert args.use_visual is None and args.use_text is None  # on when the dataset has them
    assert args.report_to == "none" and args.gradient_accumulation_steps == 1
    assert train_sit.parse_args(["--dataset", "x", "--no-use_text"]).use_text is False
    with pytest.raises(SystemExit):
        train_sit.parse_args(["--dataset", "x", "--model_config_overrides", "{depth: 2"])


def test_training_reduces_the_loss_saves_a_pipeline_and_calls_back(digits_condensed, tmp_path):
    from d2c_hf import SiTPipeline

    calls = []

    def callback(step, pipeline):
        calls.append((step, pipeline.transformer.training, type(pipeline).__name__))
        torch.rand(1000)  # a callback using the global RNG must not change training

    args = tiny_args(
        digits_condensed, tmp_path / "run", "--max_train_steps", "30", "--validation_steps", "15",
        "--num_validation_images", "4", "--num_inference_steps", "2", "--ema_decay", "0.9",
        "--checkpointing_steps", "100", "--learning_rate", "1e-3",
    )  # fmt: skip
    result = train_sit.main(args, eval_callback=callback)
    assert result["global_step"] == 30 and result["use_visual"] and result["use_text"]
    history = result["loss_history"]
    assert [s for s, _ in history] == [5, 10, 15, 20, 25, 30]
    assert history[-1][1] < 0.8 * history[0][1]
    assert result["final_loss"] == pytest.approx(history[-1][1])
    assert calls == [(15, False, "SiTPipeline"), (30, False, "SiTPipeline")]
    assert [Path(p).name for p in result["samples"]] == ["step-000015.png", "step-000030.png"]
    assert all(Path(p).is_file() for p in result["samples"])
    assert "digits" in (tmp_path / "run" / "README.md").read_text()

    pipe = SiTPipeline.from_pretrained(result["pipeline_dir"])
    assert pipe.vae is not None and pipe.id2label[3] == "three"
    assert pipe.transformer.config.z_dims == [32] and pipe.transformer.config.encoder_depth == 1
    images = pipe(["three", 7], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert len(images) == 2 and images[0].size == (32, 32)


def test_resume_is_exact(digits_condensed, tmp_path):
    common = ("--checkpointing_steps", "3", "--gradient_accumulation_steps", "2", "--ema_decay", "0.5")
    train_sit.main(tiny_args(digits_condensed, tmp_path / "full", "--max_train_steps", "6", *common))
    train_sit.main(tiny_args(digits_condensed, tmp_path / "split", "--max_train_steps", "3", *common))
    resumed = train_sit.main(
        tiny_args(
            digits_condensed, tmp_path / "split", "--max_train_steps", "6", "--resume_from_checkpoint", "latest",
            *common,
        )
    )  # fmt: skip
    assert resumed["global_step"] == 6 and [s for s, _ in resumed["loss_history"]] == [5, 6]
    full, split = tmp_path / "full" / "checkpoint-6", tmp_path / "split" / "checkpoint-6"
    for sub in ("transformer", "transformer_ema"):
        a = load_file(full / sub / train_sit.WEIGHTS_NAME)
        b = load_file(split / sub / train_sit.WEIGHTS_NAME)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub
    assert json.loads((full / "transformer_ema" / "ema_state.json").read_text())["optimization_step"] == 6
    opt_a = torch.load(full / "optimizer.bin", weights_only=True)["state"]
    opt_b = torch.load(split / "optimizer.bin", weights_only=True)["state"]
    assert opt_a.keys() == opt_b.keys()
    assert all(
        torch.equal(opt_a[k][n], opt_b[k][n]) for k in opt_a for n in ("exp_avg", "exp_avg_sq", "step")
    )
    # the final pipelines (EMA weights) agree too
    a = load_file(tmp_path / "full" / "transformer" / train_sit.WEIGHTS_NAME)
    b = load_file(tmp_path / "split" / "transformer" / train_sit.WEIGHTS_NAME)
    assert all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(ValueError, match=r"another model config \(depth: checkpoint 2 vs now 3"):
        train_sit.main(
            tiny_args(
                digits_condensed, tmp_path / "split", "--max_train_steps", "9", "--resume_from_checkpoint",
                "latest", "--model_config_overrides", '{"depth":3,"hidden_size":32,"num_attention_heads":2}',
            )
        )  # fmt: skip


def _launch_two_processes(dataset: Path, out: Path, *extra: str, expect_ok: bool = True):
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(SCRIPT),
        "--dataset", str(dataset), "--output_dir", str(out), "--model", "SiT-S/2",
        "--model_config_overrides", TINY, "--projector_dim", "32", "--train_batch_size", "8",
        "--checkpointing_steps", "2", "--checkpoints_total_limit", "1", "--logging_steps", "2", *extra,
    ]  # fmt: skip
    # torchrun with 2 processes; ACCELERATE_USE_CPU makes accelerate use DDP over gloo on the CPU
    # (plain `accelerate launch --cpu --num_processes 2` starts one process unless mpirun is set up)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true",
           "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    if expect_ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_process_launch_writes_one_checkpoint_set_and_resumes_exactly(digits_condensed, tmp_path):
    full = tmp_path / "ddp"
    _launch_two_processes(
        digits_condensed,
        full,
        "--max_train_steps",
        "4",
        "--num_validation_images",
        "2",
        "--num_inference_steps",
        "2",
    )
    assert sorted(p.name for p in full.glob("checkpoint-*")) == ["checkpoint-4"]
    names = {p.name for p in (full / "checkpoint-4").iterdir()}
    assert {"random_states_0.pkl", "random_states_1.pkl", "data_state.json", "optimizer.bin"} <= names
    assert not list(full.glob(".checkpoint-*")) and (full / "model_index.json").is_file()
    assert (full / "samples" / "step-000004.png").is_file()

    # 2 steps, then resume to 4 under 2 processes: the same weights, EMA and optimizer state
    split = tmp_path / "ddp_split"
    _launch_two_processes(digits_condensed, split, "--max_train_steps", "2", "--num_validation_images", "0")
    _launch_two_processes(
        digits_condensed, split, "--max_train_steps", "4", "--num_validation_images", "0",
        "--resume_from_checkpoint", "latest",
    )  # fmt: skip
    for sub in ("transformer", "transformer_ema"):
        a = load_file(full / "checkpoint-4" / sub / train_sit.WEIGHTS_NAME)
        b = load_file(split / "checkpoint-4" / sub / train_sit.WEIGHTS_NAME)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub
    opt_a = torch.load(full / "checkpoint-4" / "optimizer.bin", weights_only=True)["state"]
    opt_b = torch.load(split / "checkpoint-4" / "optimizer.bin", weights_only=True)["state"]
    assert all(torch.equal(opt_a[k][n], opt_b[k][n]) for k in opt_a for n in ("exp_avg", "exp_avg_sq"))

    # without process 1's RNG file both processes refuse the resume, naming it (no hang, nothing written)
    assert json.loads((split / "checkpoint-4" / "data_state.json").read_text())["num_processes"] == 2
    (split / "checkpoint-4" / "random_states_1.pkl").unlink()
    before = sorted(p.name for p in split.iterdir())
    proc = _launch_two_processes(
        digits_condensed, split, "--max_train_steps", "6", "--num_validation_images", "0",
        "--resume_from_checkpoint", "latest", expect_ok=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "cannot resume exactly from" in proc.stderr and "random_states_1.pkl is missing" in proc.stderr
    assert "--allow_inexact_resume" in proc.stderr
    assert sorted(p.name for p in split.iterdir()) == before


def test_bad_inputs_fail_clearly(digits_condensed, tmp_path):
    with pytest.raises(ValueError, match="Unknown SiT preset 'SiT-M/2'.*SiT-XL/2"):
        train_sit.main(train_sit.parse_args(["--dataset", str(digits_condensed), "--model", "SiT-M/2"]))
    pixel = pixel_dataset(tmp_path / "pixel")
    with pytest.raises(ValueError, match="classes table"):
        train_sit.main(tiny_args(pixel, tmp_path / "o1", "--use_text", "--max_train_steps", "1"))
    with pytest.raises(ValueError, match="visual_embeds has 16 tokens"):
        overrides = '{"depth":2,"hidden_size":32,"num_attention_heads":2,"patch_size":4}'
        train_sit.main(tiny_args(digits_condensed, tmp_path / "o2", "--model_config_overrides", overrides))
    from d2c_hf.condensed.dataset import CondensedDataset

    no_latents = CondensedDataset.load(pixel)
    no_latents.samples = no_latents.samples.remove_columns("latents")
    no_latents.save_to_disk(tmp_path / "nolat", card=False)
    with pytest.raises(ValueError, match=r"no 'latents' column.*condense\(\.\.\., attach=\('latents'"):
        train_sit.main(tiny_args(tmp_path / "nolat", tmp_path / "o3"))


def test_non_finite_loss_stops_with_step_and_rows_and_keeps_the_last_checkpoint(tmp_path):
    from d2c_hf.train.batches import BatchSource

    clean = pixel_dataset(tmp_path / "clean")
    from d2c_hf.condensed.dataset import CondensedDataset

    stream = BatchSource(CondensedDataset.load(clean), 8, seed=0)
    stream.next_batch()
    bad_row = int(stream.next_batch()["indices"][0])  # first seen in step 2
    bad = pixel_dataset(tmp_path / "bad", bad_row=bad_row)
    args = tiny_args(bad, tmp_path / "o", "--max_train_steps", "6", "--checkpointing_steps", "1",
                     "--train_batch_size", "8")  # fmt: skip
    with pytest.raises(FloatingPointError, match=rf"non-finite loss .* at step 2 .*rows.*\b{bad_row}\b"):
        train_sit.main(args)
    assert sorted(p.name for p in (tmp_path / "o").glob("*checkpoint-*")) == ["checkpoint-1"]
    assert not (tmp_path / "o" / "model_index.json").exists()


def test_push_to_hub_uploads_the_pipeline_with_a_model_card(digits_condensed, tmp_path, monkeypatch):
    """--push_to_hub: one create_repo + upload_folder of the final folder, without checkpoints; the card
    names the condensed dataset. (HfApi is replaced: the Hub is not reachable from the test machine.)"""
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, exist_ok=False):
            calls.append(("create_repo", repo_id, exist_ok))

        def upload_folder(self, *, repo_id, folder_path, commit_message, ignore_patterns):
            folder = Path(folder_path)
            calls.append(("upload", repo_id, sorted(p.name for p in folder.iterdir()), ignore_patterns))
            calls.append(("card", (folder / "README.md").read_text()))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the suite runs offline
    out = tmp_path / "run"
    args = tiny_args(
        digits_condensed, out, "--max_train_steps", "2", "--checkpointing_steps", "1",
        "--push_to_hub", "--hub_model_id", "me/sit-digits", "--hub_token", "secret",
    )  # fmt: skip
    train_sit.main(args)
    assert calls[0] == ("init", "secret")
    assert calls[1] == ("create_repo", "me/sit-digits", True)
    _, repo_id, names, ignore = calls[2]
    assert repo_id == "me/sit-digits"
    assert {"model_index.json", "transformer", "scheduler", "README.md"} <= set(names)
    assert "checkpoint-*" in ignore and any(name.startswith("checkpoint-") for name in names)
    card = calls[3][1]
    assert str(digits_condensed) in card and 'SiTPipeline.from_pretrained("me/sit-digits")' in card
    # both ways to load, REPA's FID sampler call, the licence inherited from the data
    assert 'DiffusionPipeline.from_pretrained("me/sit-digits", trust_remote_code=True)' in card
    assert "num_inference_steps=250, guidance_scale=1.8" in card and "guidance_interval=(0.0, 0.7)" in card
    assert "license: other" in card and "inherit its licence" in card
    assert {"pipeline_sit.py"} <= set(names)
