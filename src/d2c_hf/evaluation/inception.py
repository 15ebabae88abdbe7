"""The FID Inception-v3 network (TensorFlow ``inception-2015-12-05`` graph) in plain torch.

This is the network behind every published FID: the TF graph ``classify_image_graph_def.pb``
read by the ADM evaluator, TTUR and the original IS code, ported to PyTorch by pytorch-fid
(``pt_inception-2015-12-05-6726825d.pth``) and torch-fidelity
(``weights-inception-2015-12-05-6726825d.pth``, used by torchmetrics). Both files share one
key layout (torchvision's ``Inception3`` names, no ``AuxLogits``, a 1008-way ``fc``), which
:class:`FIDInceptionV3` reproduces so that either loads strictly. It is written here because
torchvision is not a dependency; the architecture follows the public descriptions (Szegedy et
al. 2016 and the ports above), with the graph's quirks:

* batch norm ``eps = 1e-3``; convolutions without bias;
* the 3x3 average pools inside the InceptionA/C/E blocks exclude the zero padding from the
  average (``count_include_pad=False``, TF's behaviour);
* the last block (``Mixed_7c``) pools its ``branch_pool`` with a 3x3 **max** pool;
* inputs are resized to 299x299 with TF1's legacy bilinear resize (``align_corners=False``,
  no half-pixel offset) and normalised as ``(x - 128) / 128`` from the 0..255 range.

Numerical parity with the TF graph could not be verified offline (neither the weights nor
TensorFlow are available here): the tests check the key layout, shapes, parameter count and
the preprocessing against known answers, with random weights.

No weights are downloaded: :meth:`InceptionV3FeatureExtractor.from_pretrained` reads a local
file with ``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils.hub import resolve_device
from .images import ImagesArg, to_uint8_images

logger = logging.getLogger(__name__)

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's softmax has 1008 outputs (1000 ImageNet classes + unused)
SPATIAL_CHANNELS = 7  # sFID: the first 7 channels of mixed_6/conv (Mixed_6d.branch1x1), 17x17 grid
# SHA-256 of torch-fidelity's weights-inception-2015-12-05-6726825d.pth as reported publicly;
# its first 8 hex digits are the file name's suffix (torch.hub naming convention).
TORCH_FIDELITY_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHT_FILE_NAMES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")


# --------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------


class ConvBN(nn.Module):
    """Convolution (no bias) -> batch norm (eps 1e-3) -> ReLU; keys ``conv.weight``, ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # TF averages over the valid (unpadded) window only.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (``Mixed_5b``-``5d``): 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b5, b3, bp], dim=1)


class InceptionB(nn.Module):
    """35->17 reduction (``Mixed_6a``): 3x3/2 | 1x1->3x3->3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        b3d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b3d, bp], dim=1)


class InceptionC(nn.Module):
    """17x17 block (``Mixed_6b``-``6e``) with factorised 1x7/7x1 convolutions."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7d = layer(b7d)
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b7, b7d, bp], dim=1)


class InceptionD(nn.Module):
    """17->8 reduction (``Mixed_7a``)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], dim=1)


class InceptionE(nn.Module):
    """8x8 block (``Mixed_7b``, ``Mixed_7c``) with split 1x3/3x1 outputs.

    ``pool="avg"`` for ``Mixed_7b``; the FID graph's ``Mixed_7c`` uses ``pool="max"``.
    """

    def __init__(self, in_channels: int, pool: Literal["avg", "max"]):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], dim=1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_3x3(x)
        return torch.cat([b1, b3, b3d, self.branch_pool(pooled)], dim=1)


def tf1_bilinear_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """``(out_size, in_size)`` interpolation matrix of TF1's legacy bilinear resize.

    TF1 ``resize_bilinear(align_corners=False)`` samples output pixel ``i`` at source
    coordinate ``s = i * in_size / out_size`` (no half-pixel offset, unlike PyTorch's
    ``align_corners=False``) and interpolates between ``floor(s)`` and
    ``min(floor(s) + 1, in_size - 1)``. Coordinates are computed in float32 like TF.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.arange(out_size, dtype=np.float32) * scale
    lower = np.floor(src).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    frac = (src - lower).astype(np.float64)
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lower), 1.0 - frac)
    np.add.at(matrix, (rows, upper), frac)
    return torch.from_numpy(matrix)


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` float images like TF1 ``resize_bilinear(align_corners=False)``."""
    rows = tf1_bilinear_matrix(x.shape[-2], size[0]).to(x.device, x.dtype)
    cols = tf1_bilinear_matrix(x.shape[-1], size[1]).to(x.device, x.dtype)
    return torch.einsum("oh,bchw,pw->bcop", rows, x, cols)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as in the FID TF graph; state-dict keys match the public ``.pth`` ports.

    Input: ``(B, 3, H, W)`` float RGB in ``0..255`` (any size; resized to 299x299). Output of
    :meth:`forward`: a dict with

    * ``"pool"``: ``(B, 2048)`` pool3 features (FID, KID, precision/recall);
    * ``"spatial"``: ``(B, 2023)`` = first 7 channels of ``Mixed_6d.branch1x1`` (the graph's
      ``mixed_6/conv``) on the 17x17 grid, flattened channels-last (sFID, as in the ADM evaluator);
    * ``"logits_unbiased"``: ``(B, 1008)`` = ``pool @ fc.weight.T`` (IS, as the TF code computes it);
    * ``"logits"``: ``(B, 1008)`` with the fc bias;

    the logits only when ``num_classes`` is set.

    Args:
        num_classes: outputs of ``fc`` (1008 in the public weights) or ``None`` for no ``fc``.
        preprocessing: ``"tensorflow"`` (TF1 bilinear resize, ``(x - 128) / 128``: the graph,
            ADM evaluator, torch-fidelity, torchmetrics) or ``"pytorch-fid"``
            (``F.interpolate(bilinear, align_corners=False)``, ``x / 127.5 - 1``).
    """

    def __init__(
        self,
        num_classes: int | None = NUM_CLASSES,
        preprocessing: Literal["tensorflow", "pytorch-fid"] = "tensorflow",
    ):
        super().__init__()
        if preprocessing not in ("tensorflow", "pytorch-fid"):
            raise ValueError(f"preprocessing must be 'tensorflow' or 'pytorch-fid', got {preprocessing!r}")
        self.preprocessing = preprocessing
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, num_classes) if num_classes else None

    @property
    def has_logits(self) -> bool:
        return self.fc is not None

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float in ``0..255`` -> ``(B, 3, 299, 299)`` in about ``[-1, 1]``."""
        size = (INPUT_SIZE, INPUT_SIZE)
        if self.preprocessing == "tensorflow":
            if tuple(x.shape[-2:]) != size:
                x = resize_bilinear_tf1(x, size)
            return (x - 128.0) / 128.0
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x / 127.5 - 1.0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(x.shape)}")
        x = self.preprocess(x.to(self.Conv2d_1a_3x3.conv.weight.dtype))
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # 64 x 73 x 73
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # 192 x 35 x 35
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))
        x = self.Mixed_6d(x)  # 768 x 17 x 17; its first 192 channels are branch1x1 (mixed_6/conv)
        spatial = x[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(self.Mixed_6e(x))))  # 2048 x 8 x 8
        pool = x.mean(dim=(2, 3))
        out = {"pool": pool, "spatial": spatial}
        if self.fc is not None:
            out["logits_unbiased"] = pool @ self.fc.weight.T
            out["logits"] = out["logits_unbiased"] + self.fc.bias
        return out


# --------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------


def expected_state_dict_shapes(num_classes: int | None = NUM_CLASSES) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the weights file (``num_batches_tracked`` buffers are optional)."""
    with torch.device("meta"):
        model = FIDInceptionV3(num_classes=num_classes)
    return {
        key: tuple(value.shape)
        for key, value in model.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"could not read {path} with torch.load(weights_only=True): {err}. Expected a state dict of "
            f"tensors such as {WEIGHT_FILE_NAMES[0]} (torch-fidelity) or {WEIGHT_FILE_NAMES[1]} (pytorch-fid)."
        ) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    return state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_keys(state: dict[str, torch.Tensor], path: Path) -> int | None:
    """Compare with the expected layout; returns ``num_classes`` (``None`` without ``fc``)."""
    num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else None
    expected = expected_state_dict_shapes(num_classes)
    present = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(present))
    unexpected = sorted(set(present) - set(expected))
    wrong = sorted(k for k in set(expected) & set(present) if expected[k] != present[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} shape mismatches (first: {k} is {present[k]}, expected {expected[k]})"
            )
        raise ValueError(
            f"{path} is not an FID Inception-v3 state dict: {'; '.join(parts)}. Use "
            f"{WEIGHT_FILE_NAMES[0]} (torch-fidelity) or {WEIGHT_FILE_NAMES[1]} (pytorch-fid)."
        )
    return num_classes


class InceptionV3FeatureExtractor:
    """Images -> FID Inception-v3 features, from a local weights file (never downloads).

    Call it on any image batch accepted by :func:`to_uint8_images` to get ``(N, 2048)``
    float32 pool3 features; :meth:`logits` gives the IS logits and :meth:`extract` any subset
    of ``("pool", "spatial", "logits_unbiased", "logits")``.

    Use :meth:`from_pretrained`; the constructor wraps an already built :class:`FIDInceptionV3`.
    """

    feature_dim = FEATURE_DIM

    def __init__(self, model: FIDInceptionV3, batch_size: int = 50, provenance: dict[str, Any] | None = None):
        self.model = model.eval().requires_grad_(False)
        self.batch_size = batch_size
        self.provenance = provenance or {}

    @classmethod
    def from_pretrained(
        cls,
        weights_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        preprocessing: Literal["tensorflow", "pytorch-fid"] = "tensorflow",
        batch_size: int = 50,
    ) -> InceptionV3FeatureExtractor:
        """Load the FID Inception-v3 from a local ``.pth`` or ``.safetensors`` file.

        Obtain ``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity release v0.2.0) or
        ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid release ``fid_weights``) on a
        machine with internet access and copy it here (see docs/evaluation.md). The file is
        read with ``torch.load(weights_only=True)`` and checked key by key (names and shapes)
        before loading; a file without ``fc.*`` gives features but no logits. Its SHA-256 is
        recorded in ``provenance``; when the file name carries a hash suffix
        (``name-<hex>.pth``, torch.hub's convention) a mismatch is logged as a warning.

        Args:
            weights_path: local file.
            device: ``None`` = CUDA if available, else MPS, else CPU.
            dtype: compute dtype (float32 is what published numbers use; float64 for checks).
            preprocessing: see :class:`FIDInceptionV3`.
            batch_size: images per forward pass.
        """
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Inception weights not found at {path}. Download {WEIGHT_FILE_NAMES[0]} (torch-fidelity) or "
                f"{WEIGHT_FILE_NAMES[1]} (pytorch-fid) on a machine with internet access and pass its local path; "
                "see docs/evaluation.md. Nothing is downloaded automatically."
            )
        state = _read_state_dict(path)
        num_classes = _check_keys(state, path)
        sha256 = _sha256(path)
        suffix = re.search(r"-([0-9a-f]{8,64})$", path.stem)
        if suffix and not sha256.startswith(suffix.group(1)):
            logger.warning(
                "%s: the file name says sha256 %s... but the file hashes to %s; it may be truncated or modified",
                path.name,
                suffix.group(1),
                sha256[:16],
            )
        if sha256 == TORCH_FIDELITY_SHA256:
            logger.info("%s: the standard FID Inception weights (sha256 %s...)", path.name, sha256[:16])
        with torch.device("meta"):
            model = FIDInceptionV3(num_classes=num_classes, preprocessing=preprocessing)
        state = dict(state)
        for key in model.state_dict():  # TF conversions carry no num_batches_tracked (unused in eval)
            if key.endswith("num_batches_tracked"):
                state.setdefault(key, torch.tensor(0, dtype=torch.long))
        model.load_state_dict(state, strict=True, assign=True)  # keys and shapes were checked above
        model.to(device=resolve_device(device), dtype=dtype)
        provenance = {"weights": str(path), "sha256": sha256, "preprocessing": preprocessing}
        return cls(model, batch_size=batch_size, provenance=provenance)

    @property
    def device(self) -> torch.device:
        return self.model.Conv2d_1a_3x3.conv.weight.device

    @torch.no_grad()
    def extract(
        self, images: ImagesArg, outputs: tuple[str, ...] = ("pool",), *, size: int | None = None
    ) -> dict[str, np.ndarray]:
        """Run the network on ``images`` (any :func:`to_uint8_images` input) in batches.

        Args:
            outputs: names from ``("pool", "spatial", "logits_unbiased", "logits")``.
            size: resize images to a common size first (only needed for mixed sizes).

        Returns:
            ``{name: (N, dim) float32 array}``.
        """
        allowed = ("pool", "spatial", "logits_unbiased", "logits")
        for name in outputs:
            if name not in allowed:
                raise ValueError(f"unknown output {name!r}; choose from {allowed}")
            if name.startswith("logits") and not self.model.has_logits:
                raise ValueError(
                    "these weights have no fc layer, so no logits; load a file that includes fc.*"
                )
        pixels = to_uint8_images(images, size=size)
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        for start in range(0, len(pixels), self.batch_size):
            batch = torch.from_numpy(pixels[start : start + self.batch_size]).to(self.device)
            result = self.model(batch.permute(0, 3, 1, 2).float())
            for name in outputs:
                chunks[name].append(result[name].float().cpu().numpy())
        return {name: np.concatenate(parts) for name, parts in chunks.items()}

    def __call__(self, images: ImagesArg) -> np.ndarray:
        """``(N, 2048)`` float32 pool3 features."""
        return self.extract(images, ("pool",))["pool"]

    def logits(self, images: ImagesArg, unbiased: bool = True) -> np.ndarray:
        """``(N, 1008)`` logits for :func:`inception_score`; ``unbiased`` omits the fc bias (the TF IS code)."""
        name = "logits_unbiased" if unbiased else "logits"
        return self.extract(images, (name,))[name]
