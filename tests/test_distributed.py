"""Tests for d2c_hf.run.workdir: `d2c score|select|attach|condense` sharded over processes, resumed
after SIGKILL, streamed, and refused on a config mismatch or a corrupt image."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from PIL import Image as PILImage

from d2c_hf.cli import condense_main, score_main, select_main
from d2c_hf.run.sharded import SCORE_DIR, load_scores
from d2c_hf.run.workdir import MANIFEST_FILE, config_diff
from d2c_hf.utils.files import atomic_write

ROWS, BATCH, SHARD = 160, 8, 8  # 20 shards of one batch each
NUM_SHARDS = ROWS // SHARD
VENV_BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@contextlib.contextmanager
def one_thread():
    """torchrun gives each CPU process one thread; compare with single-process runs at the same count
    (bitwise equality holds for the same kernels, i.e. the same threads per process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def score_args(hub, output_dir, *extra: str, dataset: str = "digits") -> list[str]:
    return [
        "--dataset",
        dataset,
        "--max_samples",
        str(ROWS),
        "--scorer",
        str(hub.dit),
        "--vae",
        str(hub.vae),
        "--resolution",
        "32",
        "--batch_size",
        str(BATCH),
        "--shard_size",
        str(SHARD),
        "--num_workers",
        "1",
        "--output_dir",
        str(output_dir),
        *extra,
    ]


def manifest(output_dir) -> dict:
    return json.loads((Path(output_dir) / SCORE_DIR / MANIFEST_FILE).read_text())


def done_shards(output_dir) -> int:
    return len(list((Path(output_dir) / SCORE_DIR).glob("shard-*.npz")))


def assert_same_scores(a: dict, b: dict) -> None:
    for name in ("source_index", "label", "difficulty", "difficulty_per_timestep"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def selection(output_dir) -> list[int]:
    assert select_main(["--output_dir", str(output_dir), "--images_per_class", "3", "--interval", "2"]) == 0
    return json.loads((Path(output_dir) / "selection.json").read_text())["source_indices"]


@pytest.fixture(scope="module")
def reference(local_hub, tmp_path_factory):
    """One single-process run (in this process), the result every other run must reproduce bitwise."""
    out = tmp_path_factory.mktemp("reference")
    with one_thread():
        assert score_main(score_args(local_hub, out)) == 0
    return out


def test_single_process_equals_scorer_apply(reference, local_hub, digits):
    from d2c_hf.selection.scorer import DifficultyScorer
    from d2c_hf.utils.vae import load_vae

    vae = load_vae(local_hub.vae, dtype=torch.float32, device=torch.device("cpu"))
    scorer = DifficultyScorer.from_pretrained(local_hub.dit, vae=vae, resolution=32, batch_size=BATCH)
    with one_thread():
        expected = np.asarray(scorer.apply(digits["train"].select(range(ROWS)))["difficulty"], np.float32)
    got = load_scores(reference)
    np.testing.assert_array_equal(got["source_index"], np.arange(ROWS))
    np.testing.assert_array_equal(got["difficulty"], expected)
    m = manifest(reference)
    assert (m["num_shards"], m["computed_shards"], m["skipped_shards"], m["scored_rows"]) == (
        NUM_SHARDS,
        NUM_SHARDS,
        0,
        ROWS,
    )


def test_accelerate_two_processes_bitwise(reference, local_hub, tmp_path):
    # `accelerate launch --cpu` alone starts one process; --multi_gpu (torchrun) with --cpu in the command's
    # own flags gives two gloo CPU ranks
    out = tmp_path / "two"
    command = [
        str(VENV_BIN / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "d2c_hf.cli",
        "score",
        *score_args(local_hub, out, "--cpu"),
    ]
    proc = subprocess.run(command, env={**ENV, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(out)
    assert m["world_size"] == 2 and m["computed_shards"] == NUM_SHARDS
    assert sorted(r["computed"] for r in m["per_rank"]) == [NUM_SHARDS // 2, NUM_SHARDS // 2]
    assert_same_scores(load_scores(out), load_scores(reference))
    assert selection(out) == selection(reference)


def test_sigkill_then_resume_recomputes_only_unfinished(reference, local_hub, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "d2c_hf.cli", "score", *score_args(local_hub, out)]
    proc = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while done_shards(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and its DataLoader workers
        proc.wait()
    done = done_shards(out)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 2 <= done < NUM_SHARDS
    assert not (out / "scores").exists()  # no merged result from a killed run
    with one_thread():
        assert score_main(score_args(local_hub, out)) == 0
    m = manifest(out)
    assert m["skipped_shards"] == done and m["computed_shards"] == NUM_SHARDS - done
    assert m["computed_rows"] == (NUM_SHARDS - done) * SHARD
    assert_same_scores(load_scores(out), load_scores(reference))
    assert selection(out) == selection(reference)


def test_streaming_equals_map_style(reference, local_hub, tmp_path):
    out = tmp_path / "stream"
    with one_thread():
        args = score_args(local_hub, out, "--streaming")
        args[args.index("--num_workers") + 1] = "2"
        assert score_main(args) == 0
    assert_same_scores(load_scores(out), load_scores(reference))


def test_config_mismatch_refused(reference, local_hub):
    before = sorted(p.name for p in (reference / SCORE_DIR).iterdir())
    with pytest.raises(ValueError, match=r"differing keys: .*scorer\.seed"):
        score_main(score_args(local_hub, reference, "--seed", "1"))
    with pytest.raises(ValueError, match=r"shard_size"):
        score_main(score_args(local_hub, reference, "--shard_size", "16"))
    assert sorted(p.name for p in (reference / SCORE_DIR).iterdir()) == before


def test_corrupt_image_fails_by_default_and_is_skipped_on_request(local_hub, digits, tmp_path):
    from datasets import Image

    source = digits["train"].select(range(24)).cast_column("image", Image(decode=False))
    images = source["image"]
    images = [dict(x) for x in images]
    images[5] = {"bytes": b"not an image", "path": None}
    broken = source.remove_columns("image").add_column("image", images, feature=Image())
    folder = tmp_path / "broken_ds"
    broken.save_to_disk(str(folder))
    args = score_args(local_hub, tmp_path / "fail", dataset=str(folder))
    with pytest.raises(ValueError, match="row 5"):
        score_main(args)
    assert done_shards(tmp_path / "fail") < 3  # the shard with row 5 was never written
    out = tmp_path / "skip"
    assert score_main(score_args(local_hub, out, "--skip_corrupt", dataset=str(folder))) == 0
    assert manifest(out)["corrupt_rows"] == [5]
    scores = load_scores(out)
    assert 5 not in scores["source_index"] and len(scores["source_index"]) == 23
    assert 5 not in selection(out)


def test_condense_command_equals_condense(local_hub, digits, tmp_path):
    from d2c_hf.condensed.dataset import CondensedDataset
    from d2c_hf.run.condense import condense

    out = tmp_path / "condense"
    args = score_args(local_hub, out)
    args += ["--images_per_class", "2", "--interval", "2", "--text_encoder", str(local_hub.t5)]
    args += ["--vision_encoder", str(local_hub.dinov2), "--no_card"]
    assert condense_main(args) == 0
    got = CondensedDataset.load(out / "condensed")
    expected = condense(
        digits["train"].select(range(ROWS)),
        images_per_class=2,
        scorer=local_hub.dit,
        vae=local_hub.vae,
        text_encoder=local_hub.t5,
        vision_encoder=local_hub.dinov2,
        resolution=32,
        interval=2,
        batch_size=BATCH,
    )
    g, e = got.samples.with_format("numpy"), expected.samples.with_format("numpy")
    np.testing.assert_array_equal(g["source_index"], e["source_index"])
    np.testing.assert_array_equal(g["label"], e["label"])
    np.testing.assert_array_equal(g["difficulty"], e["difficulty"])
    # latents are the scorer's stored VAE posterior (each image encoded once), condense() encodes again
    assert got.info["distributed"]["latents_from"] == "scorer posterior"
    np.testing.assert_allclose(g["latents"], e["latents"], atol=2e-3)
    np.testing.assert_allclose(g["visual_embeds"], e["visual_embeds"], atol=2e-3)
    np.testing.assert_array_equal(
        np.asarray(got.classes.with_format("numpy")["text_embeds"]),
        np.asarray(expected.classes.with_format("numpy")["text_embeds"]),
    )
    np.testing.assert_array_equal(
        np.asarray(got.scores.with_format("numpy")["difficulty"]),
        np.asarray(expected.scores.with_format("numpy")["difficulty"]),
    )
    for key in (
        "budget",
        "counts",
        "num_classes",
        "class_names",
        "attach",
        "resolution",
        "num_visual_tokens",
    ):
        assert got.info[key] == expected.info[key], key
    assert got.info["selection"]["strides"] == expected.info["selection"]["strides"]
    image = got.samples[0]["image"]
    assert isinstance(image, PILImage.Image) and image.size == (32, 32)
    # a resumed condense run does no work at all
    assert condense_main(args) == 0
    assert manifest(out)["computed_shards"] == 0
    assert json.loads((out / "attach" / MANIFEST_FILE).read_text())["computed_shards"] == 0
    assert len(load_from_disk(str(out / "scores"))) == ROWS


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "shard-00000-of-00001.npz"

    def disk_full(handle: io.BufferedWriter) -> None:
        handle.write(b"x" * 1000)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, disk_full)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda handle: handle.write(b"ok"))
    assert target.read_bytes() == b"ok" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_config_diff_names_nested_keys():
    old = {"a": 1, "scorer": {"seed": 0, "model": {"sha256": "x"}}, "gone": 1}
    new = {"a": 1, "scorer": {"seed": 1, "model": {"sha256": "y"}}, "new": 2}
    assert config_diff(old, new) == ["gone", "new", "scorer.model.sha256", "scorer.seed"]
    assert config_diff(old, old) == []


ESTIMATOR = ["--num_timesteps", "3", "--num_draws", "2", "--antithetic", "--timestep_grid", "stratified"]


def test_estimator_options_sharded_equal_apply_and_two_processes(local_hub, digits, tmp_path, capsys):
    """More draws, antithetic pairs, stratified timesteps and the merge-time standardisation: one process
    equals DifficultyScorer.apply (scores and reliability), two processes equal one bitwise, and a resume
    with other estimator options is refused."""
    from d2c_hf.run.sharded import load_reliability
    from d2c_hf.selection.reliability import ReliabilityError
    from d2c_hf.selection.scorer import DifficultyScorer
    from d2c_hf.utils.vae import load_vae

    one = tmp_path / "one"
    args = score_args(local_hub, one, *ESTIMATOR, "--standardize_timesteps")
    with one_thread():
        assert score_main(args) == 0
    printed = capsys.readouterr().out
    assert "reliability " in printed and "split-half, 2 draw(s) per timestep" in printed
    vae = load_vae(local_hub.vae, dtype=torch.float32, device=torch.device("cpu"))
    scorer = DifficultyScorer.from_pretrained(
        local_hub.dit,
        vae=vae,
        resolution=32,
        batch_size=BATCH,
        num_timesteps=3,
        num_draws=2,
        antithetic=True,
        timestep_grid="stratified",
        standardize_timesteps=True,
    )
    with one_thread():
        expected = np.asarray(scorer.apply(digits["train"].select(range(ROWS)))["difficulty"], np.float32)
    got = load_scores(one)
    np.testing.assert_array_equal(got["difficulty"], expected)
    record = load_reliability(one)
    assert record["reliability"]["reliability"] == pytest.approx(scorer.reliability.reliability, abs=1e-9)
    assert record["standardization"]["mean"] == pytest.approx(scorer.standardization.mean.tolist())

    two = tmp_path / "two"
    command = [
        str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "d2c_hf.cli", "score",
        *score_args(local_hub, two, *ESTIMATOR, "--standardize_timesteps", "--cpu"),
    ]  # fmt: skip
    proc = subprocess.run(command, env={**ENV, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_scores(load_scores(two), got)
    assert load_reliability(two) == record

    with pytest.raises(ValueError, match=r"differing keys: .*scorer\.num_draws"):
        score_main(score_args(local_hub, one, "--num_timesteps", "3", "--num_draws", "3", "--antithetic",
                              "--timestep_grid", "stratified", "--standardize_timesteps"))  # fmt: skip
    with pytest.raises(ValueError, match=r"differing keys: .*scorer\.standardize_timesteps"):
        score_main(score_args(local_hub, one, *ESTIMATOR))
    # the opt-in gate: the scores are kept, the run stops (resumed: nothing is computed again)
    with one_thread(), pytest.raises(ReliabilityError, match="min_reliability=0.99"):
        score_main([*args, "--min_reliability", "0.99"])
    assert manifest(one)["computed_shards"] == 0


def test_one_draw_runs_report_the_probe(reference):
    from d2c_hf.run.sharded import load_reliability

    record = load_reliability(reference)["reliability"]
    assert record["method"] == "test-retest" and record["details"]["probe_rows"] == 512
    assert manifest(reference)["reliability"] == record
    assert 0 < record["num_rows"] <= ROWS and record["details"]["extra_forward_passes"] == 10 * (
        record["num_rows"] + sum(int(v.split()[0]) for v in record["skipped"].values() if "row" in v)
    )
