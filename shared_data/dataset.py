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
not match the manifest (schema, structure, checksums, alignment, shapes, NaN/inf), each with a one-line
error that names the file and gives the prepare command to run (with the same --data-dir).

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

import hashlib
import json
import os
import shlex
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .features import FEATURE_DTYPES, FeatureArray, UnsafeH5, ZeroRows, open_h5
from .schema import Each, Optional, is_int, json_type
from .schema import problem as schema_problem
from .sources import SPLITS, Source
from .text import SPECIALS, Vocab, tokenize_all

SCHEMA_VERSION = 1
DATA_DIR_ENV = "CAPBENCH_DATA_DIR"
DEFAULT_DATASET = "synthetic"
# Every batch is padded to the longest caption, so one 10,000-word caption (a pasted paragraph) made
# a run hang without a word; real captions are tens of words (the random dataset's longest is 40).
MAX_CAPTION_WORDS = 100
MAX_LENGTH = MAX_CAPTION_WORDS + 2  # <start> and <end>: a manifest that asks for more was edited
# Warned at prepare, not refused: a tiny vocabulary or many unknown words is legal but makes every
# score meaningless (--min-freq 1000000 left the 4 special tokens and every test word unknown). 20
# words is far below any real vocabulary (synthetic: 172, Flickr8k: 8,485); 5% unknown is one word in
# twenty, where the synthetic dataset has none.
MIN_VOCAB_WORDS = 20
MAX_UNK_RATE = 0.05


def default_data_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent / "datasets"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# not part of a dataset's identity: the feature files' own checksums (float32 kernels sum in an order
# that depends on the CPU, so the same images and weights give features that differ in their last
# bits on another machine: recorded per run, as the training's own CPU-dependent bits are), and where
# the prepare command found its inputs and what it skipped there (paths of one machine)
NOT_IDENTITY = ("prepare", "warnings")


def dataset_identity(manifest: dict) -> str:
    """sha256 of what a dataset is, the same on every machine that prepared it from the same sources
    with the same extractor weights: the manifest without NOT_IDENTITY and the feature files' bytes,
    whose extractors stay identified by their manifest entries (weights' sha256, shapes, dtype). A
    run's configuration hash includes it, so a study resumed on another machine reuses its runs."""
    kept = {k: v for k, v in manifest.items() if k not in NOT_IDENTITY}
    kept["files"] = {f: h for f, h in (manifest.get("files") or {}).items() if not f.startswith("features/")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------- paths
def plain_name(name: str) -> bool:
    """A single folder or file name that is not hidden: dataset names and extractor names."""
    return (bool(name) and name == name.strip() and not name.startswith(".") and len(name) <= 200
            and not any(c in name for c in "/\\\0"))


def path_problem(rel: str) -> str | None:
    """Why `rel` is not a plain relative path (names joined by '/'), in words; None when it is one."""
    if rel.startswith("/"):
        return "is an absolute path"
    if not rel.isprintable():
        return "contains a control character (a line break, a tab, a NUL byte)"
    if "\\" in rel or "\0" in rel:
        return "contains a backslash or a NUL byte"
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return "is not a plain relative path (it has an empty, '.' or '..' part)"
    return None


def first_outside(root: Path, paths: Iterable[Path]) -> Path | None:
    """The first of `paths` that, links followed, is not inside `root`; None when all are."""
    real_root = os.path.realpath(root)
    prefix = real_root.rstrip(os.sep) + os.sep
    for path in paths:
        real = os.path.realpath(path)
        if real != real_root and not real.startswith(prefix):
            return path
    return None


def write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))  # default: numpy scalars
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------- writing
def write_text_files(source: Source, out_dir: Path, name: str, image_dir: Path, min_freq: int = 1,
                     tokenizer: str = "capbench") -> dict:
    """vocab.json, captions.json (and objects.json) for a source; returns the manifest's body.

    Every image's file is `image_dir / image_id`, which holds for all sources. The captions are
    tokenised here, once (shared_data.text.TOKENIZERS): training, the vocabulary and the metrics all
    see these tokens.
    """
    by_split: dict[str, list] = {s: [] for s in SPLITS}
    for im in source.images:
        by_split[im.split].append(im)
    empty = [s for s in SPLITS if not by_split[s]]
    if empty:
        raise UserError(f"{source.name}: split(s) {', '.join(empty)} would be empty; "
                        "the dataset needs train, val and test images")
    bare = next((im for im in source.images if not im.captions), None)
    if bare is not None:
        raise UserError(f"{source.name}: image {bare.image_id} ({bare.split}) has no captions; every image "
                        "needs at least one (val and test images are scored against theirs)")
    flat = tokenize_all([c for s in SPLITS for im in by_split[s] for c in im.captions], tokenizer)
    cut = sum(len(t) > MAX_CAPTION_WORDS for t in flat)
    flat = [t[:MAX_CAPTION_WORDS] for t in flat]
    tokenised, k = {}, 0
    for s in SPLITS:
        tokenised[s] = []
        for im in by_split[s]:
            tokenised[s].append(flat[k:k + len(im.captions)])
            k += len(im.captions)
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
        "tokenizer": tokenizer,
        "vocab": {"size": len(vocab), "min_freq": min_freq, "built_from": "train",
                  "unk_rate_test": _unk_rate(vocab, tokenised["test"])},
        # <start> and <end> included: the padded length every batch and decoder must fit
        "max_length": max(lengths) + 2,
        "caption_words": {"mean": round(statistics.fmean(train_lengths), 3), "max": max(lengths),
                          "min": min(lengths), "median": statistics.median(train_lengths)},
        "features": {},
        "warnings": list(source.warnings) + _bound_warnings(cut, vocab, tokenised),
    }


def _bound_warnings(cut: int, vocab: Vocab, tokenised: dict[str, list]) -> list[str]:
    """What is legal but makes a dataset's scores meaningless or its captions shorter than given."""
    warnings = []
    if cut:
        warnings.append(f"{cut} caption(s) longer than {MAX_CAPTION_WORDS} words were cut to {MAX_CAPTION_WORDS}")
    words = len(vocab) - len(SPECIALS)
    if words < MIN_VOCAB_WORDS:
        warnings.append(f"the vocabulary has {words} words besides the special tokens (fewer than "
                        f"{MIN_VOCAB_WORDS}), all a model can write captions with; lower --min-freq "
                        f"(now {vocab.min_freq}) or use more training captions")
    for s in ("val", "test"):
        rate = _unk_rate(vocab, tokenised[s])
        if rate > MAX_UNK_RATE:
            warnings.append(f"{rate:.1%} of the {s} captions' words are not in the vocabulary (more than "
                            f"{MAX_UNK_RATE:.0%}), which caps every model's score; lower --min-freq (now "
                            f"{vocab.min_freq}) or check that the splits share a vocabulary")
    return warnings


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
        problem = schema_problem(objects, _OBJECTS)
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


def resolve_dataset_path(name: str, data_dir: Path | None = None) -> Path:
    p = Path(name)
    try:
        if p.is_absolute() or (p.exists() and (p / "manifest.json").exists()):
            return p
        (data_dir or default_data_dir()).joinpath(name).exists()  # a name the file system refuses fails here
    except OSError as e:
        raise UserError(f"--dataset {name[:40]!r}...: not a dataset name or folder ({e.strerror or e}); "
                        "python -m benchmarks list shows the prepared ones") from None
    return (data_dir or default_data_dir()) / name


def _hint_dir(path: Path, data_dir: Path | None) -> Path | None:
    """The --data-dir a prepare command for the dataset at `path` needs: the one the user gave, or
    the folder the dataset is in; none when that is the default data dir and the user gave none."""
    if data_dir is None and path.parent.resolve() == default_data_dir().resolve():
        return None
    return path.parent


def _synthetic_size(name: str, source: dict) -> str | None:
    """synthetic's --size for a dataset: from the manifest's image count, else from its default name."""
    from .synthetic import SIZES  # lazily: the generator is not needed to load a dataset

    for size, count in SIZES.items():
        if source.get("images") == count:
            return size
    for size in SIZES:
        if name == (DEFAULT_DATASET if size == "full" else f"{DEFAULT_DATASET}-{size}"):
            return size
    return None


def prepare_hint(name: str, data_dir: Path | None = None, manifest: dict | None = None,
                 extractor: str | None = None) -> str:
    """The prepare command that creates dataset `name` in `data_dir` (None: the default data dir),
    from what its manifest records of the source when there is one; with `extractor`, the command
    that adds (or redoes a deleted file of) that extractor's features to the existing dataset.

    The manifest may be damaged: everything read from it is checked, and unknowns stay placeholders.
    """
    manifest = manifest if isinstance(manifest, dict) else {}
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    kind = source.get("kind") if isinstance(source.get("kind"), str) else None
    seed_value = source.get("seed")
    seed = ["--seed", str(seed_value)] if is_int(seed_value) and seed_value != 0 else []
    args: list[str] = []
    size = _synthetic_size(name, source) if kind in (None, "synthetic") else None
    if extractor is not None:
        args = ["--name", name, "--extractor", extractor]
    elif size is not None:
        args = (["--size", size] if size != "full" else []) + seed
        if name != (DEFAULT_DATASET if size == "full" else f"{DEFAULT_DATASET}-{size}"):
            args += ["--name", name]
    elif kind == "flickr8k":
        args = ["flickr8k", "--images", _text(source.get("images_dir"), "DIR")]
        if isinstance(source.get("captions_file"), str):
            args += ["--captions", source["captions_file"]]
        args += seed + (["--name", name] if name != "flickr8k" else [])
    elif kind is not None and kind.startswith("karpathy-"):
        args = ["karpathy", "--karpathy-json", _text(source.get("json_file"), "FILE"),
                "--images", _text(source.get("images_dir"), "DIR"), "--name", name]
    else:
        args = ["DATASET", "--name", name]
    if extractor is None:
        vocab = manifest.get("vocab") if isinstance(manifest.get("vocab"), dict) else {}
        min_freq = vocab.get("min_freq")
        if is_int(min_freq) and min_freq != 1:
            args += ["--min-freq", str(min_freq)]
        features = manifest.get("features") if isinstance(manifest.get("features"), dict) else {}
        first = next(iter(features), None)
        if isinstance(first, str) and _extractor_known(first):
            args += ["--extractor", first]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    command = " ".join(["python -m benchmarks prepare", *(shlex.quote(a) for a in args)])
    if "DATASET" in args or extractor == "NAME":
        command += " (see python -m benchmarks prepare --help and python -m benchmarks list)"
    return command


def _text(value: object, placeholder: str) -> str:
    return value if isinstance(value, str) and value else placeholder


def _known_extractors() -> list[str] | None:
    """The extractor names of benchmarks.data.extractors when that registry is loaded (the CLI always
    loads it). shared_data never imports benchmarks: without the registry, messages stay generic."""
    registry = getattr(sys.modules.get("benchmarks.data.extractors"), "EXTRACTORS", None)
    return list(registry) if isinstance(registry, dict) else None


def _extractor_known(name: str) -> bool:
    known = _known_extractors()
    return known is not None and name in known


def load_dataset(name: str = DEFAULT_DATASET, data_dir: Path | None = None, verify: bool = True) -> Dataset:
    path = resolve_dataset_path(name, data_dir)
    hint_dir = _hint_dir(path, data_dir)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise _not_a_dataset(path, data_dir, hint_dir)
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
    problem = _manifest_problem(manifest, path)
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
    problem = _captions_problem(captions, manifest["max_length"] - 2)
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


def _not_a_dataset(path: Path, data_dir: Path | None, hint_dir: Path | None) -> UserError:
    """What to do when `path` has no manifest. --dataset takes a name in the data dir or a dataset's
    folder; `--dataset /` or a raw Flickr8k folder was answered "move or delete that folder"."""
    from .importers import import_command  # lazily: loading a dataset needs no importer

    home = data_dir or default_data_dir()
    takes = (f"--dataset takes the name of a dataset prepared in {home} (python -m benchmarks list shows "
             f"them) or the folder of one")
    source = import_command(path)
    if source is not None:
        args, name = source
        command = " ".join(["python -m benchmarks prepare", *map(shlex.quote, args)]
                           + ([] if data_dir is None else ["--data-dir", shlex.quote(str(data_dir))]))
        return UserError(f"{path} is a caption source, not a prepared dataset; {takes}; import it first: "
                         f"{command}, then pass --dataset {name}")
    if path.exists() and not path.is_dir():
        return UserError(f"{path} is a file, not a prepared dataset; {takes}")
    if not _non_empty_dir(path):
        return UserError(f"no prepared dataset at {path}; create it with: {prepare_hint(path.name, hint_dir)}")
    if os.path.realpath(path.parent) != os.path.realpath(home):
        return UserError(f"{path} is not a prepared dataset (it has no manifest.json); {takes}; "
                         "python -m benchmarks prepare --help shows how to make one")
    return UserError(f"{path} has no manifest.json, so it is not a prepared dataset (an unfinished build, or "
                     f"the manifest was deleted); move or delete that folder, then run: "
                     f"{prepare_hint(path.name, hint_dir)}")


def _leads_outside(path: Path, root: Path, redo: str) -> str:
    return (f"{path} leads outside {root} (a link to {os.path.realpath(path)}); a dataset's files stay in "
            f"its folder: {redo}")


def _non_empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return True  # unreadable: something is there


# ------------------------------------------------------------------------- structure checks
def _shape(value: object) -> bool:
    return isinstance(value, list) and all(is_int(v) and v > 0 for v in value)


# Everything that load_dataset, its callers (list, run, report, prepare) and the feature loader index
# in a manifest: checked once here, so that a damaged manifest is one line, not a KeyError later.
_MANIFEST = {
    "name": str,
    "image_dir": str,
    "max_length": int,
    "source": {"kind": str},
    "splits": {s: {"images": int, "captions": int} for s in SPLITS},
    "vocab": {"size": int},
    "features": Each({"global_dim": int, "spatial_shape": Optional(_shape)}),
    "files": Each(str),
    "human_ceiling_test": Optional(Each(float)),
}
# objects.json (the embedded dataset's scenes), read by the grounding scores after training: checked
# whenever it is read, and by the worker before training
_OBJECTS = Each({"objects": [{"shape": str, "colour": str, "size": str, "x": float, "y": float, "radius": float,
                              "depth": int, "bbox": [float]}]})


def _manifest_problem(manifest: dict, path: Path) -> str | None:
    """What is wrong with a manifest's structure, names, paths or bounds; None when nothing is."""
    problem = schema_problem(manifest, _MANIFEST)
    if problem:
        return problem
    name = next((k for k in manifest["features"] if not plain_name(k)), None)
    if name is not None:
        return f"features key {name!r} is not a plain extractor name"
    rel = next((k for k in manifest["files"] if path_problem(k)), None)
    if rel is not None:
        return f"'files' key {rel!r} {path_problem(rel)}"
    image_dir = manifest["image_dir"]
    if not os.path.isabs(image_dir):  # absolute: an imported dataset's --images (see the docstring)
        why = path_problem(image_dir) or (first_outside(path, [path / image_dir]) and "leads outside the dataset")
        if why:
            return f"'image_dir' {image_dir!r} {why}"
    if not 2 <= manifest["max_length"] <= MAX_LENGTH:
        return (f"'max_length' is {manifest['max_length']}, outside [2, {MAX_LENGTH}] (prepare cuts captions to "
                f"{MAX_CAPTION_WORDS} words)")
    return None


def _captions_problem(captions: object, max_words: int) -> str | None:
    if not isinstance(captions, dict):
        return f"is {json_type(captions)}, expected an object with the splits {', '.join(SPLITS)}"
    for s in SPLITS:
        entries = captions.get(s)
        if not isinstance(entries, list):
            return f"split '{s}' is {'missing' if s not in captions else json_type(entries)}, expected a list"
        for k, e in enumerate(entries):
            problem = _entry_problem(e, max_words)
            if problem:
                return f"{s}[{k}] {problem}"
    return None


def _entry_problem(e: object, max_words: int) -> str | None:
    if not (isinstance(e, dict) and isinstance(e.get("image_id"), str)
            and isinstance(e.get("captions"), list) and all(isinstance(c, str) for c in e["captions"])):
        return 'is not {"image_id": "...", "captions": ["...", ...]}'
    image_id = e["image_id"]
    why = path_problem(image_id)
    if why:
        return f"image id {image_id!r} {why}"
    if not e["captions"]:
        return (f"({image_id}) has no captions; every image needs at least one (val and test images are scored "
                "against theirs)")
    # words are joined by one space: counting spaces is cheap for COCO's 616k captions, split only to be sure
    if any(c.count(" ") >= max_words and len(c.split()) > max_words for c in e["captions"]):
        return f"({image_id}) has a caption longer than the manifest's max_length allows ({max_words} words)"
    return None


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
        known = _known_extractors()
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
