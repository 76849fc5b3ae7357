"""What `prepare` is asked to build: the dataset kinds and the options that decide a dataset's
content (its identity: a partial build is resumed only by the same options)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from shared_data import stress, synthetic
from shared_data.dataset import DEFAULT_DATASET
from shared_data.errors import UserError
from shared_data.features import DEFAULT_FEATURE_DTYPE, FEATURE_DTYPES
from shared_data.safe_paths import plain_name

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
