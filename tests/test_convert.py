"""Checkpoint conversion: synthetic REPA / SiT checkpoints in the original key layout, checked against a
reference forward written here in that layout (timm Attention/Mlp, DiT adaLN, MAE sin-cos positions)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from d2c_hf.cli import convert_repa_main, convert_sit_main
from d2c_hf.interop.convert import (
    convert_repa_state_dict,
    convert_sit_state_dict,
    load_repa_checkpoint,
    load_sit_checkpoint,
    reversed_time_matrix,
)
from d2c_hf.models.transformer_sit import SiTTransformer2DModel
from d2c_hf.pipelines import SiTPipeline

SMALL = dict(depth=3, hidden=32, heads=2, patch=2, channels=4, grid=4, classes=10)


# ---------------------------------------------------------------------------------------------------
# the original layout: synthetic checkpoints and a reference forward
# ---------------------------------------------------------------------------------------------------


def mae_sincos_pos_embed(dim: int, grid: int) -> np.ndarray:
    """MAE's 2D sin-cos position table (float64 numpy), as REPA/SiT/DiT initialise ``pos_embed``."""

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    coords = np.arange(grid, dtype=np.float32)
    mesh = np.stack(np.meshgrid(coords, coords), axis=0).reshape(2, 1, grid, grid)  # w first, as MAE
    return np.concatenate([one_d(dim // 2, mesh[0]), one_d(dim // 2, mesh[1])], axis=1)


def original_state_dict(
    *,
    depth=SMALL["depth"],
    hidden=SMALL["hidden"],
    heads=SMALL["heads"],
    patch=SMALL["patch"],
    grid=SMALL["grid"],
    qk_norm=False,
    out_channels=4,
    z_dims=(),
    projector_dim=8,
    seed=0,
    std=0.2,
) -> dict[str, torch.Tensor]:
    """Random weights with REPA/SiT's exact keys and shapes (no zero init, so every tensor matters)."""
    g = torch.Generator().manual_seed(seed)
    d, p, c, head_dim = hidden, patch, SMALL["channels"], hidden // heads

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * std

    sd = {
        "x_embedder.proj.weight": rnd(d, c, p, p),
        "x_embedder.proj.bias": rnd(d),
        "pos_embed": torch.from_numpy(mae_sincos_pos_embed(d, grid)).float().unsqueeze(0),
        "t_embedder.mlp.0.weight": rnd(d, 256),
        "t_embedder.mlp.0.bias": rnd(d),
        "t_embedder.mlp.2.weight": rnd(d, d),
        "t_embedder.mlp.2.bias": rnd(d),
        "y_embedder.embedding_table.weight": rnd(SMALL["classes"] + 1, d),
        "final_layer.adaLN_modulation.1.weight": rnd(2 * d, d),
        "final_layer.adaLN_modulation.1.bias": rnd(2 * d),
        "final_layer.linear.weight": rnd(p * p * out_channels, d),
        "final_layer.linear.bias": rnd(p * p * out_channels),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        for name, shape in (
            ("attn.qkv", (3 * d, d)),
            ("attn.proj", (d, d)),
            ("mlp.fc1", (4 * d, d)),
            ("mlp.fc2", (d, 4 * d)),
            ("adaLN_modulation.1", (6 * d, d)),
        ):
            sd[f"{b}{name}.weight"] = rnd(*shape)
            sd[f"{b}{name}.bias"] = rnd(shape[0])
        if qk_norm:
            for name in ("q_norm", "k_norm"):
                sd[f"{b}attn.{name}.weight"] = 1 + rnd(head_dim)
                sd[f"{b}attn.{name}.bias"] = rnd(head_dim)
    for k, z in enumerate(z_dims):
        for layer, shape in (
            (0, (projector_dim, d)),
            (2, (projector_dim, projector_dim)),
            (4, (z, projector_dim)),
        ):
            sd[f"projectors.{k}.{layer}.weight"] = rnd(*shape)
            sd[f"projectors.{k}.{layer}.bias"] = rnd(shape[0])
    return sd


def reference_forward(sd, x, t, y, *, heads=SMALL["heads"], learn_sigma=False, encoder_depth=None):
    """The original SiT/REPA forward, written from their layout: ``(output, zs)``."""
    d, _, p, _ = sd["x_embedder.proj.weight"].shape
    grid = math.isqrt(sd["pos_embed"].shape[1])
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    n_projectors = len({k.split(".")[1] for k in sd if k.startswith("projectors.")})
    n, head_dim = x.shape[0], d // heads

    def modulate(h, shift, scale):
        return h * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)

    def ln(h):
        return F.layer_norm(h, (h.shape[-1],), eps=1e-6)

    def linear(h, name):
        return F.linear(h, sd[name + ".weight"], sd[name + ".bias"])

    h = (
        F.conv2d(x, sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=p)
        .flatten(2)
        .transpose(1, 2)
    )
    h = h + sd["pos_embed"]
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    args = t[:, None].float() * freqs[None]
    t_freq = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # GLIDE / DiT: cos first
    c = linear(F.silu(linear(t_freq, "t_embedder.mlp.0")), "t_embedder.mlp.2")
    c = c + sd["y_embedder.embedding_table.weight"][y]
    zs = None
    for i in range(depth):
        b = f"blocks.{i}."
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = linear(
            F.silu(c), b + "adaLN_modulation.1"
        ).chunk(6, dim=1)
        qkv = linear(modulate(ln(h), shift_msa, scale_msa), b + "attn.qkv")
        q, k, v = qkv.reshape(n, -1, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # timm
        if b + "attn.q_norm.weight" in sd:
            q = F.layer_norm(
                q, (head_dim,), sd[b + "attn.q_norm.weight"], sd[b + "attn.q_norm.bias"], eps=1e-5
            )
            k = F.layer_norm(
                k, (head_dim,), sd[b + "attn.k_norm.weight"], sd[b + "attn.k_norm.bias"], eps=1e-5
            )
        attn = ((q * head_dim**-0.5) @ k.transpose(-2, -1)).softmax(-1) @ v  # explicit, not SDPA
        h = h + gate_msa.unsqueeze(1) * linear(attn.transpose(1, 2).reshape(n, -1, d), b + "attn.proj")
        m = F.gelu(linear(modulate(ln(h), shift_mlp, scale_mlp), b + "mlp.fc1"), approximate="tanh")
        h = h + gate_mlp.unsqueeze(1) * linear(m, b + "mlp.fc2")
        if i + 1 == encoder_depth:
            zs = []
            for j in range(n_projectors):
                z = h.reshape(-1, d)
                z = linear(
                    F.silu(linear(F.silu(linear(z, f"projectors.{j}.0")), f"projectors.{j}.2")),
                    f"projectors.{j}.4",
                )
                zs.append(z.reshape(n, -1, z.shape[-1]))
    shift, scale = linear(F.silu(c), "final_layer.adaLN_modulation.1").chunk(2, dim=1)
    h = linear(modulate(ln(h), shift, scale), "final_layer.linear")
    out_c = h.shape[-1] // (p * p)
    out = torch.einsum("nhwpqc->nchpwq", h.reshape(n, grid, grid, p, p, out_c)).reshape(
        n, out_c, grid * p, grid * p
    )
    if learn_sigma:
        out, _ = out.chunk(2, dim=1)
    return out, zs


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0.05, 0.5, 0.93])
    y = torch.tensor([1, 7, 10])  # including the null class
    return x, t, y


def _config(**kwargs):
    return dict(
        sample_size=SMALL["grid"] * SMALL["patch"],
        patch_size=SMALL["patch"],
        hidden_size=SMALL["hidden"],
        depth=SMALL["depth"],
        num_attention_heads=SMALL["heads"],
        num_classes=SMALL["classes"],
        **kwargs,
    )


def _model(config, converted) -> SiTTransformer2DModel:
    model = SiTTransformer2DModel(**config).eval()
    model.load_state_dict(converted, strict=True)
    return model


# ---------------------------------------------------------------------------------------------------
# REPA
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qk_norm", [False, True])
def test_repa_conversion_matches_original_forward(qk_norm):
    sd = original_state_dict(qk_norm=qk_norm, z_dims=(12, 6))
    config = _config(qk_norm=qk_norm, z_dims=[12, 6], projector_dim=8, encoder_depth=2)
    model = _model(config, convert_repa_state_dict(sd, config))
    x, t, y = _inputs()
    expected, zs = reference_forward(sd, x, t, y, encoder_depth=2)
    out = model(x, t, y, return_projections=True)
    assert expected.abs().mean() > 0.1
    assert torch.allclose(out.sample, expected, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(out.projections, zs):
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)


def test_repa_conversion_errors_name_the_keys():
    config = _config(z_dims=[12], projector_dim=8)
    sd = original_state_dict(z_dims=(12,))
    del sd["blocks.1.mlp.fc2.bias"]
    sd["blocks.0.attn.extra.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError,
        match=r"missing \(1\): \['blocks.1.mlp.fc2.bias'\].*unexpected \(1\): \['blocks.0.attn.extra.weight'\]",
    ):
        convert_repa_state_dict(sd, config)
    with pytest.raises(ValueError, match=r"unexpected \(6\): \['projectors.0.0.bias'"):
        convert_repa_state_dict(original_state_dict(z_dims=(12,)), _config())  # projectors but z_dims=()
    with pytest.raises(ValueError, match="sample_size=16"):
        bigger = original_state_dict()
        bigger["pos_embed"] = torch.from_numpy(mae_sincos_pos_embed(32, 8)).float().unsqueeze(0)
        convert_repa_state_dict(bigger, _config())
    with pytest.raises(ValueError, match="y_embedder.embedding_table.weight has shape"):
        convert_repa_state_dict(original_state_dict(), {**_config(), "num_classes": 20})


def _write_training_checkpoint(path, sd, **args):
    # "model" differs from "ema" (all but the fixed pos_embed) and carries DDP's "module." prefix
    model_sd = {f"module.{k}": v if k == "pos_embed" else v + 1.0 for k, v in sd.items()}
    torch.save(
        {"model": model_sd, "ema": sd, "opt": {"state": {}}, "args": argparse.Namespace(**args), "steps": 7},
        path,
    )


def test_load_repa_training_checkpoint(tmp_path):
    sd = original_state_dict(z_dims=(12,))
    path = tmp_path / "0400000.pt"
    _write_training_checkpoint(path, sd, encoder_depth=1)
    with pytest.raises(ValueError, match="not SiT-B/2"):
        load_repa_checkpoint(path, "SiT-B/2")
    model = load_repa_checkpoint(path, num_attention_heads=2)  # config from shapes + args.encoder_depth
    assert not model.training
    assert (
        model.config.encoder_depth == 1
        and list(model.config.z_dims) == [12]
        and model.config.sample_size == 8
    )
    x, t, y = _inputs()
    expected, zs = reference_forward(sd, x, t, y, encoder_depth=1)
    out = model(x, t, y, return_projections=True)
    assert torch.allclose(out.sample, expected, atol=1e-5) and torch.allclose(
        out.projections[0], zs[0], atol=1e-5
    )
    online = load_repa_checkpoint(path, weights="model", num_attention_heads=2, keep_projectors=False)
    shifted = {
        k: v if k == "pos_embed" else v + 1.0 for k, v in sd.items() if not k.startswith("projectors.")
    }
    assert not online.projectors
    assert torch.allclose(
        online(x, t, y).sample, reference_forward(shifted, x, t, y)[0], atol=1e-4, rtol=1e-4
    )


@pytest.fixture(scope="module")
def s8_state_dict():
    """An original-layout checkpoint with SiT-S/8's shapes (12 blocks, width 384, patch 8) on 16x16 latents:
    small enough for a test, real enough for the CLI's preset detection."""
    return original_state_dict(
        depth=12, hidden=384, heads=6, patch=8, grid=2, std=0.02, z_dims=(8,), projector_dim=16
    )


def test_convert_repa_cli(tmp_path, s8_state_dict):
    checkpoint = tmp_path / "repa.pt"
    torch.save(
        {"ema": s8_state_dict, "model": s8_state_dict, "args": argparse.Namespace(encoder_depth=3)},
        checkpoint,
    )
    assert convert_repa_main([str(checkpoint), str(tmp_path / "model")]) == 0
    model = SiTTransformer2DModel.from_pretrained(tmp_path / "model")
    assert (model.config.hidden_size, model.config.num_attention_heads, model.config.sample_size) == (
        384,
        6,
        16,
    )
    assert model.config.encoder_depth == 3 and list(model.config.z_dims) == [8]
    x, t, y = torch.randn(2, 4, 16, 16), torch.tensor([0.2, 0.8]), torch.tensor([3, 10])
    expected, zs = reference_forward(s8_state_dict, x, t, y, heads=6, encoder_depth=3)
    out = model(x, t, y, return_projections=True)
    assert torch.allclose(out.sample, expected, atol=1e-5) and torch.allclose(
        out.projections[0], zs[0], atol=1e-5
    )
    assert (
        convert_repa_main(
            [str(checkpoint), str(tmp_path / "small"), "--drop-projectors", "--preset", "SiT-S/8"]
        )
        == 0
    )
    assert not SiTTransformer2DModel.from_pretrained(tmp_path / "small").projectors
    with pytest.raises(ValueError, match="not SiT-B/2.*looks like SiT-S/8"):
        convert_repa_main([str(checkpoint), str(tmp_path / "wrong"), "--preset", "SiT-B/2"])


def test_convert_sit_cli_writes_a_loadable_pipeline(tmp_path, s8_state_dict):
    sd = {k: v for k, v in s8_state_dict.items() if not k.startswith("projectors.")}
    g = torch.Generator().manual_seed(1)
    sd["final_layer.linear.weight"] = torch.randn(8 * 8 * 8, 384, generator=g) * 0.02  # learned sigma
    sd["final_layer.linear.bias"] = torch.randn(8 * 8 * 8, generator=g) * 0.02
    checkpoint = tmp_path / "SiT-S-8.pt"
    torch.save(sd, checkpoint)
    assert convert_sit_main([str(checkpoint), str(tmp_path / "sit"), "--dtype", "fp16"]) == 0
    model = SiTTransformer2DModel.from_pretrained(tmp_path / "sit", torch_dtype=torch.float16)
    assert model.config.out_channels == 4
    with safe_open(tmp_path / "sit" / "diffusion_pytorch_model.safetensors", "pt") as weights:
        assert weights.get_tensor("proj_out.weight").dtype == torch.float16  # saved in the requested dtype
    x, t, y = torch.randn(2, 4, 16, 16), torch.tensor([0.2, 0.8]), torch.tensor([3, 10])
    u, _ = reference_forward(sd, x, 1.0 - t, y, heads=6)
    assert torch.allclose(model.float()(x, t, y).sample, -u[:, :4], atol=2e-3)  # fp16 weights

    id2label = tmp_path / "labels.json"
    id2label.write_text('{"0": "tench", "1": "goldfish"}')
    assert (
        convert_sit_main([str(checkpoint), str(tmp_path / "pipe"), "--pipeline", "--id2label", str(id2label)])
        == 0
    )
    pipe = SiTPipeline.from_pretrained(tmp_path / "pipe")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae is None and type(pipe.scheduler).__name__ == "FlowMatchEulerMaruyamaScheduler"
    images = pipe(
        ["goldfish"], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt"
    )
    assert images.images.shape == (1, 4, 16, 16)


# ---------------------------------------------------------------------------------------------------
# SiT (reversed time, negated velocity, learned sigma)
# ---------------------------------------------------------------------------------------------------


def test_reversed_time_matrix_reverses_time():
    from diffusers.models.embeddings import Timesteps

    proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
    t = torch.tensor([0.0, 0.13, 0.5, 0.77, 1.0], dtype=torch.float64)
    reversed_ = proj((1 - t).float()).double()
    mapped = proj(t.float()).double() @ reversed_time_matrix(256).T
    assert torch.allclose(mapped, reversed_, atol=1e-6)


@pytest.mark.parametrize("keep_sigma_half", [False, True])
def test_sit_conversion_predicts_repa_velocity(keep_sigma_half):
    sd = original_state_dict(out_channels=8)  # learned sigma: 8 output channels
    config = _config(learn_sigma=keep_sigma_half)
    model = _model(config, convert_sit_state_dict(sd, config))
    x, t, y = _inputs()
    # original SiT: called at t_sit = 1 - sigma, predicts u = x_data - noise; ours: v = noise - x_data = -u
    u, _ = reference_forward(sd, x, 1.0 - t, y)
    ours = model(x, t, y).sample
    assert ours.shape[1] == (8 if keep_sigma_half else 4)
    assert torch.allclose(ours[:, :4], -u[:, :4], atol=1e-5, rtol=1e-4)
    if keep_sigma_half:
        assert torch.allclose(ours[:, 4:], u[:, 4:], atol=1e-5, rtol=1e-4)  # unused half kept as is


def test_load_sit_checkpoint_and_errors(tmp_path):
    sd = original_state_dict(out_channels=8)
    path = tmp_path / "SiT.pt"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    model = load_sit_checkpoint(path, num_attention_heads=2)
    assert model.config.out_channels == 4 and model.config.learn_sigma is False
    x, t, y = _inputs()
    u, _ = reference_forward(sd, x, 1.0 - t, y)
    assert torch.allclose(model(x, t, y).sample, -u[:, :4], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="no projectors"):
        convert_sit_state_dict(sd, _config(z_dims=[4]))
    with pytest.raises(ValueError, match="final_layer.linear.weight has shape"):
        bad = dict(sd)
        bad["final_layer.linear.weight"] = torch.zeros(12, 32)
        convert_sit_state_dict(bad, _config())
    with pytest.raises(ValueError, match="no DC-Embedding"):
        convert_sit_state_dict(sd, _config(text_embed_dim=8))
    with pytest.raises(ValueError, match="neither a state dict"):
        torch.save({"weights": [1, 2]}, tmp_path / "odd.pt")
        load_sit_checkpoint(tmp_path / "odd.pt")
    with pytest.raises(FileNotFoundError):
        load_sit_checkpoint(tmp_path / "missing.pt")
