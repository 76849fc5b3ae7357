"""The embedded dataset: deterministic, Flickr8k-shaped, and rich enough not to saturate."""

from __future__ import annotations

import hashlib
import io

import numpy as np

from shared_data import synthetic, synthetic_captions, synthetic_scene
from shared_data.text import tokenize


def _jpeg_bytes(seed: int, index: int) -> bytes:
    image, _, _ = synthetic.generate_image(seed, index)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def test_same_seed_same_bytes():
    for i in (0, 7, 123):
        assert _jpeg_bytes(0, i) == _jpeg_bytes(0, i)
        assert synthetic.generate_scene(0, i) == synthetic.generate_scene(0, i)


def test_different_seed_different_images():
    assert _jpeg_bytes(0, 5) != _jpeg_bytes(1, 5)
    assert synthetic.generate_scene(0, 5)[1] != synthetic.generate_scene(1, 5)[1]


def test_written_files_are_deterministic(tmp_path):
    a = synthetic.build_source(tmp_path / "a", 12, seed=3, workers=1)
    b = synthetic.build_source(tmp_path / "b", 12, seed=3, workers=2)
    for x, y in zip(a.images, b.images, strict=True):
        assert x.captions == y.captions and x.objects == y.objects and x.split == y.split
        assert hashlib.sha256(x.path.read_bytes()).digest() == hashlib.sha256(y.path.read_bytes()).digest()


def test_scenes_are_flickr8k_shaped():
    n = 300
    lengths, words, counts, shapes, colours = [], set(), [], set(), set()
    for i in range(n):
        scene, captions = synthetic.generate_scene(0, i)
        assert len(captions) == 5 and len(set(captions)) == 5
        counts.append(len(scene.objects))
        shapes |= {o.shape for o in scene.objects}
        colours |= {o.colour for o in scene.objects}
        for c in captions:
            t = tokenize(c)
            lengths.append(len(t))
            words |= set(t)
    assert set(counts) == {1, 2, 3, 4}
    assert shapes == set(synthetic_scene.SHAPES) and colours == set(synthetic_scene.COLOURS)
    assert len(words) >= 150
    assert 10 <= np.mean(lengths) <= 13  # Flickr8k: 10.8
    assert max(lengths) <= synthetic_captions.MAX_WORDS and max(lengths) >= 28
    assert min(lengths) <= 4


def test_splits_follow_flickr8k_proportions():
    splits = [synthetic.split_of(i, 8000) for i in range(8000)]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (6000, 1000, 1000)


def test_captions_mention_only_what_is_there():
    """Every shape or colour word in a caption names an object of the scene (the grammar never lies)."""
    for i in range(200):
        scene, captions = synthetic.generate_scene(0, i)
        shapes = {o.shape for o in scene.objects}
        colours = {o.colour for o in scene.objects}
        for c in captions:
            text = " ".join(tokenize(c))
            for surface, (kind, canonical) in synthetic_captions.LEXICON.items():
                if kind == "shape" and f" {surface} " in f" {text} ":
                    assert canonical in shapes, (surface, c, shapes)
                if kind == "colour" and f" {surface} " in f" {text} ":
                    assert canonical in colours, (surface, c, colours)


def test_ground_truth_matches_image():
    """An object's centre pixel has (roughly) the object's colour, unless something covers it."""
    hits = total = 0
    for i in range(40):
        image, scene, _ = synthetic.generate_image(0, i)
        px = np.asarray(image).astype(int)
        for o in scene.objects:
            if o.shape in ("ring", "crescent") or any(p.depth > o.depth for p in scene.objects):
                continue
            total += 1
            rgb = px[int(o.y), int(o.x)]
            hits += np.abs(rgb - np.array(synthetic_scene.COLOURS[o.colour])).max() < 60
    assert total > 20 and hits / total > 0.9
