"""benchmarks/bench_gpu.py: the analytic FLOP counts against torch.utils.flop_counter, and the tiny CPU run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DiTTransformer2DModel
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from d2c_hf.models.transformer_sit import SiTTransformer2DModel

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclass-free, but keep the usual import semantics
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def counted(fn) -> int:
    """FLOPs torch counts for ``fn``; the math SDPA kernel, so that attention shows up as two bmm
    (the CPU flash kernel has no registered FLOP formula)."""
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    return counter.get_total_flops()


def test_dit_forward_flops_match_the_flop_counter():
    config = dict(bench.TINY_DIT, num_layers=3, sample_size=16)
    model = DiTTransformer2DModel(**config).eval()
    x, t, y = torch.randn(3, 4, 16, 16), torch.tensor([1, 500, 999]), torch.tensor([0, 4, 9])
    with torch.no_grad():
        assert counted(lambda: model(x, timestep=t, class_labels=y)) == bench.dit_forward_flops(config, 3)
    # the DiT paper's 118.6 "Gflops" (multiply-adds) per DiT-XL/2-256 image
    assert bench.dit_forward_flops(bench.DIT_XL_2_256, 1) / 2e9 == pytest.approx(118.6, rel=0.01)


@pytest.mark.parametrize("parts", ["repa+text", "backbone"])
def test_sit_forward_and_train_step_flops_match_the_flop_counter(parts):
    config = dict(bench.TINY_SIT, depth=3, sample_size=16, mlp_ratio=3.0)
    if parts == "backbone":
        config.update(z_dims=[], text_embed_dim=None, encoder_depth=None)
    model = SiTTransformer2DModel(**config).train()
    if config["text_embed_dim"]:
        model.set_class_text_table(torch.randn(10, 4, 12), torch.ones(10, 4, dtype=torch.bool))
    x, t, y = torch.randn(2, 4, 16, 16), torch.rand(2), torch.tensor([1, 7])
    projections = bool(config["z_dims"])
    forward = bench.sit_forward_flops(config, 2, projections=projections)
    with torch.no_grad():
        assert counted(lambda: model(x, t, y, return_projections=projections)) == forward

    def train_step():
        out = model(x, t, y, return_projections=projections)
        loss = out.sample.square().mean() + (out.projections[0].square().mean() if projections else 0)
        loss.backward()

    # backward = 2 x forward for every matmul except the patch embedding's (no input gradient): the 3x
    # convention overstates the counted training FLOPs by about 1%
    ratio = bench.train_step_flops(config, 2) / counted(train_step)
    assert 1.0 <= ratio < 1.03, ratio
    if parts == "backbone":  # SiT-XL/2 = DiT-XL/2's backbone: 118.6 GMACs per image (SiT paper)
        xl = dict(bench.SIT_XL_2_D2C, z_dims=[], text_embed_dim=None)
        assert bench.sit_forward_flops(xl, 1) / 2e9 == pytest.approx(118.6, rel=0.01)


def test_peak_table_and_mfu():
    assert bench.peak_for_name("NVIDIA H100 80GB HBM3") == 989.4
    assert bench.peak_for_name("NVIDIA H100 PCIe") == 756.5
    assert bench.peak_for_name("NVIDIA H200") == 989.4
    assert bench.peak_for_name("NVIDIA L40S") == 362.05 and bench.peak_for_name("NVIDIA L4") == 121.0
    assert bench.peak_for_name("NVIDIA A100-SXM4-80GB") == 312.0 and bench.peak_for_name("Tesla T4") is None


def test_tiny_run_on_cpu_exercises_every_path(tmp_path):
    out = tmp_path / "bench.json"
    result = bench.main(
        [
            "--tiny",
            "--compile",
            "--compile_backend",
            "eager",
            "--score_batches",
            "2",
            "--peak_tflops",
            "1.0",
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["tiny"] is True and result["dtype"] == "float32 autocast"
    rows = result["scoring"]["rows"]
    assert [(r["compile"], r["images"]) for r in rows] == [(False, 2), (True, 2)]
    for row in rows:
        assert row["score_pairs_per_s"] > 0 and row["pairs_per_forward"] == 10 * row["images"]
        flops_per_s = bench.dit_forward_flops(bench.TINY_DIT, row["pairs_per_forward"]) * (
            row["forward_pairs_per_s"] / row["pairs_per_forward"]
        )
        assert row["forward_mfu"] == pytest.approx(flops_per_s / 1e12)
    training = result["training"]["rows"]
    assert [r["images"] for r in training] == [2, 4] and all(r["images_per_s"] > 0 for r in training)
    assert result["scoring"]["vae_encode_images_per_s"] > 0
    assert set(result["projections"]) == {
        "scoring_hours_8gpu", "vae_encode_hours_8gpu", "select_hours_8gpu", "train_40k_hours_8gpu",
    }  # fmt: skip
    best = max(r["images_per_s"] for r in training)
    assert result["projections"]["train_40k_hours_8gpu"] == pytest.approx(40_000 * 256 / (8 * best) / 3600)
