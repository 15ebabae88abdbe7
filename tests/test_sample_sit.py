"""examples/sample_sit.py and d2c_hf.evaluation.sampling: protocols, labels, per-sample seeds, shards,
resume, 2 processes = 1 process bitwise, and bad input refused before sampling."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from d2c_hf.evaluation.sampling import (
    check_layout,
    make_scheduler,
    plan_labels,
    read_label_file,
    resolve_labels,
    sample_generators,
    to_uint8,
)
from d2c_hf.pipelines import FlowMatchEulerMaruyamaScheduler, SiTPipeline
from helpers_sit import tiny_sit
from local_hub import tiny_vae

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "sample_sit.py"
ID2LABEL = {0: "tench, Tinca tinca", 1: "goldfish", 2: "great white shark", 3: "crane", 9: "crane, bird"}
N, BATCH, SHARD = 8, 2, 4  # 2 shards of 2 batches


def load_script():
    spec = importlib.util.spec_from_file_location("sample_sit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sample_sit = load_script()


@contextlib.contextmanager
def one_thread():
    """torchrun gives each CPU process one thread: compare with single-process runs at the same count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _save_pipeline(path: Path, id2label=ID2LABEL) -> Path:
    torch.manual_seed(0)  # test-side seeding only: the tiny VAE's init
    pipe = SiTPipeline(
        tiny_sit(seed=1), FlowMatchEulerMaruyamaScheduler(), vae=tiny_vae().eval(), id2label=id2label
    )
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    return _save_pipeline(tmp_path_factory.mktemp("pipe") / "sit")


def _args(pipeline, out, *extra):
    return [
        "--pipeline", str(pipeline), "--output_dir", str(out), "--num_samples", str(N), "--batch_size", str(BATCH),
        "--shard_size", str(SHARD), "--num_inference_steps", "3", "--cpu", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference_run(pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("samples") / "one"
    with one_thread():
        result = sample_sit.main(sample_sit.parse_args(_args(pipeline_dir, out)))
    return out, result


def test_presets_are_the_published_protocols_and_flags_override_them():
    settings = sample_sit.resolve_settings(sample_sit.parse_args(["--pipeline", "p", "--output_dir", "o"]))
    assert settings == {
        "preset": "repa-cfg", "sampler": "sde", "num_inference_steps": 250, "guidance_scale": 1.8,
        "guidance_interval": [0.0, 0.7],
    }  # fmt: skip
    args = sample_sit.parse_args(["--pipeline", "p", "--output_dir", "o", "--preset", "repa-no-cfg"])
    assert sample_sit.resolve_settings(args)["guidance_scale"] == 1.0
    args = sample_sit.parse_args(
        ["--pipeline", "p", "--output_dir", "o", "--sampler", "euler", "--guidance_scale", "1.5"]
    )
    assert sample_sit.resolve_settings(args) | {} == {
        "preset": "repa-cfg", "sampler": "euler", "num_inference_steps": 250, "guidance_scale": 1.5,
        "guidance_interval": [0.0, 0.7],
    }  # fmt: skip
    with pytest.raises(ValueError, match="guidance_interval must satisfy"):
        sample_sit.resolve_settings(
            sample_sit.parse_args(
                ["--pipeline", "p", "--output_dir", "o", "--guidance_interval", "0.8", "0.2"]
            )
        )
    assert type(make_scheduler("sde", {"_class_name": "FlowMatchEulerMaruyamaScheduler", "last_step_sigma": 0.05})).__name__ == "FlowMatchEulerMaruyamaScheduler"  # fmt: skip
    assert make_scheduler("sde", {"_class_name": "FlowMatchEulerMaruyamaScheduler", "last_step_sigma": 0.05}).config.last_step_sigma == 0.05  # fmt: skip
    assert type(make_scheduler("heun", {})).__name__ == "FlowMatchHeunDiscreteScheduler"


def test_labels_uniform_balanced_and_from_files(tmp_path):
    uniform = plan_labels(50_000, 1000, "uniform", seed=0)
    np.testing.assert_array_equal(uniform, plan_labels(50_000, 1000, "uniform", seed=0))
    assert (
        uniform.min() >= 0 and uniform.max() <= 999 and np.bincount(uniform).std() > 3
    )  # i.i.d., not balanced
    assert not np.array_equal(uniform, plan_labels(50_000, 1000, "uniform", seed=1))
    balanced = plan_labels(50_000, 1000, "balanced", seed=0)
    assert set(np.bincount(balanced, minlength=1000)) == {50} and not np.array_equal(
        balanced[:1000], np.arange(1000)
    )
    np.testing.assert_array_equal(np.bincount(plan_labels(7, 3, "balanced")), [3, 2, 2])

    (tmp_path / "l.txt").write_text("# header\n3\n\ngoldfish  # a fish\ntench\n")
    entries = read_label_file(tmp_path / "l.txt")
    assert entries == [(2, 3), (4, "goldfish"), (5, "tench")]
    names = {"goldfish": 1, "tench": 0}
    got = resolve_labels(entries, num_samples=3, num_classes=10, name_to_id=lambda n: names[n])
    np.testing.assert_array_equal(got, [3, 1, 0])
    (tmp_path / "l.json").write_text(json.dumps([1, "tench"]))
    assert read_label_file(tmp_path / "l.json") == [(1, 1), (2, "tench")]
    np.save(tmp_path / "l.npy", np.array([4, 5]))
    assert read_label_file(tmp_path / "l.npy") == [(1, 4), (2, 5)]


def test_script_writes_the_adm_npz_and_sidecar_equal_to_plain_pipeline_calls(reference_run, pipeline_dir):
    out, result = reference_run
    with np.load(out / "samples.npz") as data:
        images, labels = data["arr_0"], data["arr_1"]
    assert images.shape == (N, 32, 32, 3) and images.dtype == np.uint8 and images.std() > 5
    np.testing.assert_array_equal(labels, plan_labels(N, 10, "uniform", seed=0))
    sidecar = json.loads((out / "samples.json").read_text())
    assert sidecar["sampling"]["sampler"] == "sde" and sidecar["sampling"]["num_inference_steps"] == 3
    assert sidecar["sampling"]["guidance_scale"] == 1.8 and sidecar["sampling"]["guidance_interval"] == [
        0.0,
        0.7,
    ]
    assert sidecar["sampling"]["scheduler"]["last_step_sigma"] == 0.04 and sidecar["seed"] == 0
    assert sidecar["pipeline"]["transformer"]["sha256"] and sidecar["world_size"] == 1
    assert result["sampled_here"] == N and len(list((out / "samples").glob("shard-*.npz"))) == N // SHARD

    # the script adds nothing to the pipeline: samples 2..3 are one plain call with their generators
    pipe = SiTPipeline.from_pretrained(pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    with one_thread():
        direct = pipe(
            labels[2:4].tolist(), num_inference_steps=3, guidance_scale=1.8, guidance_interval=(0.0, 0.7),
            generator=sample_generators(0, [2, 3], "cpu"), output_type="pt",
        ).images  # fmt: skip
    np.testing.assert_array_equal(to_uint8(direct), images[2:4])


def test_resume_samples_only_unfinished_shards(reference_run, pipeline_dir, tmp_path):
    out, _ = reference_run
    copy = tmp_path / "resume"
    with one_thread():
        sample_sit.main(
            sample_sit.parse_args(_args(pipeline_dir, copy, "--num_samples", "4"))
        )  # another config
        with pytest.raises(ValueError, match="differing keys: .*num_samples"):
            sample_sit.main(sample_sit.parse_args(_args(pipeline_dir, copy)))
        with pytest.raises(ValueError, match="differing keys: .*seed"):
            sample_sit.main(sample_sit.parse_args(_args(pipeline_dir, out, "--seed", "1")))
        import shutil

        shutil.copytree(out, tmp_path / "again")
        (tmp_path / "again" / "samples" / "shard-00001-of-00002.npz").unlink()
        (tmp_path / "again" / "samples.npz").unlink()
        (tmp_path / "again" / "samples" / ".shard-00001-of-00002.npz.tmp-1-dead").write_bytes(b"partial")
        result = sample_sit.main(sample_sit.parse_args(_args(pipeline_dir, tmp_path / "again")))
        merged = (tmp_path / "again" / "samples.npz").stat().st_mtime_ns
        rerun = sample_sit.main(sample_sit.parse_args(_args(pipeline_dir, tmp_path / "again")))
    assert result["sampled_here"] == SHARD  # shard 0 was skipped
    assert rerun["sampled_here"] == 0 and (tmp_path / "again" / "samples.npz").stat().st_mtime_ns == merged
    assert not list((tmp_path / "again" / "samples").glob(".*tmp*"))
    with np.load(out / "samples.npz") as a, np.load(tmp_path / "again" / "samples.npz") as b:
        np.testing.assert_array_equal(a["arr_0"], b["arr_0"])


def test_two_processes_give_bitwise_the_single_process_samples(reference_run, pipeline_dir, tmp_path):
    out, _ = reference_run
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(SCRIPT), *_args(pipeline_dir, tmp_path / "two"),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sidecar = json.loads((tmp_path / "two" / "samples.json").read_text())
    assert sidecar["world_size"] == 2
    with np.load(out / "samples.npz") as a, np.load(tmp_path / "two" / "samples.npz") as b:
        np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
        np.testing.assert_array_equal(a["arr_1"], b["arr_1"])


def test_bad_input_is_refused_before_sampling(pipeline_dir, tmp_path):
    with pytest.raises(ValueError, match="--num_samples 9 is not divisible by --batch_size 2"):
        check_layout(9, 2, 1)
    with pytest.raises(
        ValueError, match=r"not divisible by the world size \(3 processes\) x --batch_size 2 = 6"
    ):
        check_layout(8, 2, 3)
    with pytest.raises(ValueError, match="--shard_size 3 must be a positive multiple of --batch_size 2"):
        check_layout(8, 2, 1, 3)
    with pytest.raises(ValueError, match="not divisible by --batch_size"):
        sample_sit.main(sample_sit.parse_args(_args(pipeline_dir, tmp_path / "o", "--num_samples", "7")))

    unnamed = _save_pipeline(tmp_path / "unnamed", id2label=None)
    (tmp_path / "names.txt").write_text("\n".join(["goldfish", "1"] * (N // 2)))
    with pytest.raises(ValueError, match="names classes .*'goldfish' at line 1.* has no id2label"):
        sample_sit.main(
            sample_sit.parse_args(_args(unnamed, tmp_path / "o", "--labels", str(tmp_path / "names.txt")))
        )
    (tmp_path / "typo.txt").write_text("\n".join(["goldfish", "goldfsh", "crane", "11", "1", "1", "1", "1"]))
    with pytest.raises(ValueError) as err:
        sample_sit.main(
            sample_sit.parse_args(_args(pipeline_dir, tmp_path / "o", "--labels", str(tmp_path / "typo.txt")))
        )
    message = str(err.value)
    assert "'goldfsh' (line 2)" in message and "Close matches: 'goldfish'" in message
    assert "'crane' (line 3)" in message and "several classes [3, 9]" in message
    assert "class id 11 at line 4 is outside [0, 9]" in message
    (tmp_path / "short.txt").write_text("1\n2\n")
    with pytest.raises(ValueError, match="holds 2 labels but --num_samples is 8"):
        sample_sit.main(
            sample_sit.parse_args(
                _args(pipeline_dir, tmp_path / "o", "--labels", str(tmp_path / "short.txt"))
            )
        )
    assert not (tmp_path / "o").exists()  # nothing was written
