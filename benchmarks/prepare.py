"""`python -m benchmarks prepare`: turn a caption source into a prepared dataset in shared_data/.

A dataset is built in `<data_dir>/.<name>.partial/` and renamed into place only when complete, so
a failed or interrupted prepare never leaves something that looks like a dataset; running the same
command again resumes (images already generated and feature rows already written are kept). An
existing dataset is reused, and a new extractor is added to it without touching the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from shared_data import synthetic
from shared_data.dataset import (
    DEFAULT_DATASET,
    default_data_dir,
    finalize_manifest,
    load_dataset,
    write_json_atomic,
    write_text_files,
)
from shared_data.errors import UserError
from shared_data.features import write_features
from shared_data.sources import SPLITS, Source

from .extractors import default_extractor, get_extractor

DATASETS = ("synthetic", "flickr8k", "karpathy")


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

    def dataset_name(self) -> str:
        if self.name:
            return self.name
        if self.dataset == "synthetic":
            return DEFAULT_DATASET if self.size == "full" else f"{DEFAULT_DATASET}-{self.size}"
        if self.dataset == "karpathy" and self.karpathy_json:
            return "karpathy-" + self.karpathy_json.stem.removeprefix("dataset_")
        return self.dataset

    def identity(self) -> dict:
        """What decides the dataset's content: a partial build is resumed only if this matches."""
        return {"dataset": self.dataset, "size": self.size, "seed": self.seed, "min_freq": self.min_freq,
                "images": str(self.images), "captions": str(self.captions),
                "karpathy_json": str(self.karpathy_json)}


def prepare(opts: PrepareOptions, log=print) -> Path:
    if opts.dataset not in DATASETS:
        raise UserError(f"unknown dataset '{opts.dataset}'; choose one of: {', '.join(DATASETS)}")
    if opts.size not in synthetic.SIZES:
        raise UserError(f"unknown size '{opts.size}'; choose one of: {', '.join(synthetic.SIZES)}")
    if opts.min_freq < 1:
        raise UserError(f"--min-freq must be at least 1, got {opts.min_freq}")
    if opts.extractor is None:
        opts.extractor = default_extractor(opts.dataset)
    spec = get_extractor(opts.extractor)
    data_dir = Path(opts.data_dir) if opts.data_dir else default_data_dir()
    _ensure_writable(data_dir)
    target = data_dir / opts.dataset_name()
    t0 = time.perf_counter()

    if (target / "manifest.json").exists():
        ds = load_dataset(str(target), verify=False)
        if opts.extractor in ds.manifest["features"]:
            log(f"{target} already has '{opts.extractor}' features: reusing it")
            return target
        _add_features(target, ds.manifest, spec, opts, log)
        log(f"added '{opts.extractor}' features to {target} in {time.perf_counter() - t0:.1f}s")
        return target

    work = data_dir / f".{target.name}.partial"
    identity_file = work / "prepare.json"
    if work.exists() and (not identity_file.exists()
                          or json.loads(identity_file.read_text()) != opts.identity()):
        shutil.rmtree(work)  # left by a different command: nothing in it can be trusted
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(identity_file, opts.identity())

    log(f"preparing {target.name} ({opts.dataset}) in {work}")
    source, image_dir = _load_source(opts, work, log)
    manifest = write_text_files(source, work, target.name, image_dir, opts.min_freq)
    manifest["human_ceiling_test"] = _human_ceiling(work)
    _add_features(work, manifest, spec, opts, log)
    identity_file.unlink()
    os.replace(work, target)
    log(f"prepared {target} in {time.perf_counter() - t0:.1f}s: "
        + ", ".join(f"{s} {manifest['splits'][s]['images']} images" for s in SPLITS)
        + f", vocabulary {manifest['vocab']['size']}, human ceiling BLEU-4 "
        f"{manifest['human_ceiling_test'].get('BLEU-4', float('nan')):.3f}")
    for w in manifest["warnings"]:
        log(f"warning: {w}")
    return target


def _human_ceiling(root: Path) -> dict:
    """BLEU/ROUGE-L/CIDEr of each test image's first caption against its others: the reference point
    for every model score on this dataset (METEOR left out: its Java start-up would double the time)."""
    from .metrics import human_ceiling

    test = json.loads((root / "captions.json").read_text())["test"]
    scores = human_ceiling({e["image_id"]: e["captions"] for e in test}, meteor=False)
    return {k: round(v, 4) for k, v in scores.items()}


def _ensure_writable(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"data dir {data_dir} is not writable ({e.strerror}); choose another with "
                        "--data-dir or the CAPBENCH_DATA_DIR environment variable") from None


def _load_source(opts: PrepareOptions, work: Path, log) -> tuple[Source, Path]:
    if opts.dataset == "synthetic":
        n = synthetic.SIZES[opts.size]
        log(f"generating {n} images (seed {opts.seed})")
        image_dir = work / "images"
        source = synthetic.build_source(image_dir, n, seed=opts.seed)
        return source, image_dir

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
    source = _drop_unreadable(source, log)
    image_dir = _common_image_dir(source)
    return source, image_dir


def _common_image_dir(source: Source) -> Path:
    """The folder D with every image at D / image_id (importers guarantee one exists)."""
    first = source.images[0]
    return Path(os.path.abspath(first.path)[: -len(first.image_id)])


def _drop_unreadable(source: Source, log) -> Source:
    """Images that are not images are skipped and counted, not fatal: one bad JPEG in 8,000 should
    not stop a prepare, but nobody should be surprised by a smaller dataset either."""
    bad = []
    for im in source.images:
        try:
            with Image.open(im.path) as f:
                f.verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            bad.append(im)
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


def _add_features(root: Path, manifest: dict, spec, opts: PrepareOptions, log) -> None:
    captions = json.loads((root / "captions.json").read_text())
    ids = [e["image_id"] for s in SPLITS for e in captions[s]]
    image_dir = root / manifest["image_dir"]
    weights = opts.weights if spec.needs_weights else "n/a"
    log(f"extracting '{spec.name}' features ({spec.framework}, weights: {weights}) for {len(ids)} images")
    extract = spec.build(opts.weights)
    (root / "features").mkdir(exist_ok=True)
    shapes = write_features(root / "features" / f"{spec.name}.h5", image_dir, ids, extract,
                            spec.image_size, opts.batch_size, desc=spec.name)
    manifest["features"][spec.name] = {**shapes, "framework": spec.framework, "weights": weights,
                                       "image_size": spec.image_size, "description": spec.description}
    finalize_manifest(root, manifest)
