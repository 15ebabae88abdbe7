"""examples/train_sit.py on bad input, case by case.

Every case ends either in an early, clear error that names the argument, column or file and says what to
do (the message is checked), or in a correct result. Never in a traceback from inside a dependency (the
raising frame must be the script's or d2c_hf's), a silent wrong result, or a half-written ``--output_dir``
(the folder is compared file by file before and after).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from helpers_train_sit import (
    OURS,
    ROOT,
    base_args,
    load_script,
    make_condensed,
    reset_accelerate_state,
    snapshot,
)

train_sit = load_script("train_sit_bad_inputs")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_inputs")
    sets = {
        "full": make_condensed(root / "full"),
        "pixel": make_condensed(root / "pixel", visual=False, classes=False, vae_space="pixel"),
        "no_latents": make_condensed(root / "no_latents", latents=False),
        "odd_channels": make_condensed(root / "odd_channels", channels=7),
        "eight_channels": make_condensed(root / "eight_channels", channels=16, visual=False),
    }
    (root / "empty").mkdir()
    sets["empty"] = root / "empty"
    sets["file"] = root / "a_file.txt"
    sets["file"].write_text("not a dataset")
    return sets


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """A finished 2-step run with checkpoint-1 and checkpoint-2 (copied by the cases that need one)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train_sit.main(train_sit.parse_args(base_args(data["full"], out, "--checkpointing_steps", "1")))
    return out


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Each case gets its own accelerate state (a mixed precision fixed by one case would refuse the next)."""
    reset_accelerate_state()
    yield
    reset_accelerate_state()


def _save_vae(folder: Path) -> None:
    from local_hub import tiny_vae

    tiny_vae().save_pretrained(folder)


def with_checkpoints(tmp: Path, out: Path, trained: Path) -> None:
    shutil.copytree(trained, out)


def renamed_checkpoint(tmp: Path, out: Path, trained: Path) -> None:
    shutil.copytree(trained / "checkpoint-1", tmp / "my-checkpoint")


@dataclass
class Case:
    id: str
    args: tuple[str, ...] = ()
    dataset: str = "full"
    #: "exit": argparse refuses (SystemExit 2, message on stderr); "error": main raises ``error``; "ok": it trains
    kind: str = "error"
    error: type[BaseException] = ValueError
    #: regexes the message must match (argument / column / file, and the fix)
    message: tuple[str, ...] = ()
    setup: Callable[[Path, Path, Path], None] | None = None
    check: Callable[[dict, Path], None] | None = None
    drop: tuple[str, ...] = field(default=())  # base arguments (with their value) to leave out
    needs_absent: str | None = None  # a package that must not be installed for this case


def _ok_new_run(result, out):
    assert result["global_step"] == 2 and np.isfinite(result["final_loss"])


def _ok_bf16(result, out):
    assert result["mixed_precision"] == "bf16" and np.isfinite(result["final_loss"])


def _ok_no_checkpoints(result, out):
    assert result["checkpoints"] == [] and not list(out.glob("*checkpoint-*"))


def _ok_resumed_by_name(result, out):
    assert result["global_step"] == 3 and [s for s, _ in result["loss_history"]] == [3]  # one new step


def _ok_export_only(result, out):
    assert result["global_step"] == 2 and result["loss_history"] == []


CASES = [
    # ---- refused by parse_args: exit status 2, usage + the message on stderr ----------------------------
    Case("missing --dataset", kind="exit", drop=("--dataset",), message=(r"required: --dataset",)),
    Case("misspelt flag", ("--learning-rate", "1e-4"), kind="exit", message=(r"unrecognized arguments: --learning-rate",)),
    Case("batch size not an int", ("--train_batch_size", "abc"), kind="exit", message=(r"--train_batch_size: invalid int value: 'abc'",)),
    Case("zero batch size", ("--train_batch_size", "0"), kind="exit", message=(r"--train_batch_size must be >= 1, got 0",)),
    Case("negative steps", ("--max_train_steps", "-5"), kind="exit", message=(r"--max_train_steps must be >= 1, got -5",)),
    Case("zero accumulation", ("--gradient_accumulation_steps", "0"), kind="exit", message=(r"--gradient_accumulation_steps must be >= 1",)),
    Case("negative learning rate", ("--learning_rate", "-1"), kind="exit", message=(r"--learning_rate must be > 0, got -1",)),
    Case("nan learning rate", ("--learning_rate", "nan"), kind="exit", message=(r"--learning_rate must be a finite number, got nan",)),
    Case("beta out of range", ("--adam_beta1", "1.5"), kind="exit", message=(r"--adam_beta1 must be in \[0, 1\), got 1.5",)),
    Case("zero grad clip", ("--max_grad_norm", "0"), kind="exit", message=(r"--max_grad_norm must be > 0",)),
    Case("negative proj_coeff", ("--proj_coeff", "-0.5"), kind="exit", message=(r"--proj_coeff must be >= 0, got -0.5",)),
    Case("negative seed", ("--seed", "-1"), kind="exit", message=(r"--seed must be in \[0, 2\*\*32\), got -1",)),
    Case("cfg_prob 1", ("--cfg_prob", "1"), kind="exit", message=(r"--cfg_prob must be in \[0, 1\), got 1.0",)),
    Case("ema_decay above 1", ("--ema_decay", "1.5"), kind="exit", message=(r"--ema_decay must be in \[0, 1\], got 1.5",)),
    Case("unknown mixed precision", ("--mixed_precision", "fp32"), kind="exit", message=(r"--mixed_precision: invalid choice: 'fp32'",)),
    Case("unknown weighting", ("--weighting", "cosine"), kind="exit", message=(r"--weighting: invalid choice: 'cosine'",)),
    Case("misspelt tracker", ("--report_to", "tensorbord"), kind="exit", message=(r"--report_to must be one of none, .*tensorboard.*got 'tensorbord'",)),
    Case("overrides not JSON", ("--model_config_overrides", "{depth: 2"), kind="exit", message=(r"--model_config_overrides is not valid JSON",)),
    Case("encoder_depth 0", ("--encoder_depth", "0"), kind="exit", message=(r"--encoder_depth must be >= 1",)),
    Case("negative memory limit", ("--data_max_in_memory_gb", "-1"), kind="exit", message=(r"--data_max_in_memory_gb must be >= 0",)),
    Case("checkpoint limit 0", ("--checkpoints_total_limit", "0"), kind="exit", message=(r"--checkpoints_total_limit must be >= 1",)),
    # the sampling pipeline's rules, before step 1 (they used to fail at the first grid, hours in)
    Case("validation guidance below 1", ("--validation_guidance_scale", "0.5"), kind="exit", message=(r"--validation_guidance_scale must be >= 1 \(1 = no guidance\), got 0.5",)),
    Case("guidance without the null class", ("--cfg_prob", "0", "--validation_guidance_scale", "2"), kind="exit", message=(r"--validation_guidance_scale 2.0 needs the null class, which --cfg_prob 0 never trains",)),
    Case("validation classes without a grid", ("--validation_classes", "cat"), kind="exit", message=(r"--validation_classes needs --num_validation_images > 0",)),
    # an output folder that is, lies in or holds an input
    Case("output_dir is the dataset", ("--output_dir", "{dataset}"), message=(r"--output_dir .*full is --dataset .*full.*apart from --dataset",)),
    Case("output_dir inside the dataset", ("--output_dir", "{dataset}/run"), message=(r"--output_dir .*full/run lies inside --dataset",)),
    Case("output_dir holds the dataset", ("--output_dir", "{dataset}/.."), message=(r"--output_dir .* contains --dataset",)),
    Case("output_dir inside the VAE", ("--vae", "{tmp}/vae", "--output_dir", "{tmp}/vae/run"), setup=lambda tmp, out, run: _save_vae(tmp / "vae"), message=(r"lies inside --vae",)),
    Case("a grid of latents no image holds", ("--num_validation_images", "1"), dataset="eight_channels", message=(r"--num_validation_images 1 without a VAE: the model makes 8-channel latents.*pass --vae",)),
    # ---- refused by main before anything is written --------------------------------------------------
    Case("dataset folder missing", dataset="missing", message=(r"--dataset .*missing: no condensed dataset at",)),
    Case("dataset is a file", dataset="file", message=(r"--dataset .*a_file.txt: .* is a file; a condensed dataset is a folder",)),
    Case("dataset folder not condensed", dataset="empty", message=(r"--dataset .*empty: .*no d2c_info.json",)),
    Case("output_dir is a file", setup=lambda tmp, out, run: out.write_text("x"), message=(r"--output_dir .*out is a file; pass a folder",)),
    Case("output_dir inside a file", ("--output_dir", "{tmp}/file/out"), setup=lambda tmp, out, run: (tmp / "file").write_text("x"), message=(r"--output_dir .*file/out is inside .*file, which is a file",)),
    Case("unknown model preset", ("--model", "SiT-M/2"), message=(r"Unknown SiT preset 'SiT-M/2'.*SiT-XL/2",)),
    Case("unknown override key", ("--model_config_overrides", '{"depthh": 2}'), message=(r"--model_config_overrides has unknown keys \['depthh'\].*\bdepth\b",)),
    Case("heads do not divide width", ("--model_config_overrides", '{"depth":2,"hidden_size":30,"num_attention_heads":4}'), message=(r"--model_config_overrides .*hidden_size \(30\) must be divisible by num_attention_heads \(4\)",)),
    Case("override clashes with latents", ("--model_config_overrides", '{"depth":2,"hidden_size":32,"num_attention_heads":2,"sample_size":16}'), message=(r"takes 4x16x16 inputs but the dataset's latents are 4x8x8", r"sets \['sample_size'\].*drop them")),
    Case("override clashes with classes", ("--model_config_overrides", '{"depth":2,"hidden_size":32,"num_attention_heads":2,"num_classes":5}'), message=(r"num_classes=5 but the dataset has 3 classes", r"drop them")),
    Case("visual tokens vs patch size", ("--model_config_overrides", '{"depth":2,"hidden_size":32,"num_attention_heads":2,"patch_size":4}'), message=(r"visual_embeds has 16 tokens.*\(8/4\)\^2 = 4.*--no-use_visual",)),
    Case("--use_visual without the column", ("--use_visual",), dataset="pixel", message=(r"no 'visual_embeds' column.*--no-use_visual",)),
    Case("--use_text without a classes table", ("--use_text",), dataset="pixel", message=(r"no classes table with 'text_embeds'.*--no-use_text",)),
    Case("no latents column", dataset="no_latents", message=(r"no 'latents' column.*condense\(\.\.\., attach=\('latents'",)),
    Case("latents not mean|std", dataset="odd_channels", message=(r"'latents' must be fixed-shape \(2C, h, w\) rows .*\(7, 8, 8\)",)),
    Case("encoder_depth beyond depth", ("--encoder_depth", "9"), message=(r"encoder_depth must satisfy 1 <= encoder_depth <= depth \(2\), got 9",)),
    Case("unknown validation class", ("--num_validation_images", "1", "--validation_classes", "cta"), message=(r"--validation_classes: Unknown class name 'cta'.*Close matches: 'cat'",)),
    Case("validation class id out of range", ("--num_validation_images", "1", "--validation_classes", "7"), message=(r"--validation_classes: class id 7 is out of range: .*0\.\.2",)),
    Case("fp16 on the CPU", ("--mixed_precision", "fp16"), message=(r"--mixed_precision fp16 .*needs a GPU.*bf16 or no",)),
    Case("tracker package missing", ("--report_to", "tensorboard"), needs_absent="tensorboard", message=(r"--report_to tensorboard: the tensorboard package is not installed.*pip install tensorboard",)),
    Case("push while offline", ("--push_to_hub",), message=(r"--push_to_hub cannot upload while HF_HUB_OFFLINE=1",)),
    Case("resume from nothing", ("--resume_from_checkpoint", "{tmp}/nothing"), error=FileNotFoundError, message=(r"--resume_from_checkpoint .*nothing: no such checkpoint folder",)),
    Case("resume from a non-checkpoint folder", ("--resume_from_checkpoint", "{dataset}"), message=(r"must be named checkpoint-N",)),
    Case("resume from a renamed checkpoint", ("--resume_from_checkpoint", "{tmp}/my-checkpoint"), setup=renamed_checkpoint, message=(r"my-checkpoint: the folder must be named checkpoint-N",)),
    Case("new run over old checkpoints", setup=with_checkpoints, message=(r"already holds checkpoints of an earlier run \(checkpoint-1, checkpoint-2\).*--resume_from_checkpoint latest.*new --output_dir",)),
    Case("resume beyond --max_train_steps", ("--resume_from_checkpoint", "latest", "--max_train_steps", "1"), setup=with_checkpoints, message=(r"--max_train_steps 1 is below the step of .*checkpoint-2 \(2\).*above 2",)),
    Case("resume with another seed", ("--resume_from_checkpoint", "latest", "--max_train_steps", "3", "--seed", "1"), setup=with_checkpoints, message=(r"cannot resume from .*checkpoint-2.*seed=0, this one 1",)),
    Case("vae folder missing", ("--vae", "{tmp}/no_vae"), message=(r"could not load the dataset's VAE .*no_vae.*pass --vae",)),
    Case("latent set without a recorded VAE", drop=("--vae",), message=(r"records no VAE.*pass --vae",)),
    # ---- correct results ------------------------------------------------------------------------------
    Case("resume latest with no checkpoint starts fresh", ("--resume_from_checkpoint", "latest"), kind="ok", check=_ok_new_run),
    Case("bf16 on the CPU trains", ("--mixed_precision", "bf16"), kind="ok", check=_ok_bf16),
    Case("batch larger than the dataset", ("--train_batch_size", "32"), kind="ok", check=_ok_new_run),
    Case("checkpointing_steps beyond the run", ("--checkpointing_steps", "100"), kind="ok", check=_ok_no_checkpoints),
    Case("resume by checkpoint name", ("--resume_from_checkpoint", "checkpoint-2", "--max_train_steps", "3"), setup=with_checkpoints, kind="ok", check=_ok_resumed_by_name),
    Case("resume at --max_train_steps exports", ("--resume_from_checkpoint", "latest"), setup=with_checkpoints, kind="ok", check=_ok_export_only),
]  # fmt: skip


def test_the_catalogue_is_large_and_unique():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, data, trained, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    if case.needs_absent and importlib.util.find_spec(case.needs_absent) is not None:
        pytest.skip(f"{case.needs_absent} is installed")
    # offline, as the suite runs, whatever the environment says
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "out"
    dataset = data.get(case.dataset, tmp_path / case.dataset)
    argv = base_args(dataset, out)
    for name in case.drop:
        i = argv.index(name)
        del argv[i : i + 2]
    argv += [a.replace("{tmp}", str(tmp_path)).replace("{dataset}", str(data["full"])) for a in case.args]
    if case.setup is not None:
        case.setup(tmp_path, out, trained)
    out = Path(argv[len(argv) - 1 - argv[::-1].index("--output_dir") + 1])  # the last one wins
    before = snapshot(out)

    if case.kind == "exit":
        with pytest.raises(SystemExit) as exit_info:
            train_sit.parse_args(argv)
        assert exit_info.value.code == 2
        text = capsys.readouterr().err
    elif case.kind == "error":
        with pytest.raises(case.error) as error_info:
            train_sit.main(train_sit.parse_args(argv))
        text = str(error_info.value)
        raised_in = traceback.extract_tb(error_info.value.__traceback__)[-1].filename
        assert raised_in.startswith(OURS), f"raised inside a dependency: {raised_in}"
    else:
        result = train_sit.main(train_sit.parse_args(argv))
        case.check(result, out)
        assert (out / "model_index.json").is_file() and not list(out.glob(".*.tmp"))
        return
    for pattern in case.message:
        assert re.search(pattern, text, re.S), f"{pattern!r} not in: {text}"
    assert snapshot(out) == before, "the failed run changed --output_dir"


def test_push_without_a_token_is_refused_before_training(data, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ValueError, match=r"--push_to_hub needs a Hub token.*hf auth login.*HF_TOKEN"):
        train_sit.main(train_sit.parse_args(base_args(data["full"], tmp_path / "out", "--push_to_hub")))
    assert not (tmp_path / "out").exists()


def test_an_invalid_hub_repo_name_is_refused_before_training(data, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "token")
    argv = base_args(data["full"], tmp_path / "out", "--push_to_hub", "--hub_model_id", "me/not a name")
    with pytest.raises(ValueError, match=r"--hub_model_id 'me/not a name' is not a valid Hub repo id"):
        train_sit.main(train_sit.parse_args(argv))
    assert not (tmp_path / "out").exists()


def test_args_json_is_the_recorded_arguments(data, tmp_path):
    out = tmp_path / "out"
    args = train_sit.parse_args(base_args(data["full"], out, "--max_train_steps", "1"))
    train_sit.main(args)
    recorded = json.loads((out / "args.json").read_text())
    assert recorded == train_sit.recorded_args(args) and "hub_token" not in recorded


# ==================================================================================================
# Issue 22 classes for the example scripts: each model argument given each wrong kind of model, in-place
# damage of what they read, a full disk for what they write, one-line errors, and sample_sit.py's own cases.
# ==================================================================================================


@pytest.fixture(scope="module")
def kinds(local_hub, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kinds")
    (root / "empty").mkdir()
    (root / "weights.safetensors").write_bytes(b"not a folder")
    return {
        "a file": root / "weights.safetensors",
        "an empty folder": root / "empty",
        "a DiT transformer": local_hub.dit / "transformer",
        "a T5 encoder": local_hub.t5,
        "a DINOv2 encoder": local_hub.dinov2,
        "a VAE": local_hub.vae,
        "a DiT pipeline": local_hub.dit,
    }


HOLDS = {
    "a file": r"is a file",
    "an empty folder": r"holds no model",
    "a DiT transformer": r"holds a DiTTransformer2DModel \(diffusers\)",
    "a T5 encoder": r"holds a T5EncoderModel \(transformers, model_type 't5'\)",
    "a DINOv2 encoder": r"holds a Dinov2Model \(transformers, model_type 'dinov2'\)",
    "a VAE": r"holds an AutoencoderKL \(diffusers\)",
    "a DiT pipeline": r"holds a DiTPipeline pipeline",
}


@pytest.mark.parametrize(
    "kind", ["a file", "an empty folder", "a DiT transformer", "a T5 encoder", "a DINOv2 encoder"]
)
def test_train_sit_vae_given_the_wrong_kind_of_model(kind, kinds, data, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(
        ValueError, match=rf"--vae: {re.escape(str(kinds[kind]))} {HOLDS[kind]}.*; expected an AutoencoderKL"
    ):
        train_sit.main(train_sit.parse_args([*base_args(data["full"], out), "--vae", str(kinds[kind])]))
    assert not out.exists()


def test_train_sit_refuses_a_dataset_damaged_in_place(data, tmp_path):
    from faults import flip_bytes

    copy = tmp_path / "set"
    shutil.copytree(data["full"], copy)
    flip_bytes(next((copy / "samples").glob("*.arrow")), where=0.8)
    out = tmp_path / "out"
    with pytest.raises(
        ValueError,
        match=r"--dataset .*the 'samples' table's data file samples/data-00000-of-00001.arrow is damaged",
    ):
        train_sit.main(train_sit.parse_args(base_args(copy, out)))
    assert not out.exists()
    result = train_sit.main(train_sit.parse_args([*base_args(copy, out), "--skip_checksums"]))  # the opt-out
    assert result["global_step"] == 2


def test_train_sit_refuses_to_resume_from_weights_damaged_in_place(data, trained, tmp_path):
    from faults import flip_bytes

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    flip_bytes(out / "checkpoint-2" / "transformer_ema" / train_sit.WEIGHTS_NAME, where=0.6)
    before = snapshot(out)
    argv = [*base_args(data["full"], out, "--resume_from_checkpoint", "latest", "--max_train_steps", "3")]
    with pytest.raises(
        ValueError,
        match=r"checkpoint-2: the checkpoint is damaged .*transformer_ema/diffusion_pytorch_model.safetensors is damaged.*--resume_from_checkpoint .*checkpoint-1",
    ):
        train_sit.main(train_sit.parse_args(argv))
    assert snapshot(out) == before


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.98])  # args.json; a grid or checkpoint; the pipeline
def test_train_sit_on_a_full_disk_leaves_complete_files_only_and_resumes(fraction, data, tmp_path):
    """args.json, sample grids, checkpoints and the final pipeline under ENOSPC: an error naming the file or
    folder; only complete checkpoints (and no pipeline unless complete) are left, then a resume finishes."""
    from d2c_hf.train.checkpoints import list_checkpoints, resume_verdict
    from faults import count_written, full_disk

    extra = (
        "--checkpointing_steps",
        "1",
        "--num_validation_images",
        "1",
        "--validation_steps",
        "1",
        "--vae",
        "none",
    )
    with count_written() as measured:
        train_sit.main(train_sit.parse_args(base_args(data["full"], tmp_path / "reference", *extra)))
    reset_accelerate_state()
    out = tmp_path / "out"
    with pytest.raises(OSError) as info, full_disk(measured.written * fraction):
        train_sit.main(train_sit.parse_args(base_args(data["full"], out, *extra)))
    assert info.value.errno == 28 and str(out) in str(info.value) and ".tmp" not in str(info.value), (
        info.value
    )
    assert [p.name for p in out.glob(".*") if p.name != ".d2c.lock"] == []  # no staging left
    for checkpoint in list_checkpoints(out):
        assert resume_verdict(checkpoint, 1) == (None, None)
    assert not (out / "model_index.json").exists()  # the pipeline is the last thing written
    reset_accelerate_state()
    result = train_sit.main(
        train_sit.parse_args(base_args(data["full"], out, *extra, "--resume_from_checkpoint", "latest"))
    )
    assert result["global_step"] == 2 and (out / "model_index.json").is_file()


def test_scripts_print_one_line_errors(data, kinds, tmp_path):
    """As `d2c` does: one line on stderr, exit status 2; --debug shows the traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[1] / "examples"
    for script, argv, pattern in (
        (
            "train_sit.py",
            [*base_args(tmp_path / "no_set", tmp_path / "o1")],
            r"train_sit.py: error: --dataset .*no_set: no condensed dataset",
        ),
        (
            "sample_sit.py",
            ["--pipeline", str(kinds["a T5 encoder"]), "--output_dir", str(tmp_path / "o2")],
            r"sample_sit.py: error: --pipeline: .* holds a T5EncoderModel",
        ),
    ):
        done = subprocess.run(
            [sys.executable, str(root / script), *argv], capture_output=True, text=True, env=env
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert re.search(pattern, done.stderr.strip().splitlines()[-1]), done.stderr
        if script == "sample_sit.py":
            continue  # the same run_script: --debug is checked once
        debug = subprocess.run(
            [sys.executable, str(root / script), *argv, "--debug"], capture_output=True, text=True, env=env
        )
        assert debug.returncode == 1 and "Traceback" in debug.stderr


# ------------------------------------------------------------------ sample_sit.py


def _sample_script():
    spec = importlib.util.spec_from_file_location(
        "sample_sit_bad_inputs", ROOT / "examples" / "sample_sit.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sample_sit = _sample_script()


@pytest.fixture(scope="module")
def sit_pipelines(tmp_path_factory) -> dict[str, Path]:
    import torch

    from d2c_hf.pipelines import FlowMatchEulerMaruyamaScheduler, SiTPipeline
    from helpers_sit import tiny_sit
    from local_hub import tiny_vae

    root = tmp_path_factory.mktemp("sit")
    torch.manual_seed(0)  # test-side seeding only
    SiTPipeline(tiny_sit(), FlowMatchEulerMaruyamaScheduler(), vae=tiny_vae().eval()).save_pretrained(
        root / "latent"
    )
    SiTPipeline(tiny_sit(), FlowMatchEulerMaruyamaScheduler(), vae=None).save_pretrained(
        root / "latent_no_vae"
    )
    return {"latent": root / "latent", "latent_no_vae": root / "latent_no_vae", "root": root}


def _sample_args(pipeline, out, *extra):
    return ["--pipeline", str(pipeline), "--output_dir", str(out), "--num_samples", "4", "--batch_size", "2",
            "--shard_size", "2", "--num_inference_steps", "2", "--preset", "repa-no-cfg", "--cpu", *extra]  # fmt: skip


SAMPLE_CASES = {
    "output_dir is the pipeline": (lambda p, tmp: _sample_args(p["latent"], p["latent"]), r"--output_dir .*latent is --pipeline"),
    "output_dir inside the pipeline": (lambda p, tmp: _sample_args(p["latent"], p["latent"] / "samples"), r"lies inside --pipeline"),
    "output_dir holds the labels file": (lambda p, tmp: _sample_args(p["latent"], tmp / "lab", "--labels", str(tmp / "lab" / "labels.txt")), r"contains --labels"),
    "negative seed": (lambda p, tmp: _sample_args(p["latent"], tmp / "o", "--seed", "-1"), r"--seed must be in \[0, 2\*\*32\), got -1"),
    "latent pipeline without a VAE": (lambda p, tmp: _sample_args(p["latent_no_vae"], tmp / "o"), r"has no VAE and its transformer makes 4-channel latents, not images"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SAMPLE_CASES), ids=list(SAMPLE_CASES))
def test_sample_sit_bad_input(name, sit_pipelines, tmp_path, capsys):
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "labels.txt").write_text("0\n1\n2\n3\n")
    make, pattern = SAMPLE_CASES[name]
    before = snapshot(sit_pipelines["root"])
    try:
        args = sample_sit.parse_args(make(sit_pipelines, tmp_path))
        with pytest.raises(ValueError, match=pattern):
            sample_sit.main(args)
    except SystemExit as exit_info:
        assert exit_info.code == 2 and re.search(pattern, capsys.readouterr().err)
    assert snapshot(sit_pipelines["root"]) == before and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "kind",
    [
        "a file",
        "an empty folder",
        "a DiT pipeline",
        "a DiT transformer",
        "a VAE",
        "a T5 encoder",
        "a DINOv2 encoder",
    ],
)
def test_sample_sit_pipeline_given_the_wrong_kind_of_model(kind, kinds, tmp_path):
    with pytest.raises(
        ValueError,
        match=rf"--pipeline: {re.escape(str(kinds[kind]))} {HOLDS[kind]}.*; expected a SiTPipeline folder",
    ):
        sample_sit.main(sample_sit.parse_args(_sample_args(kinds[kind], tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_sample_sit_refuses_a_pipeline_damaged_in_place_and_resamples_a_damaged_shard(
    sit_pipelines, tmp_path
):
    from faults import flip_bytes

    out = tmp_path / "o"
    sample_sit.main(sample_sit.parse_args(_sample_args(sit_pipelines["latent"], out)))
    first = np.load(out / "samples.npz")["arr_0"]
    flip_bytes(out / "samples" / "shard-00001-of-00002.npz", where=0.5)
    (out / "samples.npz").unlink()
    sample_sit.main(
        sample_sit.parse_args(_sample_args(sit_pipelines["latent"], out))
    )  # shard 1 sampled again
    np.testing.assert_array_equal(np.load(out / "samples.npz")["arr_0"], first)
    copy = tmp_path / "pipe"
    shutil.copytree(sit_pipelines["latent"], copy)
    flip_bytes(copy / "transformer" / "diffusion_pytorch_model.safetensors", where=0.5)
    with pytest.raises(
        ValueError,
        match=r"the pipeline .*pipe is damaged: .*transformer/diffusion_pytorch_model.safetensors is damaged",
    ):
        sample_sit.main(sample_sit.parse_args(_sample_args(copy, tmp_path / "o2")))


@pytest.mark.parametrize("fraction", [0.2, 0.9])
def test_sample_sit_on_a_full_disk_names_the_file_and_resumes(fraction, sit_pipelines, tmp_path):
    from faults import count_written, full_disk

    with count_written() as measured:
        sample_sit.main(sample_sit.parse_args(_sample_args(sit_pipelines["latent"], tmp_path / "reference")))
    out = tmp_path / "o"
    with pytest.raises(OSError) as info, full_disk(measured.written * fraction):
        sample_sit.main(sample_sit.parse_args(_sample_args(sit_pipelines["latent"], out)))
    assert info.value.errno == 28 and str(out) in str(info.value) and ".tmp-" not in str(info.value), (
        info.value
    )
    assert [p for p in out.rglob(".*") if p.name != ".d2c.lock"] == []
    sample_sit.main(sample_sit.parse_args(_sample_args(sit_pipelines["latent"], out)))
    np.testing.assert_array_equal(
        np.load(out / "samples.npz")["arr_0"], np.load(tmp_path / "reference" / "samples.npz")["arr_0"]
    )
