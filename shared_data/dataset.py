"""The data contract: how a prepared dataset is laid out on disk, written and loaded.

    <data_dir>/<name>/
        manifest.json            schema version, source, splits, vocab, extractors, sha256 of every file
        vocab.json               <pad>=0 <start> <end> <unk>, then train words by frequency
        captions.json            {split: [{"image_id", "captions": ["tokenised text", ...]}, ...]}
        objects.json             ground truth per image: objects and background (synthetic only)
        images/                  the images (synthetic dataset only; imported datasets point at theirs)
        features/<extractor>.h5  global [N, D], spatial [N, P, C] (if the extractor has one), image_ids [N]

Feature rows follow captions.json: train images, then val, then test, in file order. Every plugin
and every framework reads the same files through `load_dataset`, which refuses anything that does
not match the manifest (schema, checksums, alignment, shapes, NaN/inf), each with a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .errors import UserError
from .sources import SPLITS, Source
from .text import Vocab, tokenize

SCHEMA_VERSION = 1
DATA_DIR_ENV = "CAPBENCH_DATA_DIR"
DEFAULT_DATASET = "synthetic"


def default_data_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent / "datasets"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))  # default: numpy scalars
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------- writing
def write_text_files(source: Source, out_dir: Path, name: str, image_dir: Path, min_freq: int = 1) -> dict:
    """vocab.json, captions.json (and objects.json) for a source; returns the manifest's body.

    Every image's file is `image_dir / image_id`, which holds for all sources.
    """
    by_split: dict[str, list] = {s: [] for s in SPLITS}
    for im in source.images:
        by_split[im.split].append(im)
    empty = [s for s in SPLITS if not by_split[s]]
    if empty:
        raise UserError(f"{source.name}: split(s) {', '.join(empty)} would be empty; "
                        "the dataset needs train, val and test images")
    tokenised = {s: [[tokenize(c) for c in im.captions] for im in by_split[s]] for s in SPLITS}
    vocab = Vocab.build((t for caps in tokenised["train"] for t in caps), min_freq=min_freq)
    captions = {s: [{"image_id": im.image_id, "captions": [" ".join(t) for t in caps]}
                    for im, caps in zip(by_split[s], tokenised[s], strict=True)] for s in SPLITS}
    write_json_atomic(out_dir / "vocab.json", vocab.to_json())
    write_json_atomic(out_dir / "captions.json", captions)
    if any(im.objects is not None for im in source.images):
        write_json_atomic(out_dir / "objects.json", {im.image_id: im.objects for im in source.images})

    lengths = [len(t) for s in SPLITS for caps in tokenised[s] for t in caps]
    train_lengths = [len(t) for caps in tokenised["train"] for t in caps]
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "source": {"kind": source.name, **source.info},
        # relative when the images live inside the dataset, so the folder can be moved as a whole
        "image_dir": str(image_dir.relative_to(out_dir) if image_dir.is_relative_to(out_dir) else image_dir),
        "splits": {s: {"images": len(by_split[s]), "captions": sum(map(len, tokenised[s]))} for s in SPLITS},
        "vocab": {"size": len(vocab), "min_freq": min_freq, "built_from": "train",
                  "unk_rate_test": _unk_rate(vocab, tokenised["test"])},
        # <start> and <end> included: the padded length every batch and decoder must fit
        "max_length": max(lengths) + 2,
        "caption_words": {"mean": round(statistics.fmean(train_lengths), 3), "max": max(lengths),
                          "min": min(lengths), "median": statistics.median(train_lengths)},
        "features": {},
        "warnings": list(source.warnings),
    }


def _unk_rate(vocab: Vocab, tokenised: list[list[list[str]]]) -> float:
    words = [w for caps in tokenised for t in caps for w in t]
    return round(sum(w not in vocab.stoi for w in words) / max(len(words), 1), 5)


def finalize_manifest(out_dir: Path, manifest: dict) -> dict:
    """Hash every data file and write manifest.json last: a dataset without one is not a dataset."""
    files = ["vocab.json", "captions.json"]
    if (out_dir / "objects.json").exists():
        files.append("objects.json")
    files += [f"features/{name}.h5" for name in sorted(manifest["features"])]
    manifest["files"] = {f: sha256_file(out_dir / f) for f in files}
    write_json_atomic(out_dir / "manifest.json", manifest)
    return manifest


# -------------------------------------------------------------------------------------- loading
@dataclass
class Split:
    name: str
    image_ids: list[str]
    captions: list[list[list[str]]]  # [image][caption][token]
    feature_rows: np.ndarray  # row of each image in the feature arrays

    @property
    def num_captions(self) -> int:
        return sum(len(c) for c in self.captions)


@dataclass
class Features:
    extractor: str
    global_: np.ndarray  # [N, D]
    spatial: np.ndarray | None  # [N, P, C]


@dataclass
class Dataset:
    path: Path
    manifest: dict
    vocab: Vocab
    splits: dict[str, Split]
    verify: bool = True
    _features: dict[str, Features] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    @property
    def extractors(self) -> list[str]:
        return sorted(self.manifest["features"])

    @property
    def default_extractor(self) -> str | None:
        """The extractor the dataset was prepared with (later ones are added after it)."""
        return next(iter(self.manifest["features"]), None)

    def features(self, extractor: str, spatial: bool = True) -> Features:
        """An extractor's features; spatial=False leaves the grid on disk (spatial None), for models
        that read the pooled vector only: the grid is most of the file, and of every batch."""
        if extractor in self._features:
            full = self._features[extractor]
            return full if spatial or full.spatial is None else Features(extractor, full.global_, None)
        feats = _load_features(self, extractor, spatial)
        if spatial:
            self._features[extractor] = feats
        return feats

    def objects(self) -> dict[str, dict] | None:
        path = self.path / "objects.json"
        if not path.exists():
            return None
        _check_file(self, "objects.json")
        return json.loads(path.read_text())

    @property
    def image_dir(self) -> Path:
        return (self.path / self.manifest["image_dir"]).resolve()


def resolve_dataset_path(name: str, data_dir: Path | None = None) -> Path:
    p = Path(name)
    if p.is_absolute() or (p.exists() and (p / "manifest.json").exists()):
        return p
    return (data_dir or default_data_dir()) / name


def prepare_hint(name: str) -> str:
    if name.startswith(DEFAULT_DATASET):
        size = " --size small" if name.endswith("-small") else ""
        return f"python -m benchmarks prepare{size}"
    return f"python -m benchmarks prepare DATASET --name {name} (see python -m benchmarks prepare --help)"


def load_dataset(name: str = DEFAULT_DATASET, data_dir: Path | None = None, verify: bool = True) -> Dataset:
    path = resolve_dataset_path(name, data_dir)
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise UserError(f"no prepared dataset at {path}; create it with: {prepare_hint(name)}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{manifest_path} is not valid JSON ({e}); delete {path} and prepare it again") from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{manifest_path} has schema version {version}, this CapBench reads version "
                        f"{SCHEMA_VERSION}; delete {path} and run: {prepare_hint(path.name)}")
    ds = Dataset(path, manifest, Vocab([]), {}, verify)
    _check_file(ds, "vocab.json")
    _check_file(ds, "captions.json")
    try:
        ds.vocab = Vocab.from_json(json.loads((path / "vocab.json").read_text()))
    except (ValueError, KeyError) as e:
        raise UserError(f"{path / 'vocab.json'} is malformed ({e}); prepare the dataset again") from None
    if len(ds.vocab) != manifest["vocab"]["size"]:
        raise UserError(f"{path / 'vocab.json'} has {len(ds.vocab)} words, the manifest says "
                        f"{manifest['vocab']['size']}; prepare the dataset again")
    captions = json.loads((path / "captions.json").read_text())
    row = 0
    for s in SPLITS:
        entries = captions.get(s, [])
        if len(entries) != manifest["splits"][s]["images"]:
            raise UserError(f"{path / 'captions.json'}: split {s} has {len(entries)} images, the manifest "
                            f"says {manifest['splits'][s]['images']}; prepare the dataset again")
        ds.splits[s] = Split(s, [e["image_id"] for e in entries],
                             [[c.split() for c in e["captions"]] for e in entries],
                             np.arange(row, row + len(entries)))
        row += len(entries)
    return ds


def _check_file(ds: Dataset, rel: str) -> None:
    path = ds.path / rel
    if not path.exists():
        raise UserError(f"{path} is missing; prepare the dataset again: {prepare_hint(ds.path.name)}")
    expected = ds.manifest.get("files", {}).get(rel)
    if expected is None:
        raise UserError(f"{path} is not listed in {ds.path / 'manifest.json'}; prepare the dataset again")
    if ds.verify and sha256_file(path) != expected:
        raise UserError(f"{path} does not match its sha256 in the manifest (corrupted or edited); "
                        f"prepare the dataset again, or pass --no-verify to use it anyway")


def _load_features(ds: Dataset, extractor: str, with_spatial: bool = True) -> Features:
    info = ds.manifest["features"].get(extractor)
    if info is None:
        have = ", ".join(ds.extractors) or "none"
        raise UserError(f"dataset {ds.name} has no '{extractor}' features (it has: {have}); add them with: "
                        f"python -m benchmarks prepare --name {ds.name} --extractor {extractor}")
    rel = f"features/{extractor}.h5"
    _check_file(ds, rel)
    path = ds.path / rel
    try:
        with h5py.File(path, "r") as f:
            ids = [i.decode() if isinstance(i, bytes) else str(i) for i in f["image_ids"][:]]
            global_ = f["global"][:].astype(np.float32, copy=False)
            spatial = f["spatial"][:].astype(np.float32, copy=False) if with_spatial and "spatial" in f else None
    except (OSError, KeyError) as e:
        raise UserError(f"{path} cannot be read ({e}); prepare the dataset again") from None
    expected_ids = [i for s in SPLITS for i in ds.splits[s].image_ids]
    if ids != expected_ids:
        pairs = zip(ids, expected_ids, strict=False)  # lengths may differ: that is the error
        bad = next((k for k, (a, b) in enumerate(pairs) if a != b), min(len(ids), len(expected_ids)))
        raise UserError(f"{path}: image ids are not aligned with captions.json (first difference at row {bad}); "
                        f"prepare the features again")
    if list(global_.shape[1:]) != [info["global_dim"]]:
        raise UserError(f"{path}: global features are {global_.shape[1:]}, the manifest says "
                        f"[{info['global_dim']}]; prepare the features again")
    if with_spatial and (spatial is None) != (info.get("spatial_shape") is None) or (
            spatial is not None and list(spatial.shape[1:]) != list(info["spatial_shape"])):
        raise UserError(f"{path}: spatial features {None if spatial is None else spatial.shape[1:]} do not match "
                        f"the manifest's {info.get('spatial_shape')}; prepare the features again")
    for key, arr in (("global", global_), ("spatial", spatial)):
        if arr is not None and not np.isfinite(arr).all():
            raise UserError(f"{path}: '{key}' contains NaN or inf; prepare the features again")
    return Features(extractor, global_, spatial)
