"""PyTorch CNN feature extractors: ResNet-101 and RegNetX-400MF trunks for the captioning models.

The architectures are written out here in plain torch.nn instead of being imported from torchvision:
torchvision's PyPI wheel is built against CUDA torch and fails to import next to the CPU torch this
project pins ("operator torchvision::nms does not exist"). The definitions mirror torchvision's module
layout, so their `state_dict()` keys and shapes are exactly torchvision's and the ImageNet checkpoints
torchvision keeps in its cache (`$TORCH_HOME/hub/checkpoints/`) load unchanged. Only the convolutional
trunk is built; the classifier (`fc.*`) keys in those checkpoints are dropped on load.

`resnet101(weights)` / `regnetx400mf(weights)` return an extractor: uint8 RGB images [B, H, W, 3] of any
size in, (global [B, D], spatial [B, P, C]) float32 out.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared_data.dataset_format import sha256_file
from shared_data.errors import UserError

_URL_BASE = "https://download.pytorch.org/models/"
# torchvision's IMAGENET1K_V1 checkpoints; the hash suffix is part of the name torchvision caches under.
RESNET101_FILE = "resnet101-63fe2227.pth"
REGNETX400MF_FILE = "regnet_x_400mf-adf1edd5.pth"
_CLASSIFIER_PREFIX = "fc."

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


# --- ResNet-101 (torchvision's ResNet v1.5: the stride-2 sits on the 3x3 conv, not the first 1x1) ---


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        # Only blocks that change shape get a projection; a None attribute adds no state_dict keys.
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet101Trunk(nn.Module):
    """torchvision.models.resnet101 without avgpool/fc: [B, 3, H, W] -> [B, 2048, H/32, W/32]."""

    def __init__(self, blocks: tuple[int, ...] = (3, 4, 23, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True), start=1):
            stride = 1 if i == 1 else 2
            layers = [
                Bottleneck(c_in if j == 0 else width * 4, width, stride if j == 0 else 1) for j in range(n)
            ]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            c_in = width * 4
        self.out_channels = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# --- RegNetX-400MF (torchvision's regnet_x_400mf: AnyNet stages of X blocks, no squeeze-excitation) ---


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True):
    # Same child order as torchvision's Conv2dNormActivation, which yields the "0."/"1." key prefixes.
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class XBlock(nn.Module):
    """torchvision's ResBottleneckBlock with bottleneck multiplier 1.0 and no SE: inner width == out width."""

    def __init__(self, c_in: int, c_out: int, stride: int, group_width: int) -> None:
        super().__init__()
        self.proj = _conv_bn(c_in, c_out, 1, stride, relu=False) if c_in != c_out or stride != 1 else None
        self.f = nn.Sequential(
            OrderedDict(
                a=_conv_bn(c_in, c_out, 1),
                b=_conv_bn(c_out, c_out, 3, stride, groups=c_out // group_width),
                c=_conv_bn(c_out, c_out, 1, relu=False),
            )
        )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.proj is None else self.proj(x)
        return self.activation(shortcut + self.f(x))


def regnet_stages(
    depth: int, w_0: int, w_a: float, w_m: float, group_width: int
) -> list[tuple[int, int, int]]:
    """(width, depth, group width) per stage, quantised as torchvision's BlockParams.from_init_params.

    Kept in float32 torch arithmetic like torchvision's, since a rounding boundary computed differently
    would change a stage width and with it every checkpoint shape.
    """
    widths_cont = torch.arange(depth) * w_a + w_0
    capacity = torch.round(torch.log(widths_cont / w_0) / math.log(w_m))
    block_widths = (torch.round(torch.divide(w_0 * torch.pow(w_m, capacity), 8)) * 8).int().tolist()
    stages = []
    for width, run in groupby(block_widths):
        # Make the width a multiple of the group width (torchvision's _make_divisible, multiplier 1.0).
        g = min(group_width, width)
        fitted = max(g, int(width + g / 2) // g * g)
        if fitted < 0.9 * width:
            fitted += g
        stages.append((fitted, len(list(run)), g))
    return stages


class RegNetX400MFTrunk(nn.Module):
    """torchvision.models.regnet_x_400mf without avgpool/fc: [B, 3, H, W] -> [B, 400, H/32, W/32]."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 32, 3, 2)
        c_in, stages = 32, OrderedDict()
        for i, (width, n, group_width) in enumerate(regnet_stages(22, 24, 24.48, 2.54, 16), start=1):
            blocks = OrderedDict(
                (f"block{i}-{j}", XBlock(c_in if j == 0 else width, width, 2 if j == 0 else 1, group_width))
                for j in range(n)
            )
            stages[f"block{i}"] = nn.Sequential(blocks)
            c_in = width
        self.trunk_output = nn.Sequential(stages)
        self.out_channels = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk_output(self.stem(x))


# --- weights ---


def _load_weights(model: nn.Module, weights: str, file_name: str, arch: str) -> str:
    """Fill `model` from "imagenet" (torchvision's cache), "none" (already seeded init) or a .pth path;
    returns the weights' sha256 ("none" for the seeded init), which the manifest records."""
    if weights == "none":
        return "none"
    if weights == "imagenet":
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        path = cache / file_name
        if not path.is_file():
            raise UserError(
                f"{arch} ImageNet weights not found: put {file_name} (torchvision downloads it from "
                f"{_URL_BASE}{file_name}) in {cache}/, or pass --weights none for random weights "
                "(testing only)"
            )
    else:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"{arch} weights file {path} does not exist (use imagenet, none or a .pth path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises a zoo of types for corrupt / non-torch files
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{arch} weights file {path} is not a readable torch state dict: {why}") from e
    if not isinstance(state, dict):
        raise UserError(f"{arch} weights file {path} holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIX)}
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and getattr(v, "shape", None) != expected[k].shape
    ]
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise UserError(f"{arch} weights file {path} does not fit {arch} ({len(problems)} problems): {shown}")
    model.load_state_dict(state)
    return sha256_file(path)


# --- extraction ---


class TorchExtractor:
    """Callable: uint8 [B, H, W, 3] RGB -> (global [B, C] float32, spatial [B, P, C] float32)."""

    def __init__(self, model: nn.Module, size: int, grid: int | None, weights_sha256: str) -> None:
        self.weights_sha256 = weights_sha256  # recorded in the manifest: which weights made the features
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.size = size
        # None keeps the trunk's own grid (RegNet at 124 px gives 4x4); an int pools to grid x grid.
        self.pool = nn.AdaptiveAvgPool2d((grid, grid)) if grid else nn.Identity()
        self.mean = torch.tensor(_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(_STD, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images [B, H, W, 3], got {images.dtype} {images.shape}")
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        # Antialiasing matters only when shrinking large photos; it approximates PIL's resize there.
        x = F.interpolate(
            x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
        )
        return (x - self.mean) / self.std

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            fmap = self.pool(self.model(self.preprocess(images)))  # [B, C, h, w]
            spatial = fmap.flatten(2).transpose(1, 2)  # [B, h*w, C]
            global_ = spatial.mean(dim=1)
        return global_.float().cpu().numpy(), spatial.float().cpu().numpy()


def resnet101(weights: str) -> TorchExtractor:
    """Show, Attend and Tell encoder: 256x256 input, pooled to 14x14 -> ([B, 2048], [B, 196, 2048])."""
    torch.manual_seed(0)
    model = ResNet101Trunk()
    digest = _load_weights(model, weights, RESNET101_FILE, "resnet101")
    return TorchExtractor(model, size=256, grid=14, weights_sha256=digest)


def regnetx400mf(weights: str) -> TorchExtractor:
    """CS231n-style encoder: 124x124 input, native 4x4 grid -> ([B, 400], [B, 16, 400])."""
    torch.manual_seed(0)
    model = RegNetX400MFTrunk()
    digest = _load_weights(model, weights, REGNETX400MF_FILE, "regnetx400mf")
    return TorchExtractor(model, size=124, grid=None, weights_sha256=digest)
