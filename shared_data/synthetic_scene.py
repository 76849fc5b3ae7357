"""A synthetic scene: what it may hold (shapes, colours, sizes, backgrounds), the ground truth of
one scene, and how one is drawn at random. Rendering and captions are shared_data.synthetic_render
and shared_data.synthetic_captions; shared_data.synthetic makes the dataset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

IMAGE_SIZE = 128

# name -> RGB; per-object jitter makes shades, so colour is not a single pixel value
COLOURS = {
    "red": (210, 40, 40), "orange": (240, 140, 20), "yellow": (235, 215, 40),
    "green": (50, 160, 60), "blue": (40, 80, 210), "purple": (130, 50, 170),
    "pink": (240, 130, 180), "brown": (125, 80, 40), "white": (245, 245, 245),
    "black": (20, 20, 20), "grey": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "heart", "ring",
          "crescent", "rectangle", "oval")
SIZE_RADIUS = {"small": (8.0, 11.0), "medium": (14.0, 18.0), "large": (22.0, 28.0)}
BACKGROUNDS = ("plain", "striped", "dotted", "checkered", "speckled", "wavy", "gradient")
# muted, so that objects stand out without being trivially separable; no tone shares a word with
# an object colour, so that grounded scoring can read colours without parsing backgrounds
BG_TONES = {
    "beige": (200, 185, 150), "slate": (160, 185, 205), "mint": (165, 195, 160),
    "charcoal": (60, 62, 70), "sandy": (190, 165, 120), "lilac": (185, 165, 195),
}


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    x: float  # centre, pixels in the IMAGE_SIZE canvas
    y: float
    radius: float
    depth: int  # drawing order: higher is in front
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1

    def to_json(self) -> dict:
        d = asdict(self)
        d["x"], d["y"], d["radius"] = round(self.x, 2), round(self.y, 2), round(self.radius, 2)
        d["bbox"] = [round(v, 2) for v in self.bbox]
        return d


@dataclass
class Scene:
    objects: list[SceneObject]
    background: str
    tone: str
    clutter: int


def overlap(a: tuple, b: tuple) -> float:
    """Intersection area over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def sample_scene(rng: np.random.Generator) -> Scene:
    n = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.25, 0.2]))
    objects: list[SceneObject] = []
    while len(objects) < n:
        for _attempt in range(50):
            shape = str(rng.choice(SHAPES))
            size = str(rng.choice(list(SIZE_RADIUS), p=[0.35, 0.4, 0.25]))
            r = float(rng.uniform(*SIZE_RADIUS[size]))
            margin = r + 2
            x, y = (float(v) for v in rng.uniform(margin, IMAGE_SIZE - margin, size=2))
            half_w = r * (1.5 if shape == "rectangle" else 1.3 if shape == "oval" else 1.0)
            half_h = r * (0.6 if shape == "rectangle" else 0.75 if shape == "oval" else 1.0)
            bbox = (x - half_w, y - half_h, x + half_w, y + half_h)
            # partial occlusion is allowed (and described); hiding an object almost entirely is not
            if all(overlap(bbox, o.bbox) < 0.35 for o in objects):
                break
        colour = str(rng.choice(list(COLOURS)))
        objects.append(SceneObject(shape, colour, size, x, y, r, len(objects), bbox))
    background = str(rng.choice(BACKGROUNDS))
    tone = str(rng.choice(list(BG_TONES)))
    return Scene(objects, background, tone, clutter=int(rng.integers(0, 6)))
