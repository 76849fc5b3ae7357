"""What every caption source (synthetic generator, Flickr8k, Karpathy JSON) hands to `prepare`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")
# Karpathy's Flickr8k split, 6000/1000/1000 of 8000, applied as fractions to any size
SPLIT_FRACTIONS = (0.75, 0.125, 0.125)


@dataclass
class SourceImage:
    image_id: str  # unique within the dataset; the file name for Flickr8k, the path for COCO
    split: str  # one of SPLITS
    captions: list[str]  # raw text; tokenised later by shared_data.text.tokenize, the same for all sources
    path: Path  # the image file
    objects: dict | None = None  # ground truth (objects, background), synthetic dataset only


@dataclass
class Source:
    name: str  # "synthetic", "flickr8k", "karpathy-coco", ...
    images: list[SourceImage]
    warnings: list[str] = field(default_factory=list)  # counted, reported, never silent
    info: dict = field(default_factory=dict)  # recorded in the manifest (paths, seeds, split rule)
