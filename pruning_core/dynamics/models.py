"""Proxy networks for training dynamics: a fast ResNet-9 for images, probes for embeddings.

The proxy only has to learn the *easy* structure of the data quickly so that its per-epoch
confidence separates clean from mislabelled samples; it does not have to be state of the art.
The DAWNBench ResNet-9 (Page, "How to train your ResNet") reaches ~94% on CIFAR-10 in a few
epochs and is the usual choice. On precomputed embeddings (CLIP) a linear or one-hidden-layer
probe plays the same role at a tiny fraction of the cost.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

ARCHS = ("resnet9", "mlp", "linear")


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """``x + f(x)``: two conv-bn-relu blocks with an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """DAWNBench ResNet-9: prep, layer1 (+res), layer2, layer3 (+res), global max pool, scaled linear.

    ``width`` is the prep channel count (64 in the original; 128/256/512 follow as 2w/4w/8w).
    The final logits are multiplied by ``scale`` (0.125 in the original) which keeps the initial
    softmax soft and lets a high learning rate be used without a warm-up blow-up.
    Works for any input size >= 8 px: the head pools adaptively.
    """

    def __init__(self, num_classes: int, width: int, in_channels: int = 3, scale: float = 0.125) -> None:
        super().__init__()
        w = int(width)
        self.scale = float(scale)
        self.prep = _conv_bn(in_channels, w)
        self.layer1 = nn.Sequential(_conv_bn(w, 2 * w), nn.MaxPool2d(2), Residual(2 * w))
        self.layer2 = nn.Sequential(_conv_bn(2 * w, 4 * w), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(_conv_bn(4 * w, 8 * w), nn.MaxPool2d(2), Residual(8 * w))
        self.fc = nn.Linear(8 * w, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        # Global max pool as amax: AdaptiveMaxPool2d's CUDA backward has no deterministic kernel.
        x = x.amax(dim=(2, 3))
        # The head runs in fp32 even under autocast: recorded margins and losses are not bf16-rounded.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.fc(x.float()) * self.scale


def folded_for_eval(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm folded into the convolution before it.

    In eval mode a BatchNorm is a fixed per-channel affine map, so folding it into the convolution's
    weights and bias gives the same function (up to float rounding) with one pass over the activations
    fewer: the recording run's evaluation of 50,000 images at 24 px on 2 cores takes a fifth
    less time (docs/benchmarks.md, "The recording run's evaluation").  ``model`` itself is untouched, so
    training goes on with its BatchNorm layers.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if (isinstance(block, nn.Sequential) and len(block) >= 2 and isinstance(block[0], nn.Conv2d)
                and isinstance(block[1], nn.BatchNorm2d)):
            block[0] = fuse_conv_bn_eval(block[0], block[1])
            block[1] = nn.Identity()
    return folded


PROBE_HIDDEN = 512
"""Hidden units of the MLP probe on embeddings (as wide as a CLIP ViT-B embedding)."""


class MLPProbe(nn.Module):
    """One hidden layer (LayerNorm + GELU + dropout) on embeddings; ``hidden=0`` gives a linear probe."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = PROBE_HIDDEN, dropout: float = 0.1) -> None:
        super().__init__()
        if hidden and hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden),
                nn.LayerNorm(hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        else:
            self.net = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


ACTIVATION_BYTES = {"fp32": 66, "bf16": 37, "fp16": 37}
"""Bytes ResNet-9 saves for its backward pass per sample and per ``width x H x W``, by precision: measured
with ``torch.autograd.graph.saved_tensors_hooks`` on CPU (65.5 fp32, 36.3 bf16 at width 64 and 32 px; the
test keeps the table honest)."""

WORKING_SET_FACTOR = 2.0
"""Peak over saved activations: the backward pass holds gradients of about their size, plus allocator slack."""


def training_working_bytes(arch: str, *, batch_size: int, width: int, image_size: int,
                           in_dim: int = 512, num_classes: int = 10, hidden: int = PROBE_HIDDEN,
                           precision: str = "fp32") -> int:
    """Device memory one training step needs besides the data: activations, weights, gradients, optimiser state.

    An estimate for placing data (``DevicePolicy.data_on_device``) and for the plan; ``bench/bench_gpu.py``
    compares it with the peak a GPU reports.
    """
    if arch == "resnet9":
        w = int(width)
        params = 27 * w + 9 * (2 * w * w + 2 * (2 * w) ** 2 + 8 * w * w + 32 * w * w + 2 * (8 * w) ** 2) + 8 * w * num_classes
        activations = ACTIVATION_BYTES[precision] * w * image_size * image_size * batch_size
    else:
        params = in_dim * hidden + hidden * num_classes if arch == "mlp" else in_dim * num_classes
        activations = 4 * batch_size * (in_dim + 3 * hidden + num_classes)
    # weights, gradients and the optimiser's one or two state tensors, in fp32
    return int(WORKING_SET_FACTOR * activations + 4 * 4 * params)


def build_model(
    arch: str,
    num_classes: int,
    in_dim: Optional[int] = None,
    *,
    width: int,
    hidden: int = PROBE_HIDDEN,
) -> nn.Module:
    """Build a proxy network.

    Args:
        arch: ``"resnet9"`` (images, NCHW float input), ``"mlp"`` or ``"linear"`` (embeddings (N, D)).
        num_classes: number of output logits.
        in_dim: embedding dimension; required for ``mlp`` / ``linear``, ignored for ``resnet9``.
        width: ResNet-9 base width (64 = original; 16-32 is enough on small CPU runs).
        hidden: hidden units of the MLP probe.
    """
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    if arch == "resnet9":
        return ResNet9(num_classes, width=width)
    if arch in ("mlp", "linear"):
        if in_dim is None:
            raise ValueError(f"arch={arch!r} needs in_dim (the embedding dimension)")
        return MLPProbe(int(in_dim), num_classes, hidden=hidden if arch == "mlp" else 0)
    raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
