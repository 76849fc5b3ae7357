"""Batched, resumable feature extraction into features/<extractor>.h5.

The extractor itself is any callable uint8 [B, H, W, 3] -> (global [B, D], spatial [B, P, C] | None);
this file only feeds it images and writes rows. Rows go to `<name>.h5.partial` with a `done`
counter flushed after every batch, so an interrupted extraction (Ctrl-C, a killed job) continues
where it stopped; the file gets its final name only when every row is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .errors import UserError

ExtractFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def load_image(path: Path, size: int) -> np.ndarray:
    """RGB uint8 [size, size, 3]; aspect ratio is not kept (as in the recipes this suite compares)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    except FileNotFoundError:
        raise UserError(f"image file {path} is missing; restore it or prepare the dataset again") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise UserError(f"cannot decode image {path} ({e}); fix or remove it and run prepare again "
                        "(features extracted so far are kept)") from None


def write_features(out_path: Path, image_dir: Path, image_ids: list[str], extract: ExtractFn,
                   image_size: int, batch_size: int = 64, desc: str = "features") -> dict:
    """Extract features for `image_ids` (in that order) into out_path; returns their shapes."""
    partial = out_path.with_name(out_path.name + ".partial")
    n = len(image_ids)
    done = _resume_point(partial, image_ids)
    with h5py.File(partial, "a") as f, tqdm(total=n, initial=done, desc=desc, unit="img",
                                            disable=None, leave=False) as bar:
        if "image_ids" not in f:
            f.create_dataset("image_ids", data=np.array(image_ids, dtype=h5py.string_dtype()))
            f.attrs["done"] = 0
        for start in range(done, n, batch_size):
            ids = image_ids[start:start + batch_size]
            batch = np.stack([load_image(image_dir / i, image_size) for i in ids])
            global_, spatial = extract(batch)
            _write_rows(f, "global", start, np.asarray(global_, np.float32), n)
            if spatial is not None:
                _write_rows(f, "spatial", start, np.asarray(spatial, np.float32), n)
            f.attrs["done"] = start + len(ids)
            f.flush()
            bar.update(len(ids))
        shapes = {"global_dim": int(f["global"].shape[1]),
                  "spatial_shape": list(f["spatial"].shape[1:]) if "spatial" in f else None}
    os.replace(partial, out_path)
    return shapes


def _resume_point(partial: Path, image_ids: list[str]) -> int:
    """Rows already written by an interrupted run over the same images, else start afresh."""
    if not partial.exists():
        return 0
    try:
        with h5py.File(partial, "r") as f:
            same = [i.decode() for i in f["image_ids"][:]] == image_ids
            done = int(f.attrs["done"])
    except (OSError, KeyError):
        same = False
    if same:
        return done
    partial.unlink()
    return 0


def _write_rows(f: h5py.File, key: str, start: int, rows: np.ndarray, n: int) -> None:
    if key not in f:
        # chunked by a few images so that resuming and reading both stay cheap
        f.create_dataset(key, shape=(n, *rows.shape[1:]), dtype=np.float32,
                         chunks=(min(64, n), *rows.shape[1:]))
    f[key][start:start + len(rows)] = rows
