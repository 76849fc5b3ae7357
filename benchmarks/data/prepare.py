"""`python -m benchmarks prepare`: turn a caption source into a prepared dataset in shared_data/.

A dataset is built in `<data_dir>/.<name>.partial/` and renamed into place only when complete, so
a failed or interrupted prepare never leaves something that looks like a dataset; running the same
command again resumes (images already generated and feature rows already written are kept). An
existing dataset is reused, and a new extractor is added to it without touching the rest.

Nothing finished is ever deleted: a folder in the dataset's place without a manifest, or a finished
partial build of another command, is refused with what to do, and so is a link in the place of the
dataset (without a manifest) or of its build folder, through which the build would be written
elsewhere. Options are checked before any work starts, and a disk that fails during the build (full,
read-only) is one line naming the path, with the partial build kept for the resume.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from benchmarks.data.extractors import default_extractor, get_extractor
from shared_data import stress, synthetic
from shared_data.dataset import (
    DEFAULT_DATASET,
    default_data_dir,
    finalize_manifest,
    first_outside,
    load_dataset,
    plain_name,
    write_json_atomic,
    write_text_files,
)
from shared_data.errors import UserError
from shared_data.features import DEFAULT_FEATURE_DTYPE, FEATURE_DTYPES, write_features, write_rows
from shared_data.sources import SPLITS, Source

DATASETS = ("synthetic", "flickr8k", "karpathy", "random")


@dataclass
class PrepareOptions:
    dataset: str = "synthetic"
    size: str = "full"
    extractor: str | None = None  # None: synthnet for synthetic, grid otherwise
    weights: str = "imagenet"
    images: Path | None = None
    captions: Path | None = None
    karpathy_json: Path | None = None
    data_dir: Path | None = None
    name: str | None = None
    min_freq: int = 1
    seed: int = 0
    batch_size: int = 64
    feature_dtype: str = DEFAULT_FEATURE_DTYPE
    # random only (None: stress.DEFAULTS); for random, `images` is the image count
    global_dim: int | None = None
    grid: str | None = None
    vocab: int | None = None

    def random_shape(self) -> tuple[int, int, tuple[int, int] | None, int]:
        """(images, global dim, (positions, channels) or None, vocabulary) of a random dataset."""
        d = stress.DEFAULTS
        images = d["images"] if self.images is None else _whole(str(self.images), "--images", 3)
        global_dim = d["global_dim"] if self.global_dim is None else _whole(self.global_dim, "--global-dim", 1)
        vocab = d["vocab"] if self.vocab is None else _whole(self.vocab, "--vocab", 1)
        return images, global_dim, stress.parse_grid(d["grid"] if self.grid is None else self.grid), vocab

    def dataset_name(self) -> str:
        if self.name is not None:  # "" is a wrong name, not "no name": check() refuses it
            return self.name
        if self.dataset == "synthetic":
            return DEFAULT_DATASET if self.size == "full" else f"{DEFAULT_DATASET}-{self.size}"
        if self.dataset == "karpathy" and self.karpathy_json:
            return "karpathy-" + Path(self.karpathy_json).stem.removeprefix("dataset_")
        if self.dataset == "random":  # the shape in the name: two shapes never share a folder
            n, d, grid, v = self.random_shape()
            grid_text = "nogrid" if grid is None else (self.grid or stress.DEFAULTS["grid"]).replace(" ", "")
            return f"random-{n}-g{d}-{grid_text}-v{v}" + ("-f16" if self.feature_dtype == "float16" else "")
        return self.dataset

    def identity(self) -> dict:
        """What decides the dataset's content: a partial build is resumed, and a finished dataset
        reused, only if this matches."""
        identity = {"dataset": self.dataset, "size": self.size, "seed": self.seed, "min_freq": self.min_freq,
                    "images": str(self.images), "captions": str(self.captions),
                    "karpathy_json": str(self.karpathy_json)}
        if self.dataset == "random":
            n, d, grid, v = self.random_shape()
            identity.update(images=str(n), global_dim=d, grid=grid and list(grid), vocab=v)
        return identity

    def check(self) -> None:
        """Every option on its own, before anything is read, generated or written."""
        if self.dataset not in DATASETS:
            raise UserError(f"unknown dataset '{self.dataset}'; choose one of: {', '.join(DATASETS)}")
        if self.size not in synthetic.SIZES:
            raise UserError(f"unknown size '{self.size}'; choose one of: {', '.join(synthetic.SIZES)}")
        if self.feature_dtype not in FEATURE_DTYPES:
            raise UserError(f"--feature-dtype {self.feature_dtype!r} is not one of: {', '.join(FEATURE_DTYPES)}")
        for flag, value, least in (("--min-freq", self.min_freq, 1), ("--batch-size", self.batch_size, 1),
                                   ("--seed", self.seed, 0)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise UserError(f"{flag} must be a whole number, got {value!r}")
            if value < least:
                raise UserError(f"{flag} must be at least {least}, got {value}")
        # options that the chosen source would ignore: a silent no-op hides a mistyped command
        random_only = (("--global-dim", self.global_dim), ("--grid", self.grid), ("--vocab", self.vocab))
        ignored = {"synthetic": (("--images", self.images), ("--captions", self.captions),
                                 ("--karpathy-json", self.karpathy_json), *random_only),
                   "flickr8k": (("--karpathy-json", self.karpathy_json), *random_only),
                   "karpathy": (("--captions", self.captions), *random_only),
                   "random": (("--captions", self.captions), ("--karpathy-json", self.karpathy_json),
                              ("--extractor", self.extractor if self.extractor != stress.EXTRACTOR else None),
                              ("--weights", self.weights if self.weights != "imagenet" else None))}[self.dataset]
        if self.dataset != "synthetic" and self.size != "full":
            ignored += (("--size", self.size),)
        for flag, value in ignored:
            if value is not None:
                raise UserError(f"{flag} does not apply to dataset {self.dataset}; drop it, or name the "
                                f"dataset it is for (python -m benchmarks prepare --help)")
        if self.dataset == "random":
            self.random_shape()  # each number on its own
        check_dataset_name(self.dataset_name())


def _whole(value: object, flag: str, least: int) -> int:
    """A whole-number option of the random dataset, through the project's one value parser."""
    from shared_data.values import Interval, coerce

    raw = str(value) if isinstance(value, Path) else value  # --images arrives as a Path from argparse
    try:
        return coerce(raw, int, interval=Interval(float(least), math.inf, True, False))
    except ValueError as e:
        raise UserError(f"{flag} {value}: {e}") from None


def check_dataset_name(name: str) -> None:
    """A dataset is a plain folder in the data dir: no path, nothing hidden (.<name>.partial is ours)."""
    if not plain_name(name):
        raise UserError(f"--name {name!r} is not a plain folder name; use letters, digits, '-', '_' and '.' "
                        f"(not first), and --data-dir to choose where the dataset goes")


def prepare(opts: PrepareOptions, log=print) -> Path:
    opts.check()
    if opts.dataset == "random":
        opts.extractor, spec = stress.EXTRACTOR, None  # features from the generator, not from images
    else:
        if opts.extractor is None:
            opts.extractor = default_extractor(opts.dataset)
        spec = get_extractor(opts.extractor)
    data_dir = Path(opts.data_dir) if opts.data_dir else default_data_dir()
    _ensure_writable(data_dir)
    target = data_dir / opts.dataset_name()
    try:
        return _prepare(opts, spec, data_dir, target, log)
    except OSError as e:
        # the one place where a failing disk becomes a message; the partial build stays for a resume
        raise UserError(_os_error_message(e, data_dir, target)) from None


def _prepare(opts: PrepareOptions, spec, data_dir: Path, target: Path, log) -> Path:
    t0 = time.perf_counter()
    built = False
    if not (target / "manifest.json").exists():
        _check_target(target)
        _build(opts, spec, data_dir, target, log)
        built = True
    ds = load_dataset(str(target), verify=False)
    if not built:
        _check_reuse(target, ds.manifest, opts)
    have_file = (target / "features" / f"{opts.extractor}.h5").is_file()
    if opts.extractor in ds.manifest["features"] and have_file:
        if built:
            _log_prepared(target, ds.manifest, t0, log)
        else:
            log(f"{target} already has '{opts.extractor}' features: reusing it")
        return target
    if spec is None:
        raise UserError(f"{target}/features/{opts.extractor}.h5 is missing; delete {target} and run the same "
                        "command again")
    if opts.extractor in ds.manifest["features"]:
        log(f"{target}: features/{opts.extractor}.h5 is missing, extracting it again")
    _add_features(target, ds.manifest, spec, opts, log)
    log(f"added '{opts.extractor}' features to {target} in {time.perf_counter() - t0:.1f}s")
    return target


def _check_reuse(target: Path, manifest: dict, opts: PrepareOptions) -> None:
    """An existing dataset is reused only for the command that made it: an option given that
    contradicts how it was made (another seed, vocabulary threshold, size or feature dtype) is
    refused, not silently ignored. Options left at their defaults are not a contradiction:
    `prepare --name X --extractor E` adds features to X whatever X was made with."""
    made_by = manifest.get("prepare")
    if isinstance(made_by, dict):
        wanted, default = opts.identity(), PrepareOptions().identity()
        # what decides the content; the source's paths may be spelled differently from another folder
        keys = [k for k in wanted if wanted[k] != default.get(k)
                and (k not in ("images", "captions", "karpathy_json") or opts.dataset == "random")]
        diff = [k for k in keys if k in made_by and made_by[k] != wanted[k]]
        if diff:
            key = diff[0]
            raise UserError(f"{target} was prepared with {key} {made_by[key]}, this command asks for {wanted[key]}; "
                            f"use another --name (or --data-dir) for the new dataset, or delete {target} first")
    have = manifest["features"].get(opts.extractor)
    if (isinstance(have, dict) and opts.feature_dtype != DEFAULT_FEATURE_DTYPE
            and have.get("dtype", DEFAULT_FEATURE_DTYPE) != opts.feature_dtype):
        raise UserError(f"{target} has '{opts.extractor}' features stored as {have.get('dtype', 'float32')}, this "
                        f"command asks for {opts.feature_dtype}; delete {target}/features/{opts.extractor}.h5 to "
                        "extract them again, or drop --feature-dtype")


def _check_target(target: Path) -> None:
    """A folder in the dataset's place without a manifest is not ours to replace: it may be a
    finished build whose manifest was deleted, or something else entirely."""
    if not (target.exists() or target.is_symlink()):
        return
    if target.is_symlink():  # a build would be written, and later renamed, through it
        raise UserError(f"{target} is a link (to {os.path.realpath(target)}) without a manifest.json; nothing was "
                        f"changed: remove the link, or choose another --name or --data-dir")
    if not target.is_dir():
        raise UserError(f"{target} exists and is not a dataset folder; move it away, or choose another "
                        f"--name or --data-dir")
    if any(target.iterdir()):
        raise UserError(f"{target} exists but has no manifest.json (an unfinished or damaged dataset, or "
                        f"another folder); nothing was changed: move or delete it, or choose another --name "
                        f"or --data-dir")


def _build(opts: PrepareOptions, spec, data_dir: Path, target: Path, log) -> None:
    """Build (or resume, or finish) the dataset in .<name>.partial/ and rename it into place."""
    work = data_dir / f".{target.name}.partial"
    identity_file = work / "prepare.json"
    same = False
    if work.is_symlink():  # the build, and the deletion of an unfinished one, would happen where it points
        raise UserError(f"{work} is a link (to {os.path.realpath(work)}), not the build folder prepare makes; "
                        f"delete the link and run again")
    if work.exists():
        if not work.is_dir():
            raise UserError(f"{work} is in the way of the build folder and is not a folder; delete it")
        same = _read_identity(identity_file) == opts.identity()
        if not same and (work / "manifest.json").exists():
            raise UserError(f"{work} holds a finished build, not made by this command; if it is the "
                            f"dataset you want rename it to {target.name}, else delete it, then run again")
    if same and (work / "manifest.json").exists():
        log(f"{work} is a finished build of the same command: moving it into place")
    else:
        # an imported source is read and checked before anything is written: bad input leaves no trace
        source = None if opts.dataset in ("synthetic", "random") else _import_source(opts, log)
        if work.exists() and not same:
            shutil.rmtree(work)  # an unfinished build of another command: nothing in it can be trusted
        work.mkdir(parents=True, exist_ok=True)
        write_json_atomic(identity_file, opts.identity())
        log(f"preparing {target.name} ({opts.dataset}) in {work}")
        if opts.dataset == "synthetic":
            n = synthetic.SIZES[opts.size]
            log(f"generating {n} images (seed {opts.seed})")
            image_dir = work / "images"
            source = synthetic.build_source(image_dir, n, seed=opts.seed)
        elif opts.dataset == "random":
            n, _, _, vocab = opts.random_shape()
            log(f"generating {n} images' captions over a Zipf vocabulary of {vocab} words (seed {opts.seed})")
            image_dir = work / "images"  # none: the features are generated directly
            source = stress.build_source(n, vocab, opts.seed)
        else:
            image_dir = _common_image_dir(source)
        # imported real datasets are tokenised as the COCO evaluation does: scores compare with the literature's
        tokenizer = "ptb" if opts.dataset in ("flickr8k", "karpathy") else "capbench"
        manifest = write_text_files(source, work, target.name, image_dir, opts.min_freq, tokenizer)
        manifest["prepare"] = opts.identity()
        manifest["human_ceiling_test"] = _human_ceiling(work)
        if spec is None:
            _add_random_features(work, manifest, opts, log)
        else:
            _add_features(work, manifest, spec, opts, log)  # writes manifest.json: the build is complete
    if target.is_dir():
        target.rmdir()  # empty (_check_target): os.replace cannot replace a folder everywhere
    os.replace(work, target)
    # the identity stays until the rename: a build that completed but did not move is finished, not redone
    (target / "prepare.json").unlink(missing_ok=True)


def _read_identity(identity_file: Path) -> dict | None:
    try:
        return json.loads(identity_file.read_text())
    except (OSError, ValueError):
        return None  # absent or damaged: the partial build cannot be matched to a command


def _log_prepared(target: Path, manifest: dict, t0: float, log) -> None:
    log(f"prepared {target} in {time.perf_counter() - t0:.1f}s: "
        + ", ".join(f"{s} {manifest['splits'][s]['images']} images" for s in SPLITS)
        + f", vocabulary {manifest['vocab']['size']}, human ceiling BLEU-4 "
        f"{manifest.get('human_ceiling_test', {}).get('BLEU-4', float('nan')):.3f}")
    for w in manifest.get("warnings", []):
        log(f"warning: {w}")


_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def _os_error_message(e: OSError, data_dir: Path, target: Path) -> str:
    """One line for an OSError during a build: the path, the cause, what to do, and that a resume
    keeps the work done so far."""
    code = e.errno
    if code is None:  # h5py puts the errno in its message only
        found = re.search(r"errno = (\d+)", str(e))
        code = int(found.group(1)) if found else None
    work = data_dir / f".{target.name}.partial"
    where = e.filename or (work if work.exists() else target)
    reason = e.strerror or " ".join(str(e).split()) or type(e).__name__
    if code in _NO_SPACE:
        todo = f"free some space on that disk or choose another --data-dir than {data_dir}"
    elif code in _READ_ONLY:
        todo = f"make it writable or choose another --data-dir than {data_dir}"
    else:
        todo = "fix the cause"
    return (f"prepare failed on {where} ({reason}); {todo}, then run the same command again "
            f"(the work done so far is kept and resumed)")


def _human_ceiling(root: Path) -> dict:
    """BLEU/ROUGE-L/CIDEr of each test image's first caption against its others: the reference point
    for every model score on this dataset (METEOR left out: its Java start-up would double the time)."""
    from benchmarks.scoring.metrics import human_ceiling

    test = json.loads((root / "captions.json").read_text())["test"]
    scores = human_ceiling({e["image_id"]: e["captions"] for e in test}, meteor=False)
    return {k: round(v, 4) for k, v in scores.items()}


def _ensure_writable(data_dir: Path) -> None:
    how = "choose another with --data-dir or the CAPBENCH_DATA_DIR environment variable"
    blocker = next((p for p in (data_dir, *data_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        what = "it" if blocker == data_dir else str(blocker)
        raise UserError(f"data dir {data_dir} is not writable: {what} is a file, not a folder; {how}")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or " ".join(str(e).split())
        raise UserError(f"data dir {data_dir} is not writable ({reason}); make it writable or {how}") from None


def _import_source(opts: PrepareOptions, log) -> Source:
    from shared_data import importers  # real datasets only

    if opts.images is None:
        raise UserError(f"dataset {opts.dataset} needs --images DIR (the folder with the image files)")
    if opts.dataset == "flickr8k":
        source = importers.load_flickr8k(Path(opts.images), opts.captions, seed=opts.seed)
    else:
        if opts.karpathy_json is None:
            raise UserError("dataset karpathy needs --karpathy-json FILE (dataset_flickr8k.json, "
                            "dataset_flickr30k.json or dataset_coco.json)")
        source = importers.load_karpathy(Path(opts.karpathy_json), Path(opts.images))
    return _drop_unreadable(source, log)


def _common_image_dir(source: Source) -> Path:
    """The folder D with every image at D / image_id (importers guarantee one exists)."""
    first = source.images[0]
    return Path(os.path.abspath(first.path)[: -len(first.image_id)])


def _drop_unreadable(source: Source, log) -> Source:
    """Images that are not images are skipped and counted, not fatal: one bad JPEG in 8,000 should
    not stop a prepare, but nobody should be surprised by a smaller dataset either."""
    bad = [im for im in source.images if not _decodes(im.path)]
    if not bad:
        return source
    if len(bad) == len(source.images):
        raise UserError(f"none of the {len(bad)} images could be decoded (first: {bad[0].path}); "
                        "check --images")
    skipped = {id(b) for b in bad}
    source.images = [im for im in source.images if id(im) not in skipped]
    source.warnings.append(f"{len(bad)} image(s) could not be decoded and were skipped "
                           f"(first: {bad[0].path})")
    log(f"warning: {source.warnings[-1]}")
    return source


def _decodes(path: Path) -> bool:
    """Whether the whole image decodes. verify() reads headers only and passes a JPEG cut in half,
    which would then stop the feature extraction; draft() decodes a JPEG at 1/8 scale, which still
    reads every byte of it, at a fraction of the cost."""
    try:
        with Image.open(path) as f:
            f.draft("RGB", (1, 1))
            f.load()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def _add_features(root: Path, manifest: dict, spec, opts: PrepareOptions, log) -> None:
    captions = json.loads((root / "captions.json").read_text())
    ids = [e["image_id"] for s in SPLITS for e in captions[s]]
    image_dir = root / manifest["image_dir"]
    outside = first_outside(image_dir, (image_dir / i for i in ids))
    if outside is not None:  # the ids themselves were checked when the dataset was loaded
        raise UserError(f"image {outside} leads outside {image_dir} (a link to {os.path.realpath(outside)}); put "
                        f"the file itself there, or delete {root} and prepare it again")
    weights = opts.weights if spec.needs_weights else "n/a"
    log(f"extracting '{spec.name}' features ({spec.framework}, weights: {weights}) for {len(ids)} images")
    extract = spec.build(opts.weights)
    (root / "features").mkdir(exist_ok=True)
    shapes = write_features(root / "features" / f"{spec.name}.h5", image_dir, ids, extract,
                            spec.image_size, opts.batch_size, desc=spec.name, dtype=opts.feature_dtype)
    manifest["features"][spec.name] = {**shapes, "framework": spec.framework, "weights": weights,
                                       # which weights exactly: "imagenet" names a file, not its contents
                                       "weights_sha256": getattr(extract, "weights_sha256", None),
                                       "image_size": spec.image_size, "description": spec.description}
    finalize_manifest(root, manifest)


def _add_random_features(root: Path, manifest: dict, opts: PrepareOptions, log) -> None:
    captions = json.loads((root / "captions.json").read_text())
    ids = [e["image_id"] for s in SPLITS for e in captions[s]]
    _, global_dim, grid, _ = opts.random_shape()
    shape = f"global {global_dim}" + ("" if grid is None else f", spatial {grid[0]}x{grid[1]}")
    log(f"writing random features ({shape}, {opts.feature_dtype}) for {len(ids)} images")
    (root / "features").mkdir(exist_ok=True)
    shapes = write_rows(root / "features" / f"{stress.EXTRACTOR}.h5", ids,
                        stress.feature_rows(global_dim, grid, opts.seed), stress.rows_per_block(global_dim, grid),
                        desc=stress.EXTRACTOR, dtype=opts.feature_dtype)
    manifest["features"][stress.EXTRACTOR] = {**shapes, "framework": "numpy", "weights": "n/a", "image_size": None,
                                              "description": f"uniform random numbers ({shape}): scale tests only"}
    finalize_manifest(root, manifest)
