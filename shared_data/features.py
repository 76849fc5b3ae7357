"""Feature files, features/<extractor>.h5: batched, resumable extraction into them, and reading rows
back from disk without loading the file.

The extractor itself is any callable uint8 [B, H, W, 3] -> (global [B, D], spatial [B, P, C] | None);
this file only feeds it images and writes rows. Rows go to `<name>.h5.partial` with a `done`
counter flushed after every batch, so an interrupted extraction (Ctrl-C, a killed job) continues
where it stopped; the file gets its final name only when every row is written.

Rows are stored as float32 or float16 (`--feature-dtype`) and always handed out as float32. They are
chunked by about CHUNK_BYTES (one image per chunk for a 14x14x2048 grid), so that a batch of random
images reads those images and little else: Flickr8k's grids are 13 GB in float32, COCO's about
200 GB, and neither has to fit in memory (`FeatureArray`). Every reader opens a file through
`open_h5`, which refuses a file whose rows would be read from anywhere but itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from shared_data.errors import UserError

ExtractFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]

FEATURE_DTYPES = ("float32", "float16")
# float32 by default: the features are then exactly what the extractor computed, and the embedded
# dataset is small. float16 halves the disk of a large one (Flickr8k at 14x14x2048: 6.5 GB instead of
# 13) for rounding at the 4th significant digit (tested: same losses within a stated tolerance).
DEFAULT_FEATURE_DTYPE = "float32"
CHUNK_BYTES = 1 << 16  # rows per chunk: as many as fit (at least one)
COMPUTE_DTYPE = np.float32  # what every reader hands out, whatever the file stores
# An array this small (in float32) is read whole on first use and indexed in memory: reading rows one
# by one costs CPU that a 2-core machine takes from training (measured: torch_merge on the embedded
# dataset at 0.89x its in-memory speed when streamed), and holding it costs little. Larger arrays (a
# 14x14x2048 grid of more than 80 images) are always read by row, so memory stays bounded.
LOAD_BELOW = 256 << 20


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
                   image_size: int, batch_size: int = 64, desc: str = "features",
                   dtype: str = DEFAULT_FEATURE_DTYPE) -> dict:
    """Extract features for `image_ids` (in that order) into out_path; returns their shapes."""
    return write_rows(out_path, image_ids, lambda ids: extract(np.stack([load_image(image_dir / i, image_size)
                                                                         for i in ids])),
                      batch_size, desc, dtype)


def write_rows(out_path: Path, image_ids: list[str], rows_of: Callable[[list[str]], tuple], batch_size: int,
               desc: str, dtype: str = DEFAULT_FEATURE_DTYPE) -> dict:
    """Write `rows_of(ids)` = (global, spatial | None) for `image_ids`, a batch at a time, resumably,
    into out_path; returns the shapes and the stored dtype (the manifest's entry)."""
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
            global_, spatial = rows_of(ids)
            _write_rows(f, "global", start, np.asarray(global_), n, dtype)
            if spatial is not None:
                _write_rows(f, "spatial", start, np.asarray(spatial), n, dtype)
            f.attrs["done"] = start + len(ids)
            f.flush()
            bar.update(len(ids))
        shapes = {"global_dim": int(f["global"].shape[1]),
                  "spatial_shape": list(f["spatial"].shape[1:]) if "spatial" in f else None,
                  "dtype": str(f["global"].dtype)}
    os.replace(partial, out_path)
    return shapes


def _resume_point(partial: Path, image_ids: list[str]) -> int:
    """Rows already written by an interrupted run over the same images, else start afresh."""
    if not partial.exists():
        return 0
    try:
        with open_h5(partial) as f:
            same = [i.decode() for i in f["image_ids"][:]] == image_ids
            done = int(f.attrs["done"])
    except (OSError, KeyError, UnsafeH5):
        same = False
    if same:
        return done
    partial.unlink()
    return 0


def _write_rows(f: h5py.File, key: str, start: int, rows: np.ndarray, n: int, dtype: str) -> None:
    if key not in f:
        # every chunk allocated (in row order) when the dataset is created: the file's layout then
        # does not depend on how the writes were batched or resumed (a resumed build is byte-identical)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # every row is written once: no zeros written first
        f.create_dataset(key, shape=(n, *rows.shape[1:]), dtype=dtype, dcpl=dcpl,
                         chunks=(rows_per_chunk(rows.shape[1:], dtype, n), *rows.shape[1:]))
    elif f[key].dtype != np.dtype(dtype):  # a partial file of another --feature-dtype
        raise UserError(f"{f.filename} holds {f[key].dtype} rows, this command writes {dtype}; delete it "
                        "and run again")
    f[key][start:start + len(rows)] = rows.astype(dtype, copy=False)


def rows_per_chunk(row_shape: tuple, dtype: str, n: int) -> int:
    row_bytes = int(np.prod(row_shape)) * np.dtype(dtype).itemsize
    return max(1, min(n, CHUNK_BYTES // max(row_bytes, 1)))


# -------------------------------------------------------------------------------------- reading
class UnsafeH5(ValueError):
    """A features file that would make HDF5 read bytes from somewhere else."""


def open_h5(path: Path) -> h5py.File:
    """A features file opened read-only, the one way every reader opens one: refused (UnsafeH5) when
    a dataset's bytes live outside the file. HDF5 follows external raw storage, external links and
    virtual datasets silently, so a 1 kB .h5 whose sha256 matches could feed the model /etc/passwd.
    prepare writes none of these (nor groups or soft links), so anything but plain datasets is refused."""
    f = h5py.File(path, "r")
    try:
        problem = _points_elsewhere(f)
    except BaseException:
        f.close()
        raise
    if problem:
        f.close()
        raise UnsafeH5(problem)
    return f


def _points_elsewhere(f: h5py.File) -> str | None:
    for name in f:  # link names: listing them resolves nothing
        kind = f.id.links.get_info(name.encode()).type
        if kind == h5py.h5l.TYPE_EXTERNAL:
            return f"'{name}' is an external link to {_text(f.id.links.get_val(name.encode())[0])}"
        if kind != h5py.h5l.TYPE_HARD:
            return f"'{name}' is a {'soft' if kind == h5py.h5l.TYPE_SOFT else 'user-defined'} link"
        obj = f[name]
        if not isinstance(obj, h5py.Dataset):
            return f"'{name}' is a {type(obj).__name__.lower()}, where features files hold datasets only"
        if obj.is_virtual:
            return f"'{name}' is a virtual dataset (its rows live in other files)"
        if obj.external:
            return f"'{name}' keeps its rows in an external file ({_text(obj.external[0][0])})"
    return None


def _text(name: str | bytes) -> str:
    return name.decode(errors="replace") if isinstance(name, bytes) else name


class Rows:
    """What the feature readers share: an [N, ...] shape, float32 out, and one parse of a row index
    (a slice, an int array or a boolean mask) into checked, non-negative int64 rows."""

    dtype = np.dtype(COMPUTE_DTYPE)

    def __init__(self, shape: tuple):
        self.shape = tuple(shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def rows_of(self, index) -> np.ndarray:
        if isinstance(index, slice):
            return np.arange(*index.indices(len(self)))
        rows = np.asarray(index)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64, copy=False).ravel()
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for {self!r}")
        return np.where(rows < 0, rows + len(self), rows)

    def __array__(self, dtype=None, copy=None):
        data = self[:]
        return data if dtype is None else data.astype(dtype)


class ZeroRows(Rows):
    """Stands in for the pooled vector of a model that never reads it (Show, Attend and Tell,
    attention_lstm, the Transformer: `needs_global=False`): indexing gives zeros of the right shape
    and reads nothing, so the file's global array is neither read per batch nor held in memory (at
    8,091 x 4096 it would be 132 MB, growing with the dataset). A test checks that such a model's
    outputs do not depend on it."""

    nbytes = 0

    def __repr__(self) -> str:
        return f"ZeroRows(shape={self.shape})"

    def __getitem__(self, index):
        if isinstance(index, tuple):
            raise TypeError("ZeroRows takes rows only")
        if isinstance(index, int | np.integer):
            return self[np.array([index])][0]
        return np.zeros((len(self.rows_of(index)), *self.shape[1:]), COMPUTE_DTYPE)


class FeatureArray(Rows):
    """One [N, ...] array of a feature file, left on disk: `a[rows]` reads those rows (float32).

    Rows are read in sorted order, each run of consecutive rows in one call, and put back in the
    order asked for (duplicates included), so the result is exactly `np.asarray(a)[rows]`. An array
    under LOAD_BELOW bytes is read whole on first use instead. The file is opened on first read and
    stays open; h5py serialises access, so a prefetch thread may read while the caller trains.
    `np.asarray(a)` reads everything: for tests and small files only."""

    def __init__(self, path: Path, key: str, shape: tuple, stored_dtype: np.dtype):
        super().__init__(shape)
        self.path, self.key, self.stored_dtype = Path(path), key, np.dtype(stored_dtype)
        self._dataset = None
        self._loaded: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"FeatureArray({self.path.name}:{self.key}, shape={self.shape}, stored as {self.stored_dtype})"

    @property
    def nbytes(self) -> int:
        """What loading it would take, in the compute dtype."""
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def _open(self):
        if self._dataset is None:
            self._dataset = open_h5(self.path)[self.key]
        return self._dataset

    def __getitem__(self, index):
        rest = ()
        if isinstance(index, tuple):
            index, rest = index[0], index[1:]
        if isinstance(index, int | np.integer):
            return self[np.array([index])][(0, *rest)]
        rows = self.rows_of(index)
        if self._loaded is None and self.nbytes < LOAD_BELOW and len(self):
            self._loaded = self.read_sorted(np.arange(len(self)))
        if self._loaded is not None:
            return self._loaded[(rows, *rest)] if rest else self._loaded[rows]
        wanted = np.unique(rows)
        out = self.read_sorted(wanted)
        if len(wanted) != len(rows) or np.any(wanted != rows):  # back to the order asked for
            out = out[np.searchsorted(wanted, rows)]
        return out[(slice(None), *rest)] if rest else out

    def read_sorted(self, rows: np.ndarray) -> np.ndarray:
        """Rows given sorted and unique, each run of consecutive rows read in one call."""
        d = self._open()
        buf = np.empty((len(rows), *self.shape[1:]), self.stored_dtype)
        if len(rows):
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            for run_start, run_end in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
                first = int(rows[run_start])
                d.read_direct(buf, np.s_[first:first + run_end - run_start], np.s_[run_start:run_end])
        return buf.astype(COMPUTE_DTYPE, copy=False)

    def blocks(self, max_bytes: int = 64 << 20):
        """(start, rows) over the whole array, about max_bytes at a time: a streaming pass."""
        step = max(1, max_bytes // max(self.nbytes // max(len(self), 1), 1))
        for start in range(0, len(self), step):
            yield start, self[start:start + step]

