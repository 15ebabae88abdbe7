"""Our FID Inception-v3 against an independent implementation: torch-fidelity's.

torch-fidelity (Apache-2.0; the extractor torchmetrics uses) defines the whole FID network in one
module, ``torch_fidelity/feature_extractor_inceptionv3.py``, plus the TF1-exact bilinear resize in
``interpolate_compat_tensorflow.py``; neither imports torchvision. Its package ``__init__`` does
(CLIP/VGG/DINOv2 extractors, datasets), and torchvision cannot be installed beside this torch, so it
is installed with ``pip install --no-deps torch-fidelity`` (``make test`` does) and only those modules
are imported here, with ``torchvision`` blocked in ``sys.modules`` to prove they never touch it.
(pytorch-fid was not usable: its network subclasses torchvision's Inception blocks, so stubbing
torchvision would leave no independent network to compare with.)

Both networks load the same state dict from one file (random values, or the real weights when
``D2C_INCEPTION_WEIGHTS`` names them: the same code path) and see the same uint8 images, at 299x299
and at other sizes (the TF1 resize path).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import numpy as np
import pytest
import torch

from d2c_hf.evaluation import InceptionV3FeatureExtractor
from d2c_hf.evaluation.inception import resize_bilinear_tf1
from helpers_inception import random_inception_state_dict

TOLERANCE = 1e-4  # max abs difference of pool features (float32)


@pytest.fixture(scope="module")
def torch_fidelity():
    """torch-fidelity's network and resize modules, imported without the package ``__init__``."""
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
        pytest.skip(
            "torch-fidelity is not installed: pip install --no-deps torch-fidelity==0.4.0 (make test does)"
        )
    saved = {name: sys.modules.get(name) for name in ("torch_fidelity", "torchvision")}
    package = types.ModuleType("torch_fidelity")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["torch_fidelity"] = package
    sys.modules["torchvision"] = None  # any `import torchvision` now raises ImportError
    try:
        network = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
        resize = importlib.import_module("torch_fidelity.interpolate_compat_tensorflow")
        yield types.SimpleNamespace(
            Inception=network.FeatureExtractorInceptionV3,
            resize=resize.interpolate_bilinear_2d_like_tensorflow1x,
        )
    finally:
        for name in [n for n in sys.modules if n.startswith("torch_fidelity.")]:
            del sys.modules[name]
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@pytest.fixture
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(params=["random", "real"], scope="module")
def weights_file(request, tmp_path_factory):
    if request.param == "real":
        path = os.environ.get("D2C_INCEPTION_WEIGHTS")
        if not path:
            pytest.skip("set D2C_INCEPTION_WEIGHTS to the real weights file to compare with it too")
        return path
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(random_inception_state_dict(seed=3), path)
    return path


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (256, 256), (300, 512), (17, 299), (299, 299)])
def test_tf1_resize_matches_torch_fidelity(torch_fidelity, size):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0)) * 255
    ours = resize_bilinear_tf1(x, (299, 299))
    theirs = torch_fidelity.resize(x, size=(299, 299), align_corners=False)
    assert ours.shape == theirs.shape == (2, 3, 299, 299)
    assert (ours - theirs).abs().max().item() <= 1e-3  # values in 0..255: ~6 significant digits of float32


def test_network_matches_torch_fidelity_on_the_same_weights(torch_fidelity, weights_file, single_thread):
    ours = InceptionV3FeatureExtractor.from_pretrained(weights_file, device="cpu", batch_size=4)
    theirs = torch_fidelity.Inception(
        "inception-v3-compat",
        ["2048", "logits_unbiased", "logits"],
        feature_extractor_weights_path=str(weights_file),
    )
    spatial = []  # the ADM evaluator's sFID tensor mixed_6/conv = Mixed_6d.branch1x1 (torch-fidelity's mapping)
    theirs.Mixed_6d.branch1x1.register_forward_hook(lambda module, args, out: spatial.append(out))
    rng = np.random.default_rng(0)
    batches = [
        rng.integers(0, 256, size=(2, 299, 299, 3), dtype=np.uint8),  # no resize
        rng.integers(0, 256, size=(1, 64, 48, 3), dtype=np.uint8),
    ]  # TF1 bilinear upsampling, non-square
    for images in batches:
        got = ours.extract(images, ("pool", "spatial", "logits_unbiased", "logits"))
        spatial.clear()
        with torch.no_grad():
            pool, logits_unbiased, logits = theirs(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
        scale = float(pool.abs().max())
        assert scale > 1.0  # the features are not trivially small
        assert np.abs(got["pool"] - pool.numpy()).max() <= TOLERANCE, images.shape
        for name, value in (("logits_unbiased", logits_unbiased), ("logits", logits)):
            np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-5, atol=TOLERANCE, err_msg=name)
        expected_spatial = spatial[0][:, :7].permute(0, 2, 3, 1).flatten(1).numpy()
        np.testing.assert_allclose(got["spatial"], expected_spatial, rtol=1e-5, atol=TOLERANCE)
