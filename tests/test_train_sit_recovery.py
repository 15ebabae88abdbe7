"""examples/train_sit.py when things go wrong: the Hub token never leaks, resuming refuses an incomplete or
damaged checkpoint by name (and names the checkpoint to use instead), and leftovers of a crash are cleared."""

from __future__ import annotations

import json
import logging
import re
import shutil
import traceback
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from d2c_hf.train.checkpoints import checkpoint_problems, resume_verdict
from d2c_hf.utils.checksums import write_record
from helpers_train_sit import OURS, base_args, load_script, make_condensed, reset_accelerate_state, snapshot

train_sit = load_script("train_sit_recovery")
SENTINEL = "hf_SENTINELtokenMustNeverLeak0123456789"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_condensed(tmp_path_factory.mktemp("recovery") / "full")


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    """A finished 2-step run with checkpoint-1 and checkpoint-2."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train_sit.main(train_sit.parse_args(base_args(dataset, out, "--checkpointing_steps", "1")))
    return out


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    reset_accelerate_state()
    yield
    reset_accelerate_state()


def resume_args(dataset, out, *extra):
    return train_sit.parse_args(
        base_args(dataset, out, "--checkpointing_steps", "1", "--resume_from_checkpoint", "latest",
                  "--max_train_steps", "3", *extra)
    )  # fmt: skip


# ---- the Hub token --------------------------------------------------------------------------------------


class FakeTracker:
    """Stands for wandb/tensorboard: records everything accelerate sends to a tracker."""

    def __new__(cls):
        from accelerate.tracking import GeneralTracker

        class Recorder(GeneralTracker):
            name = "fake"
            requires_logging_directory = False
            main_process_only = True

            def __init__(self):
                super().__init__()
                self.sent = []

            @property
            def tracker(self):
                return self

            def store_init_configuration(self, values):
                self.sent.append(("config", dict(values)))

            def log(self, values, step=None, **kwargs):
                self.sent.append(("log", dict(values), step))

        return Recorder()


@pytest.mark.parametrize("how", ["--hub_token flag", "HF_TOKEN"])
def test_the_hub_token_never_reaches_disk_logs_trackers_or_the_card(
    how, dataset, tmp_path, monkeypatch, caplog, capfd
):
    """Every sink is checked with a sentinel token: each file written or uploaded (args.json, the model card,
    checkpoints, samples), the log records, stdout/stderr and what the tracker receives."""
    import huggingface_hub

    uploads, tokens = {}, []

    class FakeApi:
        def __init__(self, token=None):
            tokens.append(token)

        def create_repo(self, repo_id, exist_ok=False):
            pass

        def upload_folder(self, *, repo_id, folder_path, ignore_patterns=(), **kwargs):
            for path in Path(folder_path).rglob("*"):
                if path.is_file():
                    uploads[str(path.relative_to(folder_path))] = path.read_bytes()

    tracker = FakeTracker()
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(train_sit, "report_to_trackers", lambda args: [tracker])
    monkeypatch.delenv("HF_TOKEN", raising=False)
    extra = [
        "--push_to_hub",
        "--hub_model_id",
        "me/sit",
        "--report_to",
        "wandb",
        "--num_validation_images",
        "1",
        "--num_inference_steps",
        "2",
    ]
    if how == "HF_TOKEN":
        monkeypatch.setenv("HF_TOKEN", SENTINEL)
    else:
        extra += ["--hub_token", SENTINEL]
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "run"
    args = train_sit.parse_args(base_args(dataset, out, "--checkpointing_steps", "1", *extra))
    train_sit.main(args)

    # the token reaches the Hub client (the flag) or is left to huggingface_hub's own resolution (HF_TOKEN)
    assert tokens == ([SENTINEL] if how != "HF_TOKEN" else [None])
    written = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {"args.json", "README.md", "checkpoint-2/data_state.json"} <= set(written)
    assert any(name.startswith("samples/") for name in written) and "README.md" in uploads
    for name, content in {**written, **{f"uploaded {k}": v for k, v in uploads.items()}}.items():
        assert SENTINEL.encode() not in content, name
    assert tracker.sent and tracker.sent[0][0] == "config" and "hub_model_id" in tracker.sent[0][1]
    assert SENTINEL not in repr(tracker.sent)
    captured = capfd.readouterr()
    assert SENTINEL not in caplog.text + captured.out + captured.err
    assert ("--hub_token is deprecated" in caplog.text) == (how != "HF_TOKEN")
    assert "hub_token" not in json.loads(written["args.json"])


# ---- resume: incomplete checkpoints -----------------------------------------------------------------------


def test_a_missing_rng_file_refuses_the_resume_unless_allowed(dataset, trained, tmp_path, caplog):
    """accelerate only logs INFO "Could not load random states" and trains on, inexactly; we refuse."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    (out / "checkpoint-2" / "random_states_0.pkl").unlink()
    before = snapshot(out)
    with pytest.raises(ValueError) as error:
        train_sit.main(resume_args(dataset, out))
    message = str(error.value)
    assert re.search(r"cannot resume exactly from .*checkpoint-2: random_states_0.pkl is missing", message)
    assert (
        "--allow_inexact_resume" in message and f"--resume_from_checkpoint {out / 'checkpoint-1'}" in message
    )
    assert snapshot(out) == before

    caplog.set_level(logging.WARNING)
    result = train_sit.main(resume_args(dataset, out, "--allow_inexact_resume"))
    assert result["global_step"] == 3
    assert re.search(r"resuming from .*checkpoint-2 although random_states_0.pkl is missing", caplog.text)


def test_two_process_checkpoints_need_every_process_rng_file(trained, tmp_path):
    """A 2-process checkpoint has random_states_0.pkl and random_states_1.pkl; each run needs one per process."""
    path = tmp_path / "two" / "checkpoint-2"
    shutil.copytree(trained / "checkpoint-2", path)
    shutil.copy(path / "random_states_0.pkl", path / "random_states_1.pkl")
    state = json.loads((path / "data_state.json").read_text())
    (path / "data_state.json").write_text(json.dumps({**state, "num_processes": 2}))
    assert checkpoint_problems(path, 2)[0] == [
        "data_state.json is damaged: its content differs from what was written (checksum mismatch)"
    ]
    write_record(path)  # as a 2-process run would have written it
    assert checkpoint_problems(path, 2) == ([], [])
    assert checkpoint_problems(path, 1) == ([], [])  # fewer processes: each finds its file

    (path / "random_states_1.pkl").unlink()
    assert checkpoint_problems(path, 2) == ([], ["random_states_1.pkl is missing"])
    error, warning = resume_verdict(path, 2)
    assert warning is None and "random_states_1.pkl is missing" in error and "as many processes" not in error
    assert "--allow_inexact_resume" in error and "no complete earlier checkpoint" in error
    error, warning = resume_verdict(path, 2, allow_inexact=True)
    assert error is None and "random_states_1.pkl is missing" in warning

    (path / "data_state.json").write_text(json.dumps({**state, "num_processes": 1}))  # a 1-process checkpoint
    write_record(path)
    _, inexact = checkpoint_problems(path, 2)
    assert inexact == [
        "random_states_1.pkl is missing (the checkpoint was written by 1 process(es), this run has 2)"
    ]
    error, _ = resume_verdict(path, 2)
    assert "resume with as many processes as wrote it" in error


# ---- resume: damaged checkpoints --------------------------------------------------------------------------


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


def _drop_key(path: Path, key: str) -> None:
    state = json.loads(path.read_text())
    del state[key]
    path.write_text(json.dumps(state))


DAMAGE = {
    "data_state truncated": (lambda c: _truncate(c / "data_state.json"), r"data_state.json is not valid JSON"),
    "data_state without seed": (lambda c: _drop_key(c / "data_state.json", "seed"), r"data_state.json lacks \['seed'\]"),
    "ema_state garbage": (lambda c: (c / "transformer_ema/ema_state.json").write_bytes(b"\x00\xff"), r"transformer_ema/ema_state.json is not valid JSON"),
    "ema_state without step": (lambda c: _drop_key(c / "transformer_ema/ema_state.json", "optimization_step"), r"ema_state.json lacks \['optimization_step'\]"),
    "config missing": (lambda c: (c / "transformer/config.json").unlink(), r"transformer/config.json is missing"),
    "weights truncated": (lambda c: _truncate(c / "transformer/diffusion_pytorch_model.safetensors"), r"transformer/diffusion_pytorch_model.safetensors is not a readable safetensors file"),
    "EMA weights missing": (lambda c: (c / "transformer_ema/diffusion_pytorch_model.safetensors").unlink(), r"transformer_ema/diffusion_pytorch_model.safetensors is missing"),
    "optimizer truncated": (lambda c: _truncate(c / "optimizer.bin"), r"optimizer.bin is not a readable torch file"),
    "optimizer bytes flipped": (lambda c: _flip_middle(c / "optimizer.bin"), r"optimizer.bin is corrupted \(entry \S+ fails its CRC check\)"),
    "rng state garbage": (lambda c: (c / "random_states_0.pkl").write_bytes(b"garbage"), r"random_states_0.pkl cannot be read"),
    # damaged in place: same size, valid header; only the content checksums written with the checkpoint see it
    "weights bytes flipped": (lambda c: _flip_middle(c / "transformer/diffusion_pytorch_model.safetensors"), r"transformer/diffusion_pytorch_model.safetensors is damaged: its content differs"),
    "EMA weights bytes flipped": (lambda c: _flip_middle(c / "transformer_ema/diffusion_pytorch_model.safetensors"), r"transformer_ema/diffusion_pytorch_model.safetensors is damaged"),
    "data position changed": (lambda c: (c / "data_state.json").write_text((c / "data_state.json").read_text().replace('"position": 8', '"position": 9')), r"data_state.json is damaged"),
}  # fmt: skip


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_latest_checkpoint_is_refused_naming_the_file_and_the_previous_one(
    damage, dataset, trained, tmp_path
):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    spoil, file_pattern = DAMAGE[damage]
    spoil(out / "checkpoint-2")
    before = snapshot(out)
    with pytest.raises(ValueError) as error:
        train_sit.main(resume_args(dataset, out))
    message = str(error.value)
    assert re.search(
        rf"cannot resume (exactly )?from {re.escape(str(out / 'checkpoint-2'))}: .*{file_pattern}", message
    )
    assert f"checkpoints in {out}: checkpoint-1, checkpoint-2" in message
    assert f"--resume_from_checkpoint {out / 'checkpoint-1'}" in message  # named, never silently used
    assert f"delete {out / 'checkpoint-2'} and rerun with --resume_from_checkpoint latest" in message
    assert traceback.extract_tb(error.value.__traceback__)[-1].filename.startswith(OURS)
    assert snapshot(out) == before


def test_with_every_checkpoint_damaged_the_advice_is_to_start_again(dataset, trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    for name in ("checkpoint-1", "checkpoint-2"):
        _truncate(out / name / "optimizer.bin")
    with pytest.raises(
        ValueError,
        match=r"delete .*checkpoint-2 and train from the start \(there is no complete earlier checkpoint\)",
    ):
        train_sit.main(resume_args(dataset, out))


def test_a_checkpoint_that_reads_but_does_not_fit_is_refused_by_name(dataset, trained, tmp_path):
    """Readable files with a tensor missing: the load itself fails, and says which checkpoint."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    file = out / "checkpoint-2" / "transformer_ema" / train_sit.WEIGHTS_NAME
    weights = load_file(file)
    save_file({k: v for k, v in weights.items() if k != sorted(weights)[0]}, file)
    with pytest.raises(
        ValueError, match=r"transformer_ema/diffusion_pytorch_model.safetensors has \d+ bytes"
    ):
        train_sit.main(resume_args(dataset, out))  # the checksum record sees the change first
    with pytest.raises(
        ValueError,
        match=rf"cannot resume from .*checkpoint-2: KeyError: '{sorted(weights)[0]}'.*checkpoint-1",
    ):
        train_sit.main(resume_args(dataset, out, "--skip_checksums"))  # fmt: skip


def test_leftovers_of_an_interrupted_save_are_cleared(dataset, trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    (out / ".checkpoint-3.tmp" / "transformer").mkdir(parents=True)
    (out / ".pipeline-0a1b2c3d.tmp").mkdir()
    result = train_sit.main(resume_args(dataset, out))
    assert result["global_step"] == 3 and not list(out.glob(".*.tmp"))
    assert json.loads((out / "checkpoint-3" / "data_state.json").read_text())["position"] == 3 * 4  # 3 steps
