"""SiTPipeline: CFG math and guidance interval, REPA's Euler grid, labels, save/load, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from d2c_hf.pipelines import FlowMatchEulerMaruyamaScheduler, SiTPipeline
from helpers_sit import tiny_sit
from local_hub import tiny_vae

ID2LABEL = {
    0: "tench, Tinca tinca",
    1: "goldfish",
    2: "great white shark, white shark",
    3: "crane",
    9: "crane, bird",
}


def _pipe(scheduler=None, vae=None, id2label=ID2LABEL, **model_kwargs) -> SiTPipeline:
    pipe = SiTPipeline(
        transformer=tiny_sit(**model_kwargs),
        scheduler=scheduler or FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        id2label=id2label,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _noise(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _record_batches(model) -> list[int]:
    sizes: list[int] = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(args[0].shape[0]), with_kwargs=True
    )
    return sizes


def _manual_euler(model, x, labels, sigmas, scale=1.0, interval=(0.0, 1.0)):
    """A hand-written REPA ``euler_sampler``: grid ``sigmas`` (ending at 0), x += (t_next - t) v, CFG computed
    from two *separate* forwards (not batched) where low <= t <= high."""
    x = x.double()
    y = torch.tensor(labels)
    null = torch.full_like(y, model.config.num_classes)
    for t_cur, t_next in itertools.pairwise(sigmas):
        t_in = torch.full((x.shape[0],), float(t_cur))
        v = model(x.float(), t_in, y).sample.double()
        if scale > 1 and interval[0] <= t_cur <= interval[1]:
            v_null = model(x.float(), t_in, null).sample.double()
            v = v_null + scale * (v - v_null)
        x = x + (t_next - t_cur) * v
    return x


def test_repa_euler_grid_via_explicit_sigmas_equals_hand_written_loop():
    pipe = _pipe()
    n = 8
    grid = np.linspace(1.0, 0.0, n + 1)  # REPA: linspace(1, 0, N + 1) in float64
    expected = _manual_euler(pipe.transformer, _noise(), [1, 2], grid, scale=2.5, interval=(0.0, 0.7))
    out = pipe(
        [1, 2],
        guidance_scale=2.5,
        guidance_interval=(0.0, 0.7),
        latents=_noise(),
        output_type="latent",
        sigmas=np.linspace(1.0, 1.0 / n, n),  # the scheduler appends 0
    ).images
    assert torch.allclose(out.double(), expected, atol=1e-4)
    # the scheduler's default grid (linspace(1, 1/1000, N) + 0) is a different sampler
    default = pipe(
        [1, 2],
        num_inference_steps=n,
        guidance_scale=2.5,
        guidance_interval=(0.0, 0.7),
        latents=_noise(),
        output_type="latent",
    ).images
    assert not torch.allclose(default.double(), expected, atol=1e-3)


def test_cfg_scale_one_is_conditional_only():
    pipe = _pipe()
    sizes = _record_batches(pipe.transformer)
    out = pipe(
        [0, 1], num_inference_steps=4, guidance_scale=1.0, latents=_noise(), output_type="latent"
    ).images
    assert sizes == [2, 2, 2, 2]  # no null-class forward at all
    pipe.scheduler.set_timesteps(4)
    sigmas = np.append(pipe.scheduler.timesteps.double().numpy() / 1000, 0.0)
    assert torch.allclose(out.double(), _manual_euler(pipe.transformer, _noise(), [0, 1], sigmas), atol=1e-4)


def test_cfg_math_matches_manual_computation():
    pipe = _pipe()
    sizes = _record_batches(pipe.transformer)
    out = pipe(
        [3, 9], num_inference_steps=5, guidance_scale=4.0, latents=_noise(), output_type="latent"
    ).images
    assert sizes == [4] * 5  # cond + null batched in one forward
    sigmas = np.append(pipe.scheduler.timesteps.double().numpy() / 1000, 0.0)
    expected = _manual_euler(pipe.transformer, _noise(), [3, 9], sigmas, scale=4.0)
    assert torch.allclose(out.double(), expected, atol=1e-4)
    unguided = pipe(
        [3, 9], num_inference_steps=5, guidance_scale=1.0, latents=_noise(), output_type="latent"
    ).images
    assert not torch.allclose(out, unguided, atol=1e-3)


def test_guidance_interval_is_respected():
    pipe = _pipe()
    sizes = _record_batches(pipe.transformer)
    pipe(
        [0, 1], num_inference_steps=10, guidance_scale=2.0, guidance_interval=(0.2, 0.7), output_type="latent"
    )
    sigmas = pipe.scheduler.timesteps.numpy() / 1000
    expected = [4 if 0.2 <= s <= 0.7 else 2 for s in sigmas]
    assert sizes == expected and 2 in expected and 4 in expected


def test_reproducible_with_generator_and_sde_scheduler():
    pipe = _pipe(scheduler=FlowMatchEulerMaruyamaScheduler())

    def run(seed):
        return pipe(
            [0, 1],
            num_inference_steps=6,
            guidance_scale=1.5,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        ).images

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # the SDE draws fresh noise each step: same initial latents, different step noise -> different images
    pipe_latents = pipe(
        [0, 1],
        num_inference_steps=6,
        latents=_noise(),
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    ).images
    other = pipe(
        [0, 1],
        num_inference_steps=6,
        latents=_noise(),
        generator=torch.Generator().manual_seed(9),
        output_type="latent",
    ).images
    assert not torch.allclose(pipe_latents, other)


def test_heun_scheduler_works():
    pipe = _pipe(scheduler=FlowMatchHeunDiscreteScheduler())
    sizes = _record_batches(pipe.transformer)
    out = pipe([0], num_inference_steps=4, latents=_noise(1), output_type="latent").images
    assert len(sizes) == 2 * 4 - 1 and torch.isfinite(out).all()


def test_pixel_space_output_is_the_image():
    pipe = _pipe()
    latents = pipe([0, 1], num_inference_steps=3, latents=_noise(), output_type="latent").images
    images = pipe([0, 1], num_inference_steps=3, latents=_noise(), output_type="pt").images
    assert torch.allclose(images, (latents / 2 + 0.5).clamp(0, 1))
    arrays = pipe([0, 1], num_inference_steps=3, latents=_noise(), output_type="np").images
    assert arrays.shape == (2, 8, 8, 4)


def test_vae_decoding_uses_the_vae_scaling():
    vae = tiny_vae().eval()
    pipe = _pipe(vae=vae)
    latents = pipe([0], num_inference_steps=2, latents=_noise(1), output_type="latent").images
    images = pipe([0], num_inference_steps=2, latents=_noise(1), output_type="pt").images
    with torch.no_grad():
        decoded = vae.decode(latents / vae.config.scaling_factor).sample
    assert images.shape == (1, 3, 32, 32)
    assert torch.allclose(images, (decoded / 2 + 0.5).clamp(0, 1), atol=1e-6)


def test_dc_embedding_model_samples_from_labels_only():
    pipe = _pipe(text_embed_dim=6, text_seq_len=5)
    embeds = torch.randn(10, 5, 6, generator=torch.Generator().manual_seed(0))
    pipe.transformer.set_class_text_table(embeds, torch.ones(10, 5))
    out = pipe(
        [0, 1], num_inference_steps=2, guidance_scale=2.0, latents=_noise(), output_type="latent"
    ).images
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------------


def test_get_label_ids():
    pipe = _pipe()
    assert pipe.get_label_ids("goldfish") == [1]  # a single str is one name, not characters
    assert pipe.get_label_ids(["tench", "Tinca tinca", "white shark", 4]) == [0, 0, 2, 4]
    assert pipe.get_label_ids("Great White Shark") == [2]  # case-insensitive fallback
    assert pipe.get_label_ids(torch.tensor([5, 6])) == [5, 6]
    assert pipe.get_label_ids("bird") == [9]
    with pytest.raises(ValueError, match=r"Unknown class name 'goldfsh'\. Close matches: 'goldfish'"):
        pipe.get_label_ids("goldfsh")
    with pytest.raises(ValueError, match=r"'crane' names several classes \[3, 9\]"):
        pipe.get_label_ids("crane")
    with pytest.raises(ValueError, match="out of range"):
        pipe.get_label_ids([1, 10])
    with pytest.raises(ValueError, match="out of range"):
        pipe([-1])
    with pytest.raises(ValueError, match="no id2label"):
        _pipe(id2label=None).get_label_ids("goldfish")
    with pytest.raises(ValueError, match="outside"):
        _pipe(id2label={12: "twelve"})


# ---------------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_vae", [True, False])
def test_from_pretrained_round_trip(tmp_path, with_vae):
    pipe = _pipe(vae=tiny_vae().eval() if with_vae else None)
    pipe.save_pretrained(tmp_path)
    loaded = SiTPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.transformer) is type(pipe.transformer)
    assert (loaded.vae is None) is (not with_vae)
    assert loaded.id2label == {k: v for k, v in sorted(ID2LABEL.items())}
    assert loaded.get_label_ids("goldfish") == [1]

    def run(p):
        return p(
            ["goldfish", 2],
            num_inference_steps=3,
            guidance_scale=1.5,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images

    assert torch.equal(run(pipe), run(loaded))


# ---------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"guidance_interval": (0.5, 0.2)}, "0 <= low <= high <= 1"),
        ({"guidance_interval": (-0.1, 0.5)}, "0 <= low <= high <= 1"),
        ({"guidance_interval": (0.0, 1.5)}, "0 <= low <= high <= 1"),
        ({"guidance_interval": (0.0,)}, r"\(low, high\)"),
        ({"num_inference_steps": 0}, "num_inference_steps must be >= 1"),
        ({"num_inference_steps": 2.5}, "num_inference_steps must be an int"),
        ({"guidance_scale": 0.5}, "guidance_scale must be >= 1"),
        ({"output_type": "jpeg"}, "output_type"),
        ({"latents": torch.zeros(2, 4, 16, 16)}, r"latents must have shape \(2, 4, 8, 8\)"),
        ({"generator": [torch.Generator()]}, "one per image"),
    ],
)
def test_bad_call_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _pipe()([0, 1], **kwargs)


def test_guidance_needs_a_null_class():
    with pytest.raises(ValueError, match="null class"):
        _pipe(class_dropout_prob=0.0)([0], guidance_scale=2.0)


def test_explicit_sigmas_need_a_scheduler_that_takes_them():
    with pytest.raises(ValueError, match="does not accept sigmas"):
        _pipe(scheduler=FlowMatchHeunDiscreteScheduler())([0], sigmas=[1.0, 0.5])
