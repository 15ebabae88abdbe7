"""SiTTransformer2DModel: presets, init, conditioning, projectors, DC-Embedding, save/load, validation."""

from __future__ import annotations

import math

import pytest
import torch

from d2c_hf.models.transformer_sit import (
    SIT_PRESETS,
    SiTTransformer2DModel,
    default_encoder_depth,
    preset_config,
)
from helpers_sit import TINY, randomize_, tiny_sit

TEXT = dict(text_embed_dim=6, text_seq_len=5)


def _inputs(batch: int = 3, seed: int = 1, num_classes: int = 10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    t = torch.rand(batch, generator=g)
    y = torch.randint(0, num_classes, (batch,), generator=g)
    return x, t, y


def _text_table(num_classes: int = 10, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(num_classes, TEXT["text_seq_len"], TEXT["text_embed_dim"], generator=g)
    lengths = torch.randint(1, TEXT["text_seq_len"] + 1, (num_classes,), generator=g)
    mask = torch.arange(TEXT["text_seq_len"])[None] < lengths[:, None]
    return embeds.half().float(), mask  # values exactly representable in the fp16 table


# ---------------------------------------------------------------------------------------------------
# presets and construction
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "millions"), [("SiT-XL/2", 675), ("SiT-L/2", 458), ("SiT-B/2", 130), ("SiT-S/2", 33)]
)
def test_preset_parameter_counts(name, millions):
    with torch.device("meta"):  # no memory, no init cost
        model = SiTTransformer2DModel.from_preset(name)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / 1e6 - millions) / millions < 0.01, count


def test_presets_and_unknown_name():
    assert len(SIT_PRESETS) == 12
    assert SIT_PRESETS["SiT-XL/2"] == {
        "depth": 28,
        "hidden_size": 1152,
        "num_attention_heads": 16,
        "patch_size": 2,
    }
    assert SIT_PRESETS["SiT-B/4"] == {
        "depth": 12,
        "hidden_size": 768,
        "num_attention_heads": 12,
        "patch_size": 4,
    }
    assert SIT_PRESETS["SiT-S/8"]["hidden_size"] == 384  # REPA's S configs wrongly use a 768-wide final layer
    with pytest.raises(ValueError, match=r"SiT-XL/2.*Available presets: SiT-S/2"):
        SiTTransformer2DModel.from_preset("SiT-XL2")
    config = preset_config("SiT-B/4")  # the public helper behind from_preset and the checkpoint converter
    assert config == SIT_PRESETS["SiT-B/4"]
    config["depth"] = 1  # a copy: the table is not changed through it
    assert SIT_PRESETS["SiT-B/4"]["depth"] == 12
    with pytest.raises(ValueError, match=r"Did you mean 'SiT-L/2'"):
        preset_config("SiT-L2")


def test_default_encoder_depth():
    assert [default_encoder_depth(n) for n in ("SiT-XL/2", "SiT-L/4", "SiT-B/2", "SiT-S/8")] == [8, 8, 4, 4]
    assert [default_encoder_depth(d) for d in (28, 24, 12, 4, 1)] == [8, 8, 4, 1, 1]
    with torch.device("meta"):
        model = SiTTransformer2DModel.from_preset("SiT-B/2", z_dims=[768])
    assert model.config.encoder_depth == 4


@pytest.mark.parametrize("depth", [0, 5])
def test_encoder_depth_out_of_range(depth):
    with pytest.raises(ValueError, match="encoder_depth"):
        SiTTransformer2DModel(**TINY, z_dims=[16], encoder_depth=depth)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        SiTTransformer2DModel(**{**TINY, "sample_size": 7})
    with pytest.raises(ValueError, match="num_attention_heads"):
        SiTTransformer2DModel(**{**TINY, "num_attention_heads": 5})
    with pytest.raises(ValueError, match="learn_sigma"):
        SiTTransformer2DModel(**TINY, learn_sigma=True, out_channels=4)


def test_adaln_zero_init():
    model = tiny_sit(randomize=False)
    for block in model.transformer_blocks:
        assert not block.norm1.linear.weight.any() and not block.norm1.linear.bias.any()
        # q, k, v drawn as one fused (3D, D) Xavier matrix, like timm's qkv: bound sqrt(6 / (D + 3D))
        bound = math.sqrt(6 / (4 * 32))
        assert (
            block.attn.to_q.weight.abs().max() <= bound and block.attn.to_q.weight.abs().max() > 0.8 * bound
        )
    x, t, y = _inputs()
    assert not model(x, t, y).sample.any()  # zero final layer: the untrained model predicts 0


def test_learn_sigma_doubles_output_channels():
    model = tiny_sit(learn_sigma=True)
    assert model.config.out_channels == 8
    assert model(*_inputs()).sample.shape == (3, 8, 8, 8)


# ---------------------------------------------------------------------------------------------------
# forward behaviour
# ---------------------------------------------------------------------------------------------------


def test_forward_deterministic_in_eval_mode():
    model = tiny_sit()
    x, t, y = _inputs()
    first = model(x, t, y).sample
    assert torch.equal(first, model(x, t, y).sample)
    assert first.shape == (3, 4, 8, 8) and first.abs().mean() > 0.01
    # t is a float in [0, 1]: a scalar broadcasts over the batch
    assert torch.equal(model(x, 0.3, y).sample, model(x, torch.full((3,), 0.3), y).sample)


def test_time_and_label_change_the_output():
    model = tiny_sit()
    x, t, y = _inputs()
    base = model(x, t, y).sample
    assert not torch.allclose(base, model(x, t * 0.5, y).sample)
    assert not torch.allclose(base, model(x, t, (y + 1) % 10).sample)


def test_gradient_checkpointing_same_outputs_and_gradients():
    x, t, y = _inputs()
    results = []
    for checkpointing in (False, True):
        model = tiny_sit(z_dims=[16], projector_dim=8)  # eval mode: no label dropout; gradients still flow
        if checkpointing:
            model.enable_gradient_checkpointing()
        out = model(x, t, y, return_projections=True)
        loss = out.sample.square().mean() + out.projections[0].square().mean()
        loss.backward()
        results.append((out.sample.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (sample_a, grads_a), (sample_b, grads_b) = results
    assert torch.allclose(sample_a, sample_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6), name


def test_gradient_checkpointing_recomputes_blocks():
    model = tiny_sit()
    model.enable_gradient_checkpointing()
    calls = []
    model.transformer_blocks[0].register_forward_pre_hook(lambda *args: calls.append(1))
    model(*_inputs()).sample.sum().backward()
    assert len(calls) == 2  # forward + recomputation in backward


def test_attention_backends_and_fused_qkv_agree():
    model = tiny_sit()
    x, t, y = _inputs()
    reference = model(x, t, y).sample
    model.set_attention_backend("_native_math")
    assert torch.allclose(model(x, t, y).sample, reference, atol=1e-5)
    model.set_attention_backend("native")
    model.fuse_qkv_projections()
    assert torch.allclose(model(x, t, y).sample, reference, atol=1e-5)


def test_eval_mode_never_drops_labels_train_mode_does():
    model = tiny_sit(class_dropout_prob=0.3)
    batch = 2000
    x = torch.randn(1, 4, 8, 8).expand(batch, -1, -1, -1)
    t = torch.full((batch,), 0.5)
    y = torch.full((batch,), 3)
    with torch.no_grad():
        cond = model(x[:1], t[:1], y[:1]).sample
        null = model(x[:1], t[:1], torch.tensor([10])).sample
        assert not torch.allclose(cond, null)
        evaluated = model(x, t, y).sample
        assert torch.allclose(evaluated, cond.expand_as(evaluated), atol=1e-5)  # eval: never dropped
        model.train()
        trained = model(x, t, y).sample
    dropped = (trained - null).flatten(1).abs().amax(1) < 1e-4
    kept = (trained - cond).flatten(1).abs().amax(1) < 1e-4
    assert torch.all(dropped ^ kept)  # every sample is exactly one of the two
    rate = dropped.float().mean().item()
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / batch), rate


def test_null_class_path():
    model = tiny_sit()
    x, t, _ = _inputs(batch=2)
    null = torch.tensor([10, 10])
    out = model(x, t, null).sample
    # the null id selects the extra (num_classes + 1)-th row of the class table
    table = model.class_embedder.embedding_table.weight
    assert table.shape[0] == 11
    with torch.no_grad():
        table[10] += 1.0
    assert not torch.allclose(out, model(x, t, null).sample)
    no_null = tiny_sit(class_dropout_prob=0.0)
    assert no_null.class_embedder.embedding_table.weight.shape[0] == 10
    with pytest.raises(ValueError, match="no null class"):
        no_null(x, t, null)


# ---------------------------------------------------------------------------------------------------
# REPA projectors
# ---------------------------------------------------------------------------------------------------


def test_projector_taps_the_right_block():
    model = tiny_sit(z_dims=[16, 12], projector_dim=8, encoder_depth=2)
    x, t, y = _inputs()
    out = model(x, t, y, return_projections=True)
    assert [tuple(p.shape) for p in out.projections] == [(3, 16, 16), (3, 16, 12)]  # (B, T, z_dim)
    randomize_(model.transformer_blocks[2], seed=5)  # after the tap
    randomize_(model.proj_out, seed=6)
    later = model(x, t, y, return_projections=True)
    for a, b in zip(out.projections, later.projections):
        assert torch.equal(a, b)
    assert not torch.allclose(out.sample, later.sample)
    randomize_(model.transformer_blocks[1], seed=7)  # the tapped block itself
    earlier = model(x, t, y, return_projections=True)
    assert not torch.allclose(out.projections[0], earlier.projections[0])


def test_projections_only_when_requested():
    model = tiny_sit(z_dims=[16], projector_dim=8)
    calls = []
    model.projectors[0].register_forward_hook(lambda *args: calls.append(1))
    out = model(*_inputs())
    assert out.projections is None and calls == []
    sample, projections = model(*_inputs(), return_projections=True, return_dict=False)
    assert len(calls) == 1 and projections[0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="no projectors"):
        tiny_sit()(*_inputs(), return_projections=True)


# ---------------------------------------------------------------------------------------------------
# DC-Embedding
# ---------------------------------------------------------------------------------------------------


def test_dc_embedding_masked_tokens_do_not_matter():
    model = tiny_sit(**TEXT)
    x, t, y = _inputs()
    embeds = torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    base = model(x, t, y, text_embeds=embeds, text_mask=mask).sample
    changed = embeds.clone()
    changed[mask == 0] = 100.0  # garbage in the padding
    assert torch.allclose(base, model(x, t, y, text_embeds=changed, text_mask=mask).sample, atol=1e-6)
    changed = embeds.clone()
    changed[0, 0] += 1.0  # a real token
    assert not torch.allclose(base[0], model(x, t, y, text_embeds=changed, text_mask=mask).sample[0])


def test_dc_embedding_table_lookup_equals_explicit_text():
    model = tiny_sit(**TEXT)
    embeds, mask = _text_table()
    model.set_class_text_table(embeds, mask)
    x, t, y = _inputs()
    looked_up = model(x, t, y).sample
    explicit = model(x, t, y, text_embeds=embeds[y], text_mask=mask[y]).sample
    assert torch.allclose(looked_up, explicit, atol=1e-6)
    # the text matters, the class embedding still matters (y_text = MLP(t~) + t~ + e_c)
    assert not torch.allclose(looked_up, model(x, t, y, text_embeds=embeds[y] + 1, text_mask=mask[y]).sample)
    with torch.no_grad():
        model.class_embedder.embedding_table.weight[y] += 1.0
    assert not torch.allclose(looked_up, model(x, t, y).sample)


def test_dc_embedding_null_class_has_no_text():
    model = tiny_sit(**TEXT)
    model.set_class_text_table(*_text_table())
    x, t, _ = _inputs(batch=2)
    null = torch.tensor([10, 10])
    from_table = model(x, t, null).sample
    explicit = model(x, t, null, text_embeds=torch.randn(2, 5, 6), text_mask=torch.ones(2, 5)).sample
    zeros = model(x, t, null, text_embeds=torch.zeros(2, 5, 6), text_mask=torch.zeros(2, 5)).sample
    assert torch.allclose(from_table, explicit, atol=1e-6) and torch.allclose(from_table, zeros, atol=1e-6)


def test_dc_embedding_validation():
    model = tiny_sit(**TEXT)
    x, t, y = _inputs()
    with pytest.raises(ValueError, match="no class text table"):
        model(x, t, y)
    with pytest.raises(
        ValueError, match=r"text_embeds must be \(batch, text_seq_len, text_embed_dim\) = \(3, 5, 6\)"
    ):
        model(x, t, y, text_embeds=torch.randn(3, 5, 7))
    with pytest.raises(ValueError, match="text_embeds must be"):
        model(x, t, y, text_embeds=torch.randn(3, 4, 6))
    with pytest.raises(ValueError, match="text_mask must be"):
        model(x, t, y, text_embeds=torch.randn(3, 5, 6), text_mask=torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"\(num_classes, text_seq_len, text_embed_dim\) = \(10, 5, 6\)"):
        model.set_class_text_table(torch.randn(9, 5, 6), torch.ones(9, 5))
    with pytest.raises(ValueError, match="text_mask must be"):
        model.set_class_text_table(torch.randn(10, 5, 6), torch.ones(10, 6))
    with pytest.raises(ValueError, match="finite"):
        model.set_class_text_table(torch.full((10, 5, 6), 1e6), torch.ones(10, 5))
    with pytest.raises(ValueError, match="no DC-Embedding"):
        tiny_sit()(x, t, y, text_embeds=torch.randn(3, 5, 6))


# ---------------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------------


def test_save_load_round_trip_bitwise(tmp_path):
    model = tiny_sit(z_dims=[16], projector_dim=8, qk_norm=True, **TEXT)
    model.set_class_text_table(*_text_table())
    model.save_pretrained(tmp_path)
    loaded = SiTTransformer2DModel.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded.class_text_embeds.dtype == torch.float16  # the table is stored at half size
    original, reloaded = model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    assert {"class_text_embeds", "class_text_mask"} <= set(reloaded)
    for key in original:
        assert original[key].dtype == reloaded[key].dtype and torch.equal(original[key], reloaded[key]), key
    x, t, y = _inputs()
    a = model(x, t, y, return_projections=True)
    b = loaded(x, t, y, return_projections=True)
    assert torch.equal(a.sample, b.sample) and torch.equal(a.projections[0], b.projections[0])
    assert loaded.config.encoder_depth == model.config.encoder_depth == 1


# ---------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------


def test_input_validation():
    model = tiny_sit()
    x, t, y = _inputs()
    with pytest.raises(ValueError, match=r"hidden_states must be \(batch, 4, 8, 8\)"):
        model(torch.randn(3, 3, 8, 8), t, y)
    with pytest.raises(ValueError, match="sample_size=8"):
        model(torch.randn(3, 4, 16, 16), t, y)
    with pytest.raises(
        ValueError, match=r"class_labels must be in \[0, 9\], or 10 for the null class; got \[11\]"
    ):
        model(x, t, torch.tensor([1, 11, 2]))
    with pytest.raises(ValueError, match="got \\[-1\\]"):
        model(x, t, torch.tensor([1, -1, 2]))
    with pytest.raises(ValueError, match="one per sample"):
        model(x, t, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="integers"):
        model(x, t, y.float())
    with pytest.raises(ValueError, match="not an integer scheduler step"):
        model(x, torch.tensor([500, 500, 500]), y)
    with pytest.raises(ValueError, match=r"timestep must be in \[0, 1\]"):
        model(x, 500.0, y)
    with pytest.raises(ValueError, match="shape \\(3,\\)"):
        model(x, torch.rand(2), y)


def test_check_class_labels_is_public_for_labels_on_any_device():
    model = tiny_sit()
    model.check_class_labels(torch.tensor([0, 9, 10]))  # 10 = the null class
    with pytest.raises(ValueError, match=r"got \[11, -3\]"):
        model.check_class_labels([1, 11, -3])
    with pytest.raises(ValueError, match="has no null class"):
        tiny_sit(class_dropout_prob=0.0).check_class_labels(torch.tensor([10]))


# ---------------------------------------------------------------------------------------------------
# no host synchronisation, no graph breaks
# ---------------------------------------------------------------------------------------------------


def test_forward_reads_no_tensor_values():
    """On the meta device a tensor has no values: any read (``.item()``, ``int()``, ``bool()``, ``.tolist()``)
    raises. A forward that runs there never waits for a GPU either (labels on an accelerator are not checked)."""
    model = tiny_sit(z_dims=[16], projector_dim=8, **TEXT)
    model.set_class_text_table(*_text_table())
    x, t, y = _inputs()
    model(x, t, y)  # the one read per model: is the class text table set?
    model = model.to("meta")
    x, t, y = x.to("meta"), t.to("meta"), torch.tensor([1, 10, 2], device="meta")
    out = model(x, t, y, return_projections=True)
    assert out.sample.device.type == "meta" and out.sample.shape == x.shape
    assert out.projections[0].shape == (3, 16, 16)
    model.train()  # label dropout and the text lookup of dropped labels: still no reads
    assert model(x, t, y).sample.shape == x.shape


@pytest.mark.parametrize("text", [False, True])
def test_forward_compiles_with_fullgraph(text):
    """``torch.compile(fullgraph=True)`` fails on any graph break (a host read, data-dependent Python control
    flow). ``aot_eager`` traces forward and backward like inductor without generating code, which takes over a
    minute on a 2-core CPU (inductor compiles this model too: docs/models.md)."""
    kwargs = dict(z_dims=[16], projector_dim=8, **(TEXT if text else {}))
    model = tiny_sit(**kwargs)
    if text:  # not called eagerly first: the check that the table is set is compiled too
        model.set_class_text_table(*_text_table())
    x, t, y = _inputs()
    y[1] = 10  # the null class
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        out = compiled(x, t, y, return_projections=True)
        ref = model(x, t, y, return_projections=True)
    torch.testing.assert_close(out.sample, ref.sample, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.projections[0], ref.projections[0], rtol=0, atol=1e-6)
    model.train()
    sample = compiled(x, t, y).sample
    sample.square().mean().backward()
    assert model.proj_out.weight.grad is not None and torch.isfinite(model.proj_out.weight.grad).all()
