"""Provenance and device/dtype helpers (d2c_hf.utils.hub, d2c_hf.utils.vae loading)."""

from __future__ import annotations

import shutil

import pytest
import torch

from d2c_hf.utils.hub import model_provenance, resolve_dtype, state_dict_sha256
from d2c_hf.utils.vae import load_vae


def test_vae_from_a_pipeline_subfolder_hashes_only_its_own_weights(local_hub, tmp_path):
    vae = load_vae(local_hub.dit, subfolder="vae")
    info = model_provenance(vae)
    assert info["subfolder"] == "vae"
    assert info["name_or_path"] == str(local_hub.dit)
    # same weights copied into a bare folder -> same hash; the pipeline's transformer is not hashed
    bare = tmp_path / "vae_copy"
    shutil.copytree(local_hub.dit / "vae", bare)
    assert model_provenance(load_vae(bare))["sha256"] == info["sha256"]
    pipeline = tmp_path / "pipeline"
    shutil.copytree(local_hub.dit, pipeline)
    next((pipeline / "transformer").glob("*.safetensors")).write_bytes(b"other transformer weights")
    assert model_provenance(load_vae(pipeline, subfolder="vae"))["sha256"] == info["sha256"]


def test_in_memory_model_is_hashed_by_state_dict():
    model = torch.nn.Linear(3, 2)
    info = model_provenance(model)
    assert info["sha256"] == state_dict_sha256(model)
    with torch.no_grad():
        model.weight[0, 0] += 1
    assert model_provenance(model)["sha256"] != info["sha256"]


def test_resolve_dtype_names_the_bad_value():
    assert resolve_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert resolve_dtype(None, torch.device("cpu")) is torch.float32
    with pytest.raises(ValueError, match="float64"):
        resolve_dtype("float64", torch.device("cpu"))
