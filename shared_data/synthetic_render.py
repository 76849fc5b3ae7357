"""Drawing a synthetic scene: the textured background, clutter strokes and objects of the image, and
the label map of which object each pixel shows (the same shapes, drawn in the same order).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from shared_data.synthetic_scene import BG_TONES, COLOURS, IMAGE_SIZE, Scene, SceneObject

SUPERSAMPLE = 2  # shapes are drawn at 2x and downsampled, for anti-aliased edges


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
