"""d2c_hf.train.losses: losses, timesteps and the BatchSource."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Array3D, Dataset, Features, Value

from d2c_hf.models.transformer_sit import SiTTransformer2DModel
from d2c_hf.schedulers.paths import interpolate
from d2c_hf.train.batches import BatchSource
from d2c_hf.train.losses import (
    compute_loss,
    flow_matching_loss,
    projection_loss,
    sample_timesteps,
    seeded_generator,
    total_loss,
)
from helpers_condensed import synthetic_condensed


def test_sample_timesteps_schemes_are_seeded_and_in_range():
    for weighting in ("uniform", "lognormal"):
        a = sample_timesteps(4096, weighting, generator=torch.Generator().manual_seed(1))
        b = sample_timesteps(4096, weighting, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a, b) and a.dtype == torch.float32
        assert 0.0 <= a.min() and a.max() <= 1.0
    uniform = sample_timesteps(20000, "uniform", generator=torch.Generator().manual_seed(0))
    lognormal = sample_timesteps(20000, "lognormal", generator=torch.Generator().manual_seed(0))
    assert abs(uniform.std().item() - (1 / 12) ** 0.5) < 0.01
    assert lognormal.std() < uniform.std()  # logit-normal concentrates around 0.5
    assert abs(torch.logit(lognormal).std().item() - 1.0) < 0.03
    with pytest.raises(ValueError, match="weighting"):
        sample_timesteps(2, "cosmap")


def test_interpolant_and_velocity_follow_repa():
    x, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0.0, 0.5, 1.0])
    x_t, target = interpolate(x, noise, t)
    assert torch.allclose(x_t[0], x[0]) and torch.allclose(x_t[2], noise[2])
    assert torch.allclose(x_t[1], 0.5 * (x[1] + noise[1]))
    assert torch.equal(target, noise - x)
    assert flow_matching_loss(target, target) == 0
    per_sample = flow_matching_loss(torch.zeros_like(x), torch.ones_like(x), reduction="none")
    assert per_sample.shape == (3,) and torch.all(per_sample == 1)


def test_projection_loss_is_negative_cosine_in_fp32():
    z = torch.randn(2, 5, 8)
    assert projection_loss(z, z).item() == pytest.approx(-1.0, abs=1e-6)
    assert projection_loss([z, z], [-z, z]).item() == pytest.approx(0.0, abs=1e-6)
    big = torch.full((1, 2, 4), 6e4, dtype=torch.float16)  # squares overflow in fp16
    assert projection_loss(big, big).item() == pytest.approx(-1.0, abs=1e-3)
    with pytest.raises(ValueError, match="shape"):
        projection_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    assert total_loss(torch.tensor(1.0), torch.tensor(-0.5)).item() == pytest.approx(0.75)
    assert total_loss(torch.tensor(1.0), None).item() == 1.0


def test_projection_loss_trains_only_blocks_up_to_encoder_depth_and_the_projector():
    torch.manual_seed(0)  # test-side seeding
    model = SiTTransformer2DModel(
        sample_size=4, in_channels=3, hidden_size=32, depth=4, num_attention_heads=2, num_classes=3,
        z_dims=[6], encoder_depth=2, projector_dim=16,
    )  # fmt: skip
    x = torch.randn(2, 3, 4, 4)
    out = model(x, torch.rand(2), torch.tensor([0, 1]), return_projections=True)
    projection_loss(out.projections, torch.randn(2, 4, 6)).backward()
    grads = {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()}
    assert any(grads[n] for n in grads if n.startswith("projectors."))
    for n, has in grads.items():
        if n.startswith(("transformer_blocks.2.", "transformer_blocks.3.", "norm_out", "proj_out")):
            assert not has, n
    # a block's adaLN-Zero gates start at 0, so the attention/MLP weights behind them get no gradient yet;
    # the gates themselves do, in every block up to encoder_depth
    assert (
        grads["transformer_blocks.0.norm1.linear.weight"]
        and grads["transformer_blocks.1.norm1.linear.weight"]
    )
    assert grads["patch_embed.proj.weight"]


def test_batch_source_shards_shuffles_and_resumes_exactly():
    condensed = synthetic_condensed(num_classes=5, per_class=4)  # 20 rows, latents (8, 4, 4), visual (4, 6)
    sources = [BatchSource(condensed, 8, seed=3, process_index=p, num_processes=2) for p in range(2)]
    assert sources[0].use_visual and not sources[0].use_text
    seen = []
    for _ in range(5):  # 40 samples = two epochs
        a, b = (s.next_batch() for s in sources)
        assert a["latents"].shape == (4, 4, 4, 4) and a["visual_embeds"].shape == (4, 4, 6)
        assert not set(a["indices"].tolist()) & set(b["indices"].tolist())
        seen += a["indices"].tolist() + b["indices"].tolist()
    assert sorted(seen[:20]) == list(range(20)) and sorted(seen[20:]) == list(range(20))
    assert seen[:20] != seen[20:]  # a new permutation each epoch

    fresh = BatchSource(condensed, 8, seed=3, process_index=1, num_processes=2)
    fresh.next_batch()
    state = fresh.state_dict()
    expected = fresh.next_batch()
    resumed = BatchSource(condensed, 8, seed=3, process_index=1, num_processes=2)
    resumed.load_state_dict(state)
    again = resumed.next_batch()
    assert all(torch.equal(expected[k], again[k]) for k in expected)
    with pytest.raises(ValueError, match="seed"):
        BatchSource(condensed, 8, seed=4).load_state_dict(state)
    assert state["num_processes"] == 2
    damaged = {k: v for k, v in state.items() if k != "seed"}  # a hand-edited or truncated data_state.json
    with pytest.raises(ValueError, match=r"lacks \['seed'\].*damaged"):
        BatchSource(condensed, 8, seed=3).load_state_dict(damaged)


def test_batch_source_draws_fresh_scaled_latents_and_reads_out_of_memory_identically():
    condensed = synthetic_condensed(num_classes=2, per_class=2)
    arrays = condensed.training_arrays(["latents"])["latents"].float()
    source = BatchSource(condensed, 4, seed=0)
    first, second = source.next_batch(), source.next_batch()  # 4 rows: two epochs
    mean, std = arrays[first["indices"]].chunk(2, dim=1)
    noise = (first["latents"] / 0.18215 - mean) / std
    assert abs(noise.std().item() - 1) < 0.35  # a real N(0, 1) draw, scaled by 0.18215
    rows = second["indices"].argsort()
    assert not torch.allclose(first["latents"][first["indices"].argsort()], second["latents"][rows])
    lazy = BatchSource(condensed, 4, seed=0, max_in_memory_bytes=0)
    assert not lazy.in_memory
    batch = lazy.next_batch()
    assert all(torch.equal(batch[k], first[k]) for k in first)


def test_plain_dataset_with_latents_trains_through_the_same_code():
    rng = np.random.default_rng(0)
    data = Dataset.from_dict(
        {"label": [0, 1, 2, 1], "latents": rng.standard_normal((4, 6, 4, 4)).astype(np.float16)},
        features=Features({"label": Value("int64"), "latents": Array3D((6, 4, 4), "float16")}),
    )
    with pytest.raises(ValueError, match="scaling_factor"):
        BatchSource(data, 2)
    source = BatchSource(data, 2, scaling_factor=1.0)
    assert source.latent_shape == (3, 4, 4) and source.num_classes == 3
    assert not source.use_visual and not source.use_text
    torch.manual_seed(0)  # test-side seeding
    model = SiTTransformer2DModel(
        sample_size=4, in_channels=3, hidden_size=16, depth=2, num_attention_heads=2, num_classes=3
    )
    source.check_model(model)
    losses = compute_loss(model, source.next_batch(), generator=seeded_generator(0, 1))
    assert set(losses) == {"loss", "denoising_loss"} and torch.isfinite(losses["loss"])


def test_batch_source_errors_name_the_problem():
    condensed = synthetic_condensed(num_classes=3, per_class=2)
    no_latents = synthetic_condensed(num_classes=3, per_class=2)
    no_latents.samples = no_latents.samples.remove_columns("latents")
    with pytest.raises(ValueError, match=r"no 'latents'.*attach=\('latents'"):
        BatchSource(no_latents, 2)
    with pytest.raises(ValueError, match="classes table"):
        BatchSource(condensed, 2, use_text=True)
    with pytest.raises(ValueError, match="divisible"):
        BatchSource(condensed, 3, num_processes=2)
    source = BatchSource(condensed, 2)
    base = dict(sample_size=4, in_channels=4, hidden_size=16, depth=2, num_attention_heads=2, num_classes=3)
    with pytest.raises(ValueError, match=r"4 tokens per image.*token grid is \(4/4\)\^2 = 1"):
        source.check_model(SiTTransformer2DModel(**base, patch_size=4, z_dims=[6]))
    with pytest.raises(ValueError, match=r"6 wide.*z_dims are \[5\]"):
        source.check_model(SiTTransformer2DModel(**base, z_dims=[5]))
    with pytest.raises(ValueError, match="num_classes=4"):
        source.check_model(SiTTransformer2DModel(**{**base, "num_classes": 4}, z_dims=[6]))
    source.check_model(SiTTransformer2DModel(**base, z_dims=[6]))
