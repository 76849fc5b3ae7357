"""`grid`: the default, offline feature extractor (numpy only, no weights to download).

A hand-made descriptor in the spirit of HOG plus colour histograms, computed on an 8x8 grid of
16x16-pixel cells of the image resized to 128x128. Each cell gets 32 channels:

    0-7    hue histogram (8 bins), weighted by saturation: "what colour is here"
    8-10   achromatic mass: dark, mid grey, bright (low saturation)
    11-13  mean R, G, B
    14     luminance standard deviation (texture)
    15-22  gradient-orientation histogram (8 signed bins, magnitude weighted): "what edges are here"
    23     mean gradient magnitude
    24-27  mean gradient magnitude in each 2x2 sub-cell (finer layout of edges)
    28-31  mean saturation in each 2x2 sub-cell (finer layout of colour)

spatial = [N, 64, 32] (like a CNN's last conv map, position kept);
global  = [mean over cells, max over cells, mean of each 2x2 quadrant of the grid] = [N, 192],
which, like VGG's fc2, keeps colour and edge statistics and only a coarse layout: models that
attend over the grid can learn positions and relations that the global vector blurs.

It knows nothing about the generator (no palette, no shape templates) and works on any image, so
it is also a cheap baseline extractor for Flickr8k or COCO.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIZE = 128
CELL = 16
GRID = SIZE // CELL  # 8
CHANNELS = 32


def _resize(images: np.ndarray) -> np.ndarray:
    if images.shape[1:3] == (SIZE, SIZE):
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
                     for im in images])


def _cells(x: np.ndarray, cell: int) -> np.ndarray:
    """[B, H, W] -> [B, H/cell, W/cell, cell*cell]."""
    b, h, w = x.shape
    return x.reshape(b, h // cell, cell, w // cell, cell).transpose(0, 1, 3, 2, 4).reshape(
        b, h // cell, w // cell, cell * cell)


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mx, mn = rgb.max(-1), rgb.min(-1)
    delta = mx - mn
    sat = np.where(mx > 0, delta / np.maximum(mx, 1e-6), 0.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    d = np.maximum(delta, 1e-6)
    hue = np.where(mx == r, (g - b) / d % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) / 6.0
    return hue, sat, mx


def extract(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [B, H, W, 3] -> (global [B, 192], spatial [B, 64, 32]), float32."""
    rgb = _resize(images).astype(np.float32) / 255.0
    b = rgb.shape[0]
    hue, sat, val = _hsv(rgb)
    lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)

    feats = []
    chroma = sat * (val > 0.15)
    hue_bin = np.minimum((hue * 8).astype(np.int64), 7)
    feats += [_cells(chroma * (hue_bin == k), CELL).mean(-1) * 2 for k in range(8)]
    grey = sat < 0.25
    feats += [_cells((val < 0.25).astype(np.float32), CELL).mean(-1),
              _cells((grey & (val >= 0.25) & (val <= 0.75)).astype(np.float32), CELL).mean(-1),
              _cells((grey & (val > 0.75)).astype(np.float32), CELL).mean(-1)]
    feats += [_cells(rgb[..., c], CELL).mean(-1) for c in range(3)]
    feats.append(_cells(lum, CELL).std(-1))

    gy, gx = np.gradient(lum, axis=(1, 2))
    mag = np.hypot(gx, gy)
    ori_bin = np.minimum(((np.arctan2(gy, gx) + np.pi) / (2 * np.pi) * 8).astype(np.int64), 7)
    # scale factors bring every channel to a typical spread of 0.1-0.3, so no channel dominates a Dense layer
    feats += [_cells(mag * (ori_bin == k), CELL).mean(-1) * 20 for k in range(8)]
    feats.append(_cells(mag, CELL).mean(-1) * 8)
    half = CELL // 2
    for plane, scale in ((mag, 8.0), (sat, 1.0)):
        sub = _cells(plane, half).mean(-1).reshape(b, GRID, 2, GRID, 2)
        feats += [sub[:, :, i, :, j] * scale for i in (0, 1) for j in (0, 1)]

    grid = np.stack(feats, -1).astype(np.float32)  # [B, 8, 8, 32]
    spatial = grid.reshape(b, GRID * GRID, CHANNELS)
    quadrants = grid.reshape(b, 2, GRID // 2, 2, GRID // 2, CHANNELS).mean((2, 4)).reshape(b, 4 * CHANNELS)
    global_ = np.concatenate([spatial.mean(1), spatial.max(1), quadrants], axis=1)
    return global_, spatial
