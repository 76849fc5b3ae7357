"""Feature extractors by name. Frameworks are imported only when an extractor is built."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from shared_data.errors import UserError
from shared_data.features import ExtractFn


@dataclass(frozen=True)
class ExtractorSpec:
    name: str
    framework: str  # "numpy", "torch" or "keras": what `build` imports
    image_size: int  # images are resized to this square before extraction
    builder: str  # "module:function"; the function takes `weights` and returns an ExtractFn
    description: str
    needs_weights: bool = True

    def build(self, weights: str = "imagenet") -> ExtractFn:
        module, func = self.builder.split(":")
        fn = getattr(importlib.import_module(module), func)
        return fn(weights) if self.needs_weights else fn


EXTRACTORS = {s.name: s for s in [
    ExtractorSpec("grid", "numpy", 128, "shared_data.grid:extract",
                  "offline default: colour + edge-orientation histograms on an 8x8 grid; "
                  "global 192, spatial 64x32", needs_weights=False),
    ExtractorSpec("synthnet", "torch", 128, "backends.torch.synthnet:synthnet",
                  "small CNN pretrained on generated shapes (the embedded dataset's ImageNet stand-in); "
                  "global 192, spatial 64x96"),
    ExtractorSpec("vgg16_fc2", "keras", 224, "backends.keras.extractors:vgg16_fc2",
                  "Keras VGG16 fc2 (the Kaggle Keras recipe); global 4096, no spatial"),
    ExtractorSpec("resnet101", "torch", 256, "backends.torch.extractors:resnet101",
                  "ResNet-101 pooled to 14x14 (Show, Attend and Tell); global 2048, spatial 196x2048"),
    ExtractorSpec("regnetx400mf", "torch", 124, "backends.torch.extractors:regnetx400mf",
                  "RegNetX-400MF at 124px (seed 004); global 400, spatial 16x400"),
]}
DEFAULT_EXTRACTOR = "grid"  # offline and framework-free: works on any images


def default_extractor(dataset: str) -> str:
    """synthnet on the embedded dataset (its pretrained-CNN stand-in), grid elsewhere."""
    return "synthnet" if dataset == "synthetic" else DEFAULT_EXTRACTOR


def get_extractor(name: str) -> ExtractorSpec:
    if name not in EXTRACTORS:
        raise UserError(f"unknown extractor '{name}'; choose one of: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name]
