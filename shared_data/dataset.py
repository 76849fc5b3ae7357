"""The data contract: how a prepared dataset is laid out on disk, and how it is loaded.

    <data_dir>/<name>/
        manifest.json            schema version, source, splits, vocab, extractors, sha256 of every file
        vocab.json               <pad>=0 <start> <end> <unk>, then train words by frequency
        captions.json            {split: [{"image_id", "captions": ["tokenised text", ...]}, ...]}
        objects.json             ground truth per image: objects and background (synthetic only)
        images/                  the images (synthetic dataset only; imported datasets point at theirs)
        features/<extractor>.h5  global [N, D], spatial [N, P, C] (if the extractor has one), image_ids [N]

Feature rows follow captions.json: train images, then val, then test, in file order. Every plugin
and every framework reads the same files through `load_dataset`, which refuses anything that does
not match the manifest (schema, structure, checksums, alignment, shapes, NaN/inf), each with a one-line
error that names the file and gives the prepare command to run (with the same --data-dir).

The rest of the contract is in modules of its own: shared_data.dataset_format (the schema version,
bounds, checksums, identity and the structure checks of the JSON files), shared_data.dataset_writing
(how prepare writes the text files and the manifest), shared_data.dataset_location (the data dir and
the prepare commands in messages) and shared_data.safe_paths (the path rules below).

Everything read from a dataset folder or an importer's input is untrusted, and checked where it is read:

* Paths. A path taken from a file (manifest keys and `files`, image ids, a relative image_dir, the
  ids of captions.txt and Flickr8k.token.txt, Karpathy's filepath/filename) is a plain relative path
  (`path_problem`: no absolute path, no empty, '.' or '..' part, no backslash) and, links followed,
  stays inside its folder (`first_outside`): the dataset folder, or the importer's --images. The
  dataset folder itself may be a link (to put a large dataset on another disk); what is inside it
  may not lead out. An absolute image_dir is allowed: imported datasets point at the --images
  folder their prepare command was given, and image ids stay inside it.
* HDF5. Features files are opened only through `features.open_h5`, which refuses external raw
  storage, external and soft links, virtual datasets and groups: HDF5 would follow them to bytes that
  the file's sha256 does not cover.
* Bounds. prepare cuts captions to MAX_CAPTION_WORDS words and refuses an image without captions;
  it warns (manifest `warnings`, printed) when the vocabulary has fewer than MIN_VOCAB_WORDS words or
  more than MAX_UNK_RATE of the val or test words are unknown. load refuses a max_length above
  MAX_LENGTH, a caption longer than max_length allows, and an image without captions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared_data.dataset_format import SCHEMA_VERSION, captions_problem, manifest_problem, objects_problem, sha256_file
from shared_data.dataset_location import (
    DEFAULT_DATASET,
    known_extractors,
    not_a_dataset,
    prepare_data_dir,
    prepare_hint,
    resolve_dataset_path,
)
from shared_data.errors import UserError
from shared_data.features import FEATURE_DTYPES, FeatureArray, UnsafeH5, ZeroRows, open_h5
from shared_data.safe_paths import first_outside
from shared_data.schema import json_type
from shared_data.sources import SPLITS
from shared_data.text import Vocab


@dataclass
class Split:
    name: str
    image_ids: list[str]
    texts: list[list[str]]  # [image][caption]: tokens joined by spaces, as captions.json has them
    feature_rows: np.ndarray  # row of each image in the feature arrays

    @property
    def captions(self) -> list[list[list[str]]]:
        """[image][caption][token], split on each call: kept as text, COCO's 616k captions are about
        60 MB, split into words several hundred (the study process never needs the words)."""
        return [[c.split() for c in caps] for caps in self.texts]

    @property
    def num_captions(self) -> int:
        return sum(len(c) for c in self.texts)


@dataclass
class Features:
    """An extractor's features, rows aligned with the splits' feature_rows. Left on disk
    (FeatureArray: `global_[rows]` reads those rows), or in memory (`in_memory()`, numpy arrays):
    either way indexing gives the same float32 arrays."""

    extractor: str
    global_: FeatureArray | ZeroRows | np.ndarray  # [N, D]
    spatial: FeatureArray | np.ndarray | None  # [N, P, C]

    def in_memory(self) -> Features:
        global_ = self.global_ if isinstance(self.global_, ZeroRows) else np.asarray(self.global_)
        return Features(self.extractor, global_,
                        None if self.spatial is None else np.asarray(self.spatial))

    def read_from_file(self) -> dict[str, str]:
        """The arrays this model reads from the file, with the dtype each is stored as."""
        return {name: str(getattr(a, "stored_dtype", a.dtype)) for name, a in (("global", self.global_),
                ("spatial", self.spatial)) if a is not None and not isinstance(a, ZeroRows)}

    def row_bytes(self) -> int:
        """float32 bytes of one image's features (both arrays): what decoding batches are sized by."""
        return sum(int(np.prod(a.shape[1:])) * 4 for a in (self.global_, self.spatial)
                   if a is not None and not isinstance(a, ZeroRows))


@dataclass
class Dataset:
    path: Path
    manifest: dict
    vocab: Vocab
    splits: dict[str, Split]
    verify: bool = True
    _features: dict[str, Features] = field(default_factory=dict, repr=False)
    # the --data-dir that the prepare commands in error messages carry (None: the default data dir)
    hint_dir: Path | None = field(default=None, repr=False)

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

    def features(self, extractor: str, spatial: bool = True, global_: bool = True) -> Features:
        """An extractor's features, left on disk (rows are read as batches ask for them);
        spatial=False leaves the grid out (spatial None), for models that read the pooled vector only;
        global_=False puts ZeroRows in the pooled vector's place, for models that never read it.
        With verify, the file's checksum and finiteness are checked here, streaming."""
        if extractor in self._features:
            feats = self._features[extractor]
        else:
            feats = _load_features(self, extractor, spatial)
            if spatial:
                self._features[extractor] = feats
        if not spatial and feats.spatial is not None:
            feats = Features(extractor, feats.global_, None)
        return feats if global_ else Features(extractor, ZeroRows(feats.global_.shape), feats.spatial)

    def objects(self) -> dict[str, dict] | None:
        path = self.path / "objects.json"
        if not path.exists():
            return None
        _check_file(self, "objects.json")
        objects = _read_json(path, self.redo())
        problem = objects_problem(objects)
        if problem:
            raise UserError(f"{path} {problem}, expected image id -> {{\"objects\": [...]}}; {self.redo()}")
        return objects

    @property
    def image_dir(self) -> Path:
        return (self.path / self.manifest["image_dir"]).resolve()

    def image_path(self, image_id: str) -> Path:
        """An image's file, refused when it leads outside image_dir (a link in the image folder):
        whatever opens a dataset's images goes through here. load_dataset has checked the id itself."""
        path = self.image_dir / image_id
        if first_outside(self.image_dir, [path]) is not None:
            raise UserError(f"image {image_id} of dataset {self.name} leads outside {self.image_dir} (to "
                            f"{os.path.realpath(path)}); put the file itself there, or {self.redo()}")
        return path

    def redo(self) -> str:
        """The advice for a damaged dataset. prepare reuses any folder that has a manifest, so the
        folder has to go first, and the command must carry the same --data-dir."""
        return f"delete {self.path} and prepare it again: {prepare_hint(self.path.name, self.hint_dir, self.manifest)}"


def load_dataset(name: str = DEFAULT_DATASET, data_dir: Path | None = None, verify: bool = True) -> Dataset:
    path = resolve_dataset_path(name, data_dir)
    hint_dir = prepare_data_dir(path, data_dir)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise not_a_dataset(path, data_dir, hint_dir)
    redo = f"delete {path} and prepare it again: {prepare_hint(path.name, hint_dir)}"
    if first_outside(path, [manifest_path]) is not None:
        raise UserError(_leads_outside(manifest_path, path, redo))
    manifest = _read_json(manifest_path, redo)
    if not isinstance(manifest, dict):
        raise UserError(f"{manifest_path} is {json_type(manifest)}, not a manifest; {redo}")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{manifest_path} has schema version {version}, this CapBench reads version "
                        f"{SCHEMA_VERSION}; delete {path} and run: {prepare_hint(path.name, hint_dir, manifest)}")
    ds = Dataset(path, manifest, Vocab([]), {}, verify, hint_dir=hint_dir)
    problem = manifest_problem(manifest, path)
    if problem:
        raise UserError(f"{manifest_path}: {problem} (damaged or edited); {ds.redo()}")
    _check_file(ds, "vocab.json")
    _check_file(ds, "captions.json")
    vocab_path = path / "vocab.json"
    try:
        ds.vocab = Vocab.from_json(_read_json(vocab_path, ds.redo()))
    except ValueError as e:
        raise UserError(f"{vocab_path} is malformed ({e}); {ds.redo()}") from None
    if len(ds.vocab) != manifest["vocab"]["size"]:
        raise UserError(f"{vocab_path} has {len(ds.vocab)} words, the manifest says "
                        f"{manifest['vocab']['size']}; {ds.redo()}")
    captions_path = path / "captions.json"
    captions = _read_json(captions_path, ds.redo())
    problem = captions_problem(captions, manifest["max_length"] - 2)
    if problem:
        raise UserError(f"{captions_path}: {problem}; {ds.redo()}")
    row = 0
    for s in SPLITS:
        entries = captions[s]
        if len(entries) != manifest["splits"][s]["images"]:
            raise UserError(f"{captions_path}: split {s} has {len(entries)} images, the manifest "
                            f"says {manifest['splits'][s]['images']}; {ds.redo()}")
        ds.splits[s] = Split(s, [e["image_id"] for e in entries], [e["captions"] for e in entries],
                             np.arange(row, row + len(entries)))
        row += len(entries)
    return ds


def _leads_outside(path: Path, root: Path, redo: str) -> str:
    return (f"{path} leads outside {root} (a link to {os.path.realpath(path)}); a dataset's files stay in "
            f"its folder: {redo}")


# ------------------------------------------------------------------------------------- reading
def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _read_json(path: Path, redo: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror or _one_line(e)}); check the file and its "
                        f"permissions, or {redo}") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise UserError(f"{path} is not valid JSON ({_one_line(e)}; truncated or edited?); {redo}") from None


def _check_file(ds: Dataset, rel: str, redo: str | None = None) -> None:
    path = ds.path / rel
    redo = redo or ds.redo()
    if first_outside(ds.path, [path]) is not None:
        raise UserError(_leads_outside(path, ds.path, redo))
    if not path.is_file():
        raise UserError(f"{path} is missing; {redo}")
    expected = ds.manifest["files"].get(rel)
    if expected is None:
        raise UserError(f"{path} is not listed in {ds.path / 'manifest.json'}; {redo}")
    if ds.verify:
        try:
            digest = sha256_file(path)
        except OSError as e:
            raise UserError(f"{path} cannot be read ({e.strerror or _one_line(e)}); check the file and its "
                            f"permissions, or {redo}") from None
        if digest != expected:
            raise UserError(f"{path} does not match its sha256 in the manifest (corrupted or edited); "
                            f"{redo}, or pass --no-verify to use it anyway")


def _load_features(ds: Dataset, extractor: str, with_spatial: bool = True) -> Features:
    info = ds.manifest["features"].get(extractor)
    if info is None:
        have = ", ".join(ds.extractors) or "none"
        known = known_extractors()
        if known is not None and extractor not in known:
            raise UserError(f"unknown extractor '{extractor}'; choose one of: {', '.join(known)} "
                            f"(dataset {ds.path.name} has: {have})")
        add = prepare_hint(ds.path.name, ds.hint_dir, extractor=extractor if known is not None else "NAME")
        raise UserError(f"dataset {ds.path.name} has no '{extractor}' features (it has: {have}); add them with: {add}")
    rel = f"features/{extractor}.h5"
    path = ds.path / rel
    # prepare extracts a listed extractor again when its file is gone: the rest of the dataset stays
    redo = f"delete {path} and run: {prepare_hint(ds.path.name, ds.hint_dir, extractor=extractor)}"
    _check_file(ds, rel, redo)
    try:
        with open_h5(path) as f:
            ids = [i.decode() if isinstance(i, bytes) else str(i) for i in f["image_ids"][:]]
            arrays = {key: (f[key].shape, f[key].dtype) for key in ("global", "spatial") if key in f}
            if "global" not in arrays:
                raise KeyError("no 'global' dataset")
    except UnsafeH5 as e:
        raise UserError(f"{path}: {e}, which prepare never writes (HDF5 would read rows the sha256 does not "
                        f"cover); {redo}") from None
    except (OSError, KeyError, ValueError, TypeError) as e:  # truncated, not HDF5, a dataset missing
        raise UserError(f"{path} cannot be read ({_one_line(e)}); {redo}") from None
    expected_ids = [i for s in SPLITS for i in ds.splits[s].image_ids]
    if ids != expected_ids:
        pairs = zip(ids, expected_ids, strict=False)  # lengths may differ: that is the error
        bad = next((k for k, (a, b) in enumerate(pairs) if a != b), min(len(ids), len(expected_ids)))
        raise UserError(f"{path}: image ids are not aligned with captions.json (first difference at row {bad}); "
                        f"{redo}")
    for key, (shape, dtype) in arrays.items():
        if dtype.name not in FEATURE_DTYPES or shape[0] != len(ids):
            raise UserError(f"{path}: '{key}' is {dtype.name} {list(shape)}, expected {' or '.join(FEATURE_DTYPES)} "
                            f"with one row per image ({len(ids)}); {redo}")
    global_ = FeatureArray(path, "global", *arrays["global"])
    spatial = FeatureArray(path, "spatial", *arrays["spatial"]) if with_spatial and "spatial" in arrays else None
    if list(global_.shape[1:]) != [info["global_dim"]]:
        raise UserError(f"{path}: global features are {global_.shape[1:]}, the manifest says "
                        f"[{info['global_dim']}]; {redo}")
    if with_spatial and (spatial is None) != (info.get("spatial_shape") is None) or (
            spatial is not None and list(spatial.shape[1:]) != list(info["spatial_shape"])):
        raise UserError(f"{path}: spatial features {None if spatial is None else spatial.shape[1:]} do not match "
                        f"the manifest's {info.get('spatial_shape')}; {redo}")
    if ds.verify:  # a streaming pass, like the checksum's: the file may be larger than memory
        for key, arr in (("global", global_), ("spatial", spatial)):
            if arr is not None and not all(np.isfinite(block).all() for _, block in arr.blocks()):
                raise UserError(f"{path}: '{key}' contains NaN or inf; {redo}")
    return Features(extractor, global_, spatial)
