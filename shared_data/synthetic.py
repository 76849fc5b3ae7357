"""The embedded dataset: procedurally generated, Flickr8k-shaped scenes with five captions each.

Every image is a function of (seed, index) alone: image i is drawn from
`np.random.default_rng([seed, i])`, so the small size is a prefix of the full one and any image can
be regenerated on its own. A scene holds 1-4 objects (12 shapes, 11 colours, 3 sizes) placed
anywhere on a textured background, sometimes overlapping (drawing order decides who is in front),
with clutter strokes that are never objects. Captions come from a grammar with synonyms, several
sentence structures and optional detail (sizes, positions, pairwise relations, the background), so
that the five captions of an image differ the way Flickr8k's do and the vocabulary is well over 150
words. A first trial with 5 shapes and 6 colours saturated BLEU; this one is meant not to.

Ground truth (shape, colour, size, centre, bounding box, depth order) is kept for grounded scoring;
`LEXICON` maps every surface word back to its canonical attribute for that purpose.

Modules: shared_data.synthetic_scene (the scene and its sampling), shared_data.synthetic_render
(the image and label map), shared_data.synthetic_captions (the grammar and the lexicon); this one
makes the dataset from them: one scene, image and five captions per index, the JPEGs and the Source.
"""

from __future__ import annotations

import os
import signal
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from shared_data import files
from shared_data.sources import SPLIT_FRACTIONS, Source, SourceImage
from shared_data.synthetic_captions import captions_for
from shared_data.synthetic_render import render_image
from shared_data.synthetic_scene import IMAGE_SIZE, Scene, sample_scene

SIZES = {"full": 8000, "small": 400}


def generate_scene(seed: int, index: int) -> tuple[Scene, list[str]]:
    """Scene and five captions for one index; a pure function of (seed, index)."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng)
    return scene, captions_for(scene, rng)


def generate_image(seed: int, index: int) -> tuple[Image.Image, Scene, list[str]]:
    scene, captions = generate_scene(seed, index)
    return render_image(scene, seed, index), scene, captions


def split_of(index: int, n_images: int) -> str:
    n_train = round(n_images * SPLIT_FRACTIONS[0])
    n_val = round(n_images * SPLIT_FRACTIONS[1])
    return "train" if index < n_train else "val" if index < n_train + n_val else "test"


def image_id(index: int) -> str:
    return f"synth_{index:05d}.jpg"


def _write_one(args: tuple[Path, int, int]) -> None:
    out_dir, seed, index = args
    path = out_dir / image_id(index)
    if path.exists():  # written by an interrupted run: each file is complete (renamed into place)
        return
    scene, _ = generate_scene(seed, index)
    image = render_image(scene, seed, index)
    files.write_atomic(path, lambda tmp: image.save(tmp, format="JPEG", quality=92))


def _default_signals() -> None:
    """Pool workers inherit the CLI's SIGTERM handler, and Pool stops them with SIGTERM: without this
    every normal end of the pool printed a Terminated traceback per worker."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def build_source(image_dir: Path, n_images: int, seed: int = 0, workers: int | None = None) -> Source:
    """Write the JPEGs into image_dir (resumable) and return the captions, splits and objects."""
    image_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(image_dir, seed, i) for i in range(n_images)]
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers > 1:
        with Pool(workers, initializer=_default_signals) as pool:
            for _ in pool.imap_unordered(_write_one, jobs, chunksize=64):
                pass
    else:
        for job in jobs:
            _write_one(job)
    images = []
    for i in range(n_images):
        scene, captions = generate_scene(seed, i)
        objects = [o.to_json() for o in scene.objects]
        images.append(SourceImage(image_id(i), split_of(i, n_images), captions, image_dir / image_id(i),
                                  {"objects": objects, "background": scene.background, "tone": scene.tone}))
    info = {"seed": seed, "images": n_images, "image_size": IMAGE_SIZE,
            "split_rule": "by index: first 75% train, next 12.5% val, rest test"}
    return Source("synthetic", images, [], info)
