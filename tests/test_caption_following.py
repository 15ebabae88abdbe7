"""CaptionFollowing (the text demo's metric) on real captioned digits, with known answers: each caption's own image
follows it; a random image of the right digit follows the digit only (style words at chance)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from d2c_hf.evaluation import DigitsFeatureExtractor
from d2c_hf.evaluation.caption_following import CaptionFollowing


@pytest.fixture(scope="module")
def setting():
    from d2c_hf.data.captions import load_captioned_digits

    digits = load_captioned_digits(image_size=16)
    reference = digits["test"].select(range(180))
    extractor = DigitsFeatureExtractor(max_iter=200).fit(digits["train"]["image"], digits["train"]["label"])
    following = CaptionFollowing(reference, extractor=extractor, image_size=16, num_inference_steps=2, seed=0)
    return digits, reference, following


def test_real_images_frame_the_metric(setting):
    digits, _, following = setting
    scores = following.reference_scores(digits["train"], seed=0)
    own, style_free = scores["captioned images"], scores["right digit, random style"]
    # the captions were computed from these very images (stored as float32: a tertile edge may flip)
    assert own["weight_accuracy"] > 0.98 and own["slant_accuracy"] > 0.98
    assert own["ink_correlation"] > 0.999 and own["slant_correlation"] > 0.999 and own["fd"] < 1e-6
    # the right digit in a random style: the style words at chance (1/3), no within-class correlation
    assert style_free["class_accuracy"] > 0.9
    assert 0.2 < style_free["weight_accuracy"] < 0.47 and 0.2 < style_free["slant_accuracy"] < 0.47
    assert abs(style_free["ink_correlation"]) < 0.2 and abs(style_free["slant_correlation"]) < 0.2
    assert style_free["caption_accuracy"] < 0.25 < own["caption_accuracy"]


def test_sample_asks_the_pipeline_for_every_caption_in_order(setting):
    _, reference, following = setting
    lookup = {}
    for text, image in zip(reference["text"], reference["image"]):
        lookup.setdefault(text, np.asarray(image.convert("RGB"), np.float32) / 255.0)
    calls = []

    def pipeline(*, prompt, num_inference_steps, guidance_scale, generator, output_type):
        calls.append((len(prompt), num_inference_steps, output_type))
        return SimpleNamespace(images=np.stack([lookup[p] for p in prompt]))

    following.batch_size = 64
    scores = following(pipeline)
    assert calls == [(64, 2, "np"), (64, 2, "np"), (52, 2, "np")]
    # captions shared by several rows get the first row's image: still the right digit and mostly the right style
    assert scores["class_accuracy"] > 0.9 and scores["weight_accuracy"] > 0.6
    with pytest.raises(ValueError, match="got 3 images for 180 prompts"):
        following.score_images(np.zeros((3, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"the reference split lacks \['ink', 'slant'\]"):
        CaptionFollowing(
            reference.remove_columns(["ink", "slant"]),
            extractor=following.extractor,
            image_size=16,
            num_inference_steps=1,
        )
