"""Building a dataset folder: import or generate the source, write captions, vocabulary and splits,
extract features, in a work folder that is moved into place only when complete (resumable)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from benchmarks.data.options import PrepareOptions
from shared_data import flickr8k, karpathy, stress, synthetic
from shared_data.dataset import first_outside
from shared_data.dataset_writing import finalize_manifest, write_text_files
from shared_data.errors import UserError
from shared_data.features import write_features, write_rows
from shared_data.files import write_json
from shared_data.sources import SPLITS, Source


def build(opts: PrepareOptions, spec, data_dir: Path, target: Path, log) -> None:
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
        write_json(identity_file, opts.identity())
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
            add_features(work, manifest, spec, opts, log)  # writes manifest.json: the build is complete
    if target.is_dir():
        target.rmdir()  # empty (_check_target): os.replace cannot replace a folder everywhere
    os.replace(work, target)
    # the identity stays until the rename: a build that completed but did not move is finished, not redone
    (target / "prepare.json").unlink(missing_ok=True)


def _human_ceiling(root: Path) -> dict:
    """BLEU/ROUGE-L/CIDEr of each test image's first caption against its others: the reference point
    for every model score on this dataset (METEOR left out: its Java start-up would double the time)."""
    from benchmarks.scoring.metrics import human_ceiling

    test = json.loads((root / "captions.json").read_text())["test"]
    scores = human_ceiling({e["image_id"]: e["captions"] for e in test}, meteor=False)
    return {k: round(v, 4) for k, v in scores.items()}


def _import_source(opts: PrepareOptions, log) -> Source:

    if opts.images is None:
        raise UserError(f"dataset {opts.dataset} needs --images DIR (the folder with the image files)")
    if opts.dataset == "flickr8k":
        source = flickr8k.load_flickr8k(Path(opts.images), opts.captions, seed=opts.seed)
    else:
        if opts.karpathy_json is None:
            raise UserError("dataset karpathy needs --karpathy-json FILE (dataset_flickr8k.json, "
                            "dataset_flickr30k.json or dataset_coco.json)")
        source = karpathy.load_karpathy(Path(opts.karpathy_json), Path(opts.images))
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


def add_features(root: Path, manifest: dict, spec, opts: PrepareOptions, log) -> None:
    captions = json.loads((root / "captions.json").read_text())
    ids = [e["image_id"] for s in SPLITS for e in captions[s]]
    image_dir = root / manifest["image_dir"]
    outside = first_outside(image_dir, (image_dir / i for i in ids))
    if outside is not None:  # the ids themselves were checked when the dataset was loaded
        raise UserError(f"image {outside} leads outside {image_dir} (a link to {os.path.realpath(outside)}); put "
                        f"the file itself there, or delete {root} and prepare it again")
    weights = opts.weights if spec.needs_weights else "n/a"
    extract = spec.build(opts.weights)
    sha = getattr(extract, "weights_sha256", None)  # which weights exactly: "imagenet" names a file
    which = weights + (f", sha256 {sha[:12]}" if sha else "")
    log(f"extracting '{spec.name}' features ({spec.framework}, weights: {which}) for {len(ids)} images")
    (root / "features").mkdir(exist_ok=True)
    shapes = write_features(root / "features" / f"{spec.name}.h5", image_dir, ids, extract,
                            spec.image_size, opts.batch_size, desc=spec.name, dtype=opts.feature_dtype)
    manifest["features"][spec.name] = {**shapes, "framework": spec.framework, "weights": weights,
                                       "weights_sha256": sha,
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


def _read_identity(identity_file: Path) -> dict | None:
    try:
        return json.loads(identity_file.read_text())
    except (OSError, ValueError):
        return None  # absent or damaged: the partial build cannot be matched to a command
