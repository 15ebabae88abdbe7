"""Text-to-image training (issue 25, training half): the text-conditioned SiT, examples/train_sit.py on a captioned
set (a few steps, exact resume), SiTPipeline with prompts and its text encoder component, examples/sample_sit.py
--prompt_file, the CLIP score against a hand computation, and bad input refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from d2c_hf.models.transformer_sit import SiTTransformer2DModel
from d2c_hf.pipelines import FlowMatchEulerMaruyamaScheduler, SiTPipeline
from helpers_sit import randomize_, tiny_sit
from helpers_text_to_image import MAX_LENGTH, make_captioned, save_tiny_clip, train_args
from helpers_train_sit import load_script, reset_accelerate_state

train_sit = load_script("train_sit_t2i")

TEXT = dict(
    sample_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_attention_heads=2, num_classes=0,
    caption_embed_dim=16, caption_seq_len=6,
)  # fmt: skip


def text_sit(seed: int = 0, **overrides) -> SiTTransformer2DModel:
    """A tiny text-conditioned SiT with random weights everywhere (so every input matters), eval mode."""
    model = SiTTransformer2DModel(**{**TEXT, **overrides}).eval()
    randomize_(model, seed)
    return model


def _inputs(batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 4, 8, 8, generator=g),
        torch.rand(batch, generator=g),
        torch.randn(batch, 6, 16, generator=g),
    )


# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------


def test_captions_condition_the_model_and_padding_is_ignored():
    model = text_sit()
    x, t, c = _inputs()
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        out = model(x, t, encoder_hidden_states=c, encoder_attention_mask=mask).sample
        # another caption changes every row's prediction
        other = model(x, t, encoder_hidden_states=c.roll(1, 0), encoder_attention_mask=mask).sample
        # padded tokens (mask 0) change nothing, neither through cross-attention nor the pooled path
        padded = c.clone()
        padded[mask == 0] = 1e3
        same = model(x, t, encoder_hidden_states=padded, encoder_attention_mask=mask).sample
        # the caption tokens carry no positions in the SiT (the text encoder's states already encode word order)
        permuted = c.clone()
        permuted[1] = c[1, torch.tensor([5, 4, 3, 2, 1, 0])]
        perm = model(x, t, encoder_hidden_states=permuted, encoder_attention_mask=mask).sample
    assert out.shape == (3, 4, 8, 8) and torch.isfinite(out).all()
    assert all((out[i] - other[i]).abs().max() > 1e-3 for i in range(3))
    torch.testing.assert_close(same, out, rtol=0, atol=1e-5)
    # so cross-attention and the masked mean are invariant to the order of a row's tokens
    torch.testing.assert_close(perm, out, rtol=0, atol=1e-5)
    # a row whose mask hides every token gets no cross-attention contribution and a zero pooled caption
    with torch.no_grad():
        empty = model(
            x[:1], t[:1], encoder_hidden_states=c[:1], encoder_attention_mask=torch.zeros(1, 6)
        ).sample
        other_empty = model(
            x[:1], t[:1], encoder_hidden_states=c[1:2], encoder_attention_mask=torch.zeros(1, 6)
        ).sample
    assert torch.isfinite(empty).all()
    torch.testing.assert_close(empty, other_empty, rtol=0, atol=0)


def test_caption_dropout_replaces_rows_by_the_empty_caption_in_training_only():
    model = text_sit(caption_dropout_prob=0.5)
    x, t, c = _inputs(batch=16)
    empty_embeds, empty_mask = torch.randn(6, 16), torch.tensor([1, 1, 0, 0, 0, 0])
    model.train()
    with pytest.raises(ValueError, match="caption dropout needs the empty caption.*set_empty_caption"):
        model(x, t, encoder_hidden_states=c)
    model.set_empty_caption(empty_embeds, empty_mask)
    torch.manual_seed(3)  # test-side: the model's dropout draws from the global RNG (as class dropout)
    trained = model(x, t, encoder_hidden_states=c).sample.detach()
    torch.manual_seed(3)
    drop = torch.rand(16) < 0.5
    assert 0 < int(drop.sum()) < 16
    model.eval()
    with torch.no_grad():
        kept = model(x, t, encoder_hidden_states=c).sample
        stored16 = empty_embeds.to(torch.float16).float()  # stored as float16
        dropped = model(
            x,
            t,
            encoder_hidden_states=stored16.expand(16, -1, -1),
            encoder_attention_mask=empty_mask.expand(16, -1),
        ).sample
    torch.testing.assert_close(trained[~drop], kept[~drop], rtol=0, atol=1e-5)
    torch.testing.assert_close(trained[drop], dropped[drop], rtol=0, atol=1e-5)
    # saved and loaded with the model
    assert torch.equal(model.state_dict()["empty_caption_mask"], empty_mask.bool())


def test_text_model_configs_and_inputs_are_checked_by_name():
    with pytest.raises(ValueError, match="has no classes: pass num_classes=0"):
        SiTTransformer2DModel(**{**TEXT, "num_classes": 10})
    with pytest.raises(ValueError, match="exclude each other"):
        SiTTransformer2DModel(**{**TEXT, "text_embed_dim": 16})
    with pytest.raises(ValueError, match="caption_dropout_prob must be in"):
        SiTTransformer2DModel(**{**TEXT, "caption_dropout_prob": 1.0})
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        SiTTransformer2DModel(**{**TEXT, "caption_embed_dim": None})
    model = text_sit()
    x3, t, c = _inputs()
    with pytest.raises(ValueError, match="text-conditioned .*not class_labels"):
        model(x3, t, torch.tensor([0, 1, 2]), encoder_hidden_states=c)
    with pytest.raises(ValueError, match="pass encoder_hidden_states"):
        model(x3, t)
    with pytest.raises(
        ValueError,
        match=r"encoder_hidden_states must be \(batch, caption_seq_len, caption_embed_dim\) = \(3, 6, 16\)",
    ):
        model(x3, t, encoder_hidden_states=c[:, :5])
    with pytest.raises(ValueError, match=r"encoder_attention_mask must be \(batch, caption_seq_len\)"):
        model(x3, t, encoder_hidden_states=c, encoder_attention_mask=torch.ones(3, 5))
    with pytest.raises(ValueError, match="the empty caption's mask has no token"):
        model.set_empty_caption(torch.zeros(6, 16), torch.zeros(6))
    with pytest.raises(ValueError, match="text-conditioned .*not class labels"):
        model.check_class_labels([0])
    classy = tiny_sit(depth=2)
    with pytest.raises(ValueError, match="class-conditional .*pass class_labels"):
        classy(x3, t, torch.tensor([0, 1, 2]), encoder_hidden_states=c)
    with pytest.raises(ValueError, match="class-conditional .*has no empty caption"):
        classy.set_empty_caption(torch.zeros(6, 16), torch.ones(6))
    # gradient checkpointing carries the captions through every block
    model.set_empty_caption(torch.randn(6, 16), torch.ones(6))
    model.train().enable_gradient_checkpointing()
    loss = model(x3, t, encoder_hidden_states=c).sample.square().mean()
    loss.backward()
    assert model.transformer_blocks[0].attn2.to_k.weight.grad is not None


# --------------------------------------------------------------------------------------
# training, resume, the saved pipeline
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def captioned(local_hub, tmp_path_factory) -> Path:
    """12 captioned rows in pixel space (3 x 8 x 8 'images', so sampled images are RGB)."""
    return make_captioned(tmp_path_factory.mktemp("t2i") / "captioned", local_hub.t5, space="pixel")


@pytest.fixture(scope="module")
def trained(captioned, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("t2i_run") / "run"
    args = train_args(
        captioned, out, "--max_train_steps", "4", "--num_validation_images", "2", "--num_inference_steps", "2",
        "--validation_steps", "2", "--learning_rate", "1e-3",
    )  # fmt: skip
    return train_sit.main(train_sit.parse_args(args))


def test_train_a_captioned_set_and_sample_the_saved_pipeline_from_prompts(trained, local_hub):
    assert trained["global_step"] == 4 and trained["use_captions"] and trained["use_visual"]
    assert all(np.isfinite(loss) for _, loss in trained["loss_history"])
    assert [Path(p).name for p in trained["samples"]] == ["step-000002.png", "step-000004.png"]
    out = Path(trained["pipeline_dir"])
    index = json.loads((out / "model_index.json").read_text())
    assert (
        index["text_encoder"] == ["transformers", "T5EncoderModel"]
        and index["tokenizer"][0] == "transformers"
    )
    card = (out / "README.md").read_text()
    assert "text-to-image" in card and 'pipe(prompt=["a photo of the zero white"' in card

    pipe = SiTPipeline.from_pretrained(out)
    config = pipe.transformer.config
    assert (config.num_classes, config.caption_embed_dim, config.caption_seq_len) == (0, 16, MAX_LENGTH)
    assert config.caption_dropout_prob == 0.1 and pipe.is_text_conditioned
    # the stored empty caption is the saved encoder's encoding of "" (what guidance's null branch sees)
    embeds, mask = pipe.encode_prompt("")
    assert torch.equal(embeds[0], pipe.transformer.empty_caption_embeds.float())
    assert torch.equal(mask[0], pipe.transformer.empty_caption_mask) and int(mask.sum()) == 1  # </s>
    prompts = ["a photo of the three", "a photo of the one white"]

    def sample(**kwargs):
        return pipe(
            prompt=prompts, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt",
            **kwargs,
        ).images  # fmt: skip

    plain = sample()
    guided = sample(guidance_scale=2.0)
    assert plain.shape == (2, 3, 8, 8) and not torch.equal(plain, guided)
    torch.testing.assert_close(sample(guidance_scale=2.0, negative_prompt=""), guided, rtol=0, atol=0)
    assert not torch.equal(sample(guidance_scale=2.0, negative_prompt="a photo of the nine"), guided)
    # prompt_embeds = encode_prompt(prompt): the same images
    embeds, mask = pipe.encode_prompt(prompts)
    again = pipe(
        prompt_embeds=embeds, prompt_attention_mask=mask, num_inference_steps=2,
        generator=torch.Generator().manual_seed(0), output_type="pt",
    ).images  # fmt: skip
    torch.testing.assert_close(again, plain, rtol=0, atol=0)


def test_resume_on_a_captioned_set_is_exact(captioned, tmp_path):
    common = ("--checkpointing_steps", "2", "--gradient_accumulation_steps", "2", "--ema_decay", "0.5")
    train_sit.main(
        train_sit.parse_args(train_args(captioned, tmp_path / "full", "--max_train_steps", "4", *common))
    )
    train_sit.main(
        train_sit.parse_args(train_args(captioned, tmp_path / "split", "--max_train_steps", "2", *common))
    )
    resumed = train_sit.main(
        train_sit.parse_args(
            train_args(
                captioned,
                tmp_path / "split",
                "--max_train_steps",
                "4",
                "--resume_from_checkpoint",
                "latest",
                *common,
            )
        )
    )
    assert resumed["global_step"] == 4
    full, split = tmp_path / "full" / "checkpoint-4", tmp_path / "split" / "checkpoint-4"
    for sub in ("transformer", "transformer_ema"):
        a, b = load_file(full / sub / train_sit.WEIGHTS_NAME), load_file(split / sub / train_sit.WEIGHTS_NAME)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub
    assert "empty_caption_embeds" in a and bool(a["empty_caption_mask"].any())


def test_bad_training_inputs_are_refused_by_name(captioned, local_hub, tmp_path):
    from local_hub import tiny_t5

    def run(dataset, *extra):
        train_sit.main(train_sit.parse_args(train_args(dataset, tmp_path / "o", *extra)))

    # a captioned set with a class-conditional model config
    with pytest.raises(ValueError, match="has no classes: pass num_classes=0.*which the dataset decides"):
        run(
            captioned,
            "--model_config_overrides",
            '{"depth":2,"hidden_size":32,"num_attention_heads":2,"num_classes":3}',
        )
    with pytest.raises(ValueError, match="--validation_classes: the dataset is captioned"):
        run(captioned, "--validation_classes", "0", "1", "--num_validation_images", "2")
    # another text encoder than the one the captions were encoded with
    other = tmp_path / "other_t5"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        encoder, tokenizer = tiny_t5()
    encoder.save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(
        ValueError, match=r"--text_encoder .*encodes caption row 0 .*differently.*cosine similarity"
    ):
        run(captioned, "--text_encoder", str(other))
    # a class-conditional set with prompts
    from helpers_train_sit import make_condensed

    classes = make_condensed(tmp_path / "classes")
    with pytest.raises(ValueError, match="--validation_prompts needs a captioned dataset"):
        run(classes, "--validation_prompts", "a cat")
    # BatchSource: a text model for a class set and a class model for a captioned set
    from d2c_hf.condensed.dataset import CondensedDataset
    from d2c_hf.train.batches import BatchSource

    source = BatchSource(CondensedDataset.load(captioned), 4)
    with pytest.raises(ValueError, match="the dataset is captioned .* the model is class-conditional"):
        source.check_model(tiny_sit(depth=2))
    with pytest.raises(ValueError, match="the model takes caption_seq_len x caption_embed_dim = 6 x 16"):
        source.check_model(text_sit())
    with pytest.raises(ValueError, match="text-conditioned .* the dataset has no 'caption_embeds'"):
        BatchSource(CondensedDataset.load(classes), 4).check_model(text_sit(sample_size=8))
    batch = source.next_batch()
    assert batch["caption_embeds"].shape == (4, MAX_LENGTH, 16) and batch["caption_mask"].dtype == torch.bool
    assert not (tmp_path / "o" / "model_index.json").exists()
    reset_accelerate_state()


def test_prompts_and_labels_go_to_the_right_pipelines(trained):
    text = SiTPipeline.from_pretrained(trained["pipeline_dir"])
    with pytest.raises(
        ValueError, match=r"text-conditioned: pass prompt=\[...\].*first argument is class_labels"
    ):
        text(["a photo of the three"], num_inference_steps=1)
    with pytest.raises(ValueError, match="text-conditioned: pass prompt="):
        text(class_labels=[3], num_inference_steps=1)
    with pytest.raises(ValueError, match=r"prompt\[1\] must be a string"):
        text(prompt=["a photo", 3], num_inference_steps=1)
    with pytest.raises(ValueError, match="got 2 negative prompts for 3 prompts"):
        text(prompt=["a", "b", "c"], negative_prompt=["x", "y"], guidance_scale=2.0, num_inference_steps=1)
    with pytest.raises(ValueError, match="text-conditioned .*no classes"):
        SiTPipeline(text.transformer, text.scheduler, id2label={0: "cat"})
    with pytest.raises(ValueError, match="pass text_encoder and tokenizer together"):
        SiTPipeline(text.transformer, text.scheduler, text_encoder=text.text_encoder)
    bare = SiTPipeline(text.transformer, text.scheduler)
    with pytest.raises(ValueError, match="no text_encoder/tokenizer to encode prompts"):
        bare(prompt="a photo of the three", num_inference_steps=1)
    classy = SiTPipeline(tiny_sit(depth=2), FlowMatchEulerMaruyamaScheduler())
    with pytest.raises(ValueError, match="class-conditional: pass class_labels .*not prompts"):
        classy(prompt=["a photo of a cat"], num_inference_steps=1)
    with pytest.raises(ValueError, match="class-conditional .*it takes class labels, not prompts"):
        SiTPipeline(
            tiny_sit(depth=2),
            FlowMatchEulerMaruyamaScheduler(),
            text_encoder=text.text_encoder,
            tokenizer=text.tokenizer,
        )


# --------------------------------------------------------------------------------------
# sampling from a prompt file, and the CLIP score
# --------------------------------------------------------------------------------------


def test_sample_sit_prompt_file_and_clip_score(trained, tmp_path):
    import importlib.util

    from d2c_hf.cli import main as d2c
    from d2c_hf.evaluation import CLIPScore
    from d2c_hf.evaluation.clip_score import evaluate_clip_score
    from d2c_hf.evaluation.sampling import sample_generators, sampler_sigmas, to_uint8

    spec = importlib.util.spec_from_file_location(
        "sample_sit_t2i", Path(train_sit.__file__).with_name("sample_sit.py")
    )
    sample_sit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample_sit)
    prompts = ["a photo of the three", "a photo of the one white", "a photo of the seven"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    out = tmp_path / "samples"
    argv = [
        "--pipeline", trained["pipeline_dir"], "--output_dir", str(out), "--prompt_file", str(tmp_path / "prompts.txt"),
        "--num_samples", "4", "--batch_size", "2", "--num_inference_steps", "2", "--guidance_scale", "1.5", "--cpu",
    ]  # fmt: skip
    sample_sit.main(sample_sit.parse_args(argv))
    with np.load(out / "samples.npz") as npz:
        images, indices = npz["arr_0"], npz["arr_1"]
    assert images.shape == (4, 8, 8, 3) and indices.tolist() == [0, 1, 2, 0]  # prompt i mod 3
    sidecar = json.loads((out / "samples.json").read_text())
    assert sidecar["labels"]["num_prompts"] == 3 and "text_encoder" in sidecar["pipeline"]
    # the first batch is the pipeline's own call with the per-sample generators
    pipe = SiTPipeline.from_pretrained(trained["pipeline_dir"])
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        prompt=prompts[:2], num_inference_steps=2, guidance_scale=1.5, guidance_interval=(0.0, 0.7),
        generator=sample_generators(0, np.arange(2), torch.device("cpu")), output_type="pt",
        sigmas=sampler_sigmas("sde", 2),
    ).images  # fmt: skip
    np.testing.assert_array_equal(to_uint8(expected), images[:2])

    clip = save_tiny_clip(tmp_path / "clip")
    assert d2c(["clip-score", str(out / "samples.npz"), "--prompt_file", str(tmp_path / "prompts.txt"),
                "--clip_model", str(clip), "--output", str(tmp_path / "clip.json"), "--no_progress"]) == 0  # fmt: skip
    record = json.loads((tmp_path / "clip.json").read_text())
    direct = CLIPScore.from_pretrained(clip)(images, [prompts[i] for i in indices])
    assert (
        record["clip_score"] == pytest.approx(direct["clip_score"], abs=1e-9) and record["num_samples"] == 4
    )
    with pytest.raises(ValueError, match="text-conditioned: pass --prompt_file"):
        sample_sit.main(
            sample_sit.parse_args(
                [a for a in argv if a not in ("--prompt_file", str(tmp_path / "prompts.txt"))]
            )
        )
    (tmp_path / "blank.txt").write_text("a photo\n\nthe end\n")
    with pytest.raises(ValueError, match="line 2 is blank"):
        sample_sit.main(
            sample_sit.parse_args([*argv[:4], "--prompt_file", str(tmp_path / "blank.txt"), *argv[6:]])
        )
    (tmp_path / "one.txt").write_text("a photo\n")
    with pytest.raises(ValueError, match=r"sample 1 has prompt index 1, but .*one.txt holds 1 prompts"):
        evaluate_clip_score(out / "samples.npz", tmp_path / "one.txt", clip)


def test_clip_score_equals_a_hand_computation(tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    from d2c_hf.evaluation import CLIPScore

    folder = save_tiny_clip(tmp_path / "clip", seed=1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    prompts = ["a thick seven", "a thin, left-slanted one", "zero", "x" * 200, "a photo of a two"]
    scorer = CLIPScore.from_pretrained(folder, batch_size=2)
    got = scorer.scores(images, prompts)

    # by hand: CLIP's own logits_per_image are logit_scale * cos for every (image, prompt) pair
    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    inputs = processor(
        text=prompts, images=list(images), return_tensors="pt", padding=True, truncation=True, max_length=20
    )
    with torch.no_grad():
        logits = model(**inputs).logits_per_image.double()
    cosine = torch.diagonal(logits).numpy() / float(model.logit_scale.detach().exp())
    np.testing.assert_allclose(got, 100.0 * np.maximum(cosine, 0.0), rtol=1e-5, atol=1e-4)
    assert (got >= 0).all() and len(set(np.round(got, 6))) > 1
    result = scorer(images, prompts)
    assert result["clip_score"] == pytest.approx(got.mean()) and result["clip_model"]["class"] == "CLIPModel"
    with pytest.raises(ValueError, match="got 5 images but 4 prompts"):
        scorer.scores(images, prompts[:4])
    with pytest.raises(TypeError, match="not a single string"):
        scorer.scores(images[:1], "a seven")


def test_a_clip_model_argument_of_another_kind_is_refused_in_one_line(tmp_path, local_hub, capsys):
    """`--clip_model` given a DiT pipeline or a T5 encoder is named for what it holds before the samples are read;
    a CLIP folder passes the same check."""
    from d2c_hf.cli import main as cli_main
    from d2c_hf.utils.roles import check_model_role

    check_model_role(save_tiny_clip(tmp_path / "clip"), "clip_model")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a seven\n")
    capsys.readouterr()  # the tiny model's save progress bars
    for other, holds in ((local_hub.dit, "a DiTPipeline pipeline"), (local_hub.t5, "a T5EncoderModel")):
        argv = [
            "clip-score",
            str(tmp_path / "missing.npz"),
            "--prompt_file",
            str(prompts),
            "--clip_model",
            str(other),
        ]
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--clip_model: {other} holds {holds}" in err, err
        assert "expected a transformers CLIPModel folder" in err, err
