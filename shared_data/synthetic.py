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
"""

from __future__ import annotations

import math
import os
import signal
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .sources import SPLIT_FRACTIONS, Source, SourceImage

IMAGE_SIZE = 128
SUPERSAMPLE = 2  # shapes are drawn at 2x and downsampled, for anti-aliased edges
SIZES = {"full": 8000, "small": 400}

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

# ---------------------------------------------------------------- the lexicon (surface -> canonical)
SHAPE_WORDS = {
    "circle": ["circle", "disc", "round shape"],
    "square": ["square", "box", "block"],
    "triangle": ["triangle", "triangular shape"],
    "star": ["star", "five pointed star"],
    "diamond": ["diamond", "rhombus"],
    "hexagon": ["hexagon", "six sided shape"],
    "cross": ["cross", "plus sign"],
    "heart": ["heart", "heart shape"],
    "ring": ["ring", "hoop", "donut"],
    "crescent": ["crescent", "moon shape", "half moon"],
    "rectangle": ["rectangle", "bar", "brick"],
    "oval": ["oval", "ellipse", "egg shape"],
}
SHAPE_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
                 "diamond": "diamonds", "hexagon": "hexagons", "cross": "crosses", "heart": "hearts",
                 "ring": "rings", "crescent": "crescents", "rectangle": "rectangles", "oval": "ovals"}
COLOUR_WORDS = {
    "red": ["red", "scarlet"], "orange": ["orange"], "yellow": ["yellow", "golden"],
    "green": ["green", "emerald"], "blue": ["blue", "navy"], "purple": ["purple", "violet"],
    "pink": ["pink"], "brown": ["brown", "chocolate"], "white": ["white"], "black": ["black", "jet black"],
    "grey": ["grey", "gray", "silver"],
}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "medium": ["medium sized", "mid sized", ""],
              "large": ["large", "big", "huge"]}
RELATION_WORDS = {
    "left": ["to the left of", "left of", "on the left side of"],
    "right": ["to the right of", "right of", "on the right side of"],
    "above": ["above", "over", "on top of"],
    "below": ["below", "under", "beneath", "underneath"],
    "front": ["in front of", "overlapping", "partly covering"],
    "behind": ["behind", "partly hidden behind", "covered by"],
    "near": ["next to", "beside", "near", "close to"],
}
BG_WORDS = {
    "plain": ["plain", "flat", "simple"], "striped": ["striped", "lined"],
    "dotted": ["dotted", "spotted", "polka dot"], "checkered": ["checkered", "chequered", "tiled"],
    "speckled": ["speckled", "grainy", "noisy"], "wavy": ["wavy", "rippled"],
    "gradient": ["shaded", "gradient", "fading"],
}
BG_NOUNS = ["background", "backdrop", "surface", "canvas"]
SCENE_NOUNS = ["picture", "image", "photo", "scene", "drawing"]
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}


def _lexicon() -> dict[str, tuple[str, str]]:
    lex: dict[str, tuple[str, str]] = {}
    for kind, table in (("shape", SHAPE_WORDS), ("colour", COLOUR_WORDS), ("size", SIZE_WORDS),
                        ("relation", RELATION_WORDS)):
        for canonical, words in table.items():
            for w in words:
                if w:
                    lex.setdefault(w, (kind, canonical))
    for shape, plural in SHAPE_PLURALS.items():
        lex[plural] = ("shape", shape)
    return lex


LEXICON = _lexicon()  # "scarlet" -> ("colour", "red"), "hoop" -> ("shape", "ring"), ...


# ----------------------------------------------------------------------------------- the scene
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


def _overlap(a: tuple, b: tuple) -> float:
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
            if all(_overlap(bbox, o.bbox) < 0.35 for o in objects):
                break
        colour = str(rng.choice(list(COLOURS)))
        objects.append(SceneObject(shape, colour, size, x, y, r, len(objects), bbox))
    background = str(rng.choice(BACKGROUNDS))
    tone = str(rng.choice(list(BG_TONES)))
    return Scene(objects, background, tone, clutter=int(rng.integers(0, 6)))


# ---------------------------------------------------------------------------------- rendering
def _polygon(x: float, y: float, r: float, sides: int, rotation: float = -math.pi / 2) -> list:
    return [(x + r * math.cos(rotation + 2 * math.pi * k / sides),
             y + r * math.sin(rotation + 2 * math.pi * k / sides)) for k in range(sides)]


def _star(x: float, y: float, r: float) -> list:
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        a = -math.pi / 2 + math.pi * k / 5
        pts.append((x + rad * math.cos(a), y + rad * math.sin(a)))
    return pts


def _draw_object(draw: ImageDraw.ImageDraw, o: SceneObject, rgb: tuple, bg_rgb: tuple, s: int) -> None:
    x, y, r = o.x * s, o.y * s, o.radius * s
    if o.shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=rgb)
    elif o.shape == "oval":
        draw.ellipse((x - 1.3 * r, y - 0.75 * r, x + 1.3 * r, y + 0.75 * r), fill=rgb)
    elif o.shape == "square":
        h = r * 0.85
        draw.rectangle((x - h, y - h, x + h, y + h), fill=rgb)
    elif o.shape == "rectangle":
        draw.rectangle((x - 1.5 * r, y - 0.6 * r, x + 1.5 * r, y + 0.6 * r), fill=rgb)
    elif o.shape == "triangle":
        draw.polygon(_polygon(x, y + 0.15 * r, r * 1.1, 3), fill=rgb)
    elif o.shape == "diamond":
        draw.polygon([(x, y - r), (x + 0.75 * r, y), (x, y + r), (x - 0.75 * r, y)], fill=rgb)
    elif o.shape == "hexagon":
        draw.polygon(_polygon(x, y, r, 6, 0.0), fill=rgb)
    elif o.shape == "star":
        draw.polygon(_star(x, y, r * 1.15), fill=rgb)
    elif o.shape == "cross":
        t = r * 0.35
        draw.rectangle((x - r, y - t, x + r, y + t), fill=rgb)
        draw.rectangle((x - t, y - r, x + t, y + r), fill=rgb)
    elif o.shape == "heart":
        q = r * 0.5
        draw.ellipse((x - 2 * q, y - 1.6 * q, x, y + 0.4 * q), fill=rgb)
        draw.ellipse((x, y - 1.6 * q, x + 2 * q, y + 0.4 * q), fill=rgb)
        draw.polygon([(x - 1.93 * q, y - 0.2 * q), (x + 1.93 * q, y - 0.2 * q), (x, y + 2 * q)], fill=rgb)
    elif o.shape == "ring":
        w = max(2, int(r * 0.4))
        draw.ellipse((x - r, y - r, x + r, y + r), outline=rgb, width=w)
    elif o.shape == "crescent":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=rgb)
        off = r * 0.55
        # the bite shows the background colour: the crescent is a shape, not a disc with a hole
        draw.ellipse((x - r + off, y - r - 0.1 * r, x + r + off, y + r - 0.1 * r), fill=bg_rgb)
    else:  # pragma: no cover - SHAPES and this function change together
        raise ValueError(o.shape)


def _background(rng: np.random.Generator, kind: str, tone: str, n: int) -> np.ndarray:
    # float64 throughout: numpy's float32 sin/cos are SIMD code that rounds differently on AVX2 and
    # AVX-512 CPUs (seen as different images), so a float32 pattern would make each CPU its own
    # dataset; in float64 a last-bit difference moves a pixel's integer value only when it lies
    # within 1e-14 of an integer, which the continuous noise below makes vanishingly rare
    base = np.array(BG_TONES[tone], dtype=np.float64)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    contrast = float(rng.uniform(18, 40))
    period = float(rng.uniform(8, 20)) * SUPERSAMPLE
    angle = float(rng.uniform(0, math.pi))
    u = xx * math.cos(angle) + yy * math.sin(angle)
    if kind == "plain":
        pattern = np.zeros((n, n))
    elif kind == "striped":
        pattern = np.sign(np.sin(2 * math.pi * u / period))
    elif kind == "dotted":
        cx = (xx % period) - period / 2
        cy = (yy % period) - period / 2
        pattern = np.where(cx**2 + cy**2 < (period / 5) ** 2, 1.0, -0.3)
    elif kind == "checkered":
        pattern = np.sign(np.sin(math.pi * xx / period) * np.sin(math.pi * yy / period))
    elif kind == "speckled":
        pattern = rng.normal(0, 1.0, size=(n, n))
    elif kind == "wavy":
        v = -xx * math.sin(angle) + yy * math.cos(angle)
        pattern = np.sin(2 * math.pi * (u + 6 * SUPERSAMPLE * np.sin(2 * math.pi * v / (3 * period))) / period)
    elif kind == "gradient":
        pattern = (u / max(float(u.max()), 1.0)) * 2 - 1
    else:  # pragma: no cover
        raise ValueError(kind)
    img = base[None, None, :] + contrast * pattern[..., None]
    img += rng.normal(0, 4, size=img.shape)  # sensor-like noise on every image
    return np.clip(img, 0, 255).astype(np.uint8)


def render(scene: Scene, rng: np.random.Generator) -> Image.Image:
    n = IMAGE_SIZE * SUPERSAMPLE
    img = Image.fromarray(_background(rng, scene.background, scene.tone, n))
    draw = ImageDraw.Draw(img)
    bg_mean = tuple(int(v) for v in np.asarray(img).reshape(-1, 3).mean(0))
    for _ in range(scene.clutter):  # thin strokes that are not objects and are never described
        pts = rng.uniform(0, n, size=4)
        shade = tuple(int(v) for v in np.clip(np.array(bg_mean) + rng.normal(0, 50, 3), 0, 255))
        draw.line(tuple(pts), fill=shade, width=int(rng.integers(1, 3)) * SUPERSAMPLE)
    for o in scene.objects:
        jitter = rng.normal(0, 12, 3)
        rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[o.colour]) + jitter, 0, 255))
        _draw_object(draw, o, rgb, bg_mean, SUPERSAMPLE)
    img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    return img.filter(ImageFilter.GaussianBlur(0.4))


# ------------------------------------------------------------------------------------ captions
def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _position_phrase(o: SceneObject, rng: np.random.Generator) -> str:
    third = IMAGE_SIZE / 3
    h = "left" if o.x < third else "right" if o.x > 2 * third else "centre"
    v = "top" if o.y < third else "bottom" if o.y > 2 * third else "middle"
    if h == "centre" and v == "middle":
        return _pick(rng, ["in the centre", "in the middle", "at the centre of the " + _pick(rng, SCENE_NOUNS)])
    if h == "centre":
        return _pick(rng, [f"at the {v}", f"near the {v}", f"at the {v} of the {_pick(rng, SCENE_NOUNS)}"])
    if v == "middle":
        return _pick(rng, [f"on the {h}", f"on the {h} side", f"at the {h} of the {_pick(rng, SCENE_NOUNS)}"])
    return _pick(rng, [f"in the {v} {h} corner", f"at the {v} {h}", f"in the {v} {h}"])


def _relation(a: SceneObject, b: SceneObject) -> str:
    """How a relates to b, as the canonical relation a caption would name."""
    if _overlap(a.bbox, b.bbox) > 0.05:
        return "front" if a.depth > b.depth else "behind"
    dx, dy = a.x - b.x, a.y - b.y
    if math.hypot(dx, dy) < (a.radius + b.radius) * 1.4:
        return "near"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def _noun_phrase(o: SceneObject, rng: np.random.Generator, definite: bool = False,
                 with_size: float = 0.5, with_colour: float = 0.9) -> str:
    words = []
    if rng.random() < with_size:
        size = _pick(rng, SIZE_WORDS[o.size])
        if size:
            words.append(size)
    if rng.random() < with_colour:
        words.append(_pick(rng, COLOUR_WORDS[o.colour]))
    words.append(_pick(rng, SHAPE_WORDS[o.shape]))
    phrase = " ".join(words)
    if definite:
        return "the " + phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _background_phrase(scene: Scene, rng: np.random.Generator) -> str:
    tone = "" if rng.random() < 0.5 else scene.tone + " "
    return f"{_pick(rng, ['on', 'against', 'over'])} a {tone}{_pick(rng, BG_WORDS[scene.background])} " \
           f"{_pick(rng, BG_NOUNS)}"


def _count_phrase(objects: list[SceneObject], rng: np.random.Generator) -> str:
    """'two circles and a star' / 'three shapes': counting is part of what a model must see."""
    if len(objects) > 1 and rng.random() < 0.3:
        return f"{NUMBERS[len(objects)]} {_pick(rng, ['shapes', 'objects', 'figures'])}"
    groups: dict[str, int] = {}
    for o in objects:
        groups[o.shape] = groups.get(o.shape, 0) + 1
    parts = []
    for shape, k in groups.items():
        if k == 1:
            parts.append(_noun_phrase(next(o for o in objects if o.shape == shape), rng, with_size=0.2))
        else:
            parts.append(f"{NUMBERS[k]} {SHAPE_PLURALS[shape]}")
    return _join(parts)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


VERBS = ["is", "sits", "rests", "lies", "appears", "is placed", "can be seen", "is drawn", "floats"]
OPENERS = ["there is", "we see", "this is", "you can see"]
SHOWS = ["shows", "contains", "depicts", "has"]


# terse list, opener + list, position, relation, count, chained relations, all positions:
# weights tuned so that caption lengths spread like Flickr8k's (mean ~11 words, long tail to ~35)
STYLE_WEIGHTS = (0.24, 0.1, 0.24, 0.18, 0.12, 0.05, 0.07)
MAX_WORDS = 35


def _caption(scene: Scene, rng: np.random.Generator) -> str:
    objs = sorted(scene.objects, key=lambda o: -o.radius)  # people mention the biggest things first
    main = objs[0]
    style = int(rng.choice(7, p=STYLE_WEIGHTS))
    bg = _background_phrase(scene, rng) if rng.random() < 0.25 else ""
    if style == 0:  # terse list
        text = _join([_noun_phrase(o, rng, with_size=0.3) for o in objs[: int(rng.integers(1, len(objs) + 1))]])
    elif style == 1:  # opener + list
        text = f"{_pick(rng, OPENERS)} " + _join([_noun_phrase(o, rng) for o in objs])
    elif style == 2:  # main object with a position
        text = f"{_noun_phrase(main, rng)} {_pick(rng, VERBS)} {_position_phrase(main, rng)}"
    elif style == 3 and len(objs) > 1:  # relation between the two biggest
        rel = _relation(objs[0], objs[1])
        text = f"{_noun_phrase(objs[0], rng)} {_pick(rng, VERBS)} {_pick(rng, RELATION_WORDS[rel])} " \
               f"{_noun_phrase(objs[1], rng, definite=rng.random() < 0.5)}"
    elif style == 4:  # the scene "shows" a count
        noun = _pick(rng, SCENE_NOUNS)
        article = "the" if rng.random() < 0.5 else "an" if noun[0] in "aeiou" else "a"
        text = f"{article} {noun} {_pick(rng, SHOWS)} " \
               f"{_count_phrase(objs, rng)}"
    elif style == 5 and len(objs) > 1:  # chained relations: long captions
        parts = [f"{_noun_phrase(objs[0], rng)} {_position_phrase(objs[0], rng)}"]
        for o in objs[1:]:
            parts.append(f"{_noun_phrase(o, rng)} {_pick(rng, RELATION_WORDS[_relation(o, objs[0])])} it")
        text = _join(parts)
    else:  # every object with its position
        text = _join([f"{_noun_phrase(o, rng)} {_position_phrase(o, rng)}" for o in objs])
    if bg:
        text = f"{bg} {text}" if rng.random() < 0.25 else f"{text} {bg}"
    return text


def captions_for(scene: Scene, rng: np.random.Generator, k: int = 5) -> list[str]:
    """k distinct captions (a few extra draws when the grammar repeats itself)."""
    out: list[str] = []
    for _ in range(50 * k):
        c = _caption(scene, rng)
        if c not in out and len(c.split()) <= MAX_WORDS:
            out.append(c)
        if len(out) == k:
            return out
    raise RuntimeError("grammar could not produce distinct captions")  # pragma: no cover


# --------------------------------------------------------------------------------- the dataset
def generate_scene(seed: int, index: int) -> tuple[Scene, list[str]]:
    """Scene and five captions for one index; a pure function of (seed, index)."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng)
    return scene, captions_for(scene, rng)


def render_image(scene: Scene, seed: int, index: int) -> Image.Image:
    # a stream of its own, so captions can be regenerated without drawing the image again
    return render(scene, np.random.default_rng([seed, index, 1]))


def label_map(scene: Scene) -> np.ndarray:
    """[IMAGE_SIZE, IMAGE_SIZE] uint8: which object (index + 1) is visible at each pixel, 0 for the
    background. Drawn with the renderer's own shapes in the renderer's order, so occlusion is exact;
    used to pretrain the `synthnet` extractor (the stand-in for an ImageNet-trained CNN)."""
    img = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(img)
    for k, o in enumerate(scene.objects):
        _draw_object(draw, o, k + 1, 0, 1)
    return np.asarray(img)


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
    tmp = path.with_name(path.name + ".tmp")
    render_image(scene, seed, index).save(tmp, format="JPEG", quality=92)
    os.replace(tmp, path)


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
